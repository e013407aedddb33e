"""FDF-format datasets: crop geometry, the Dataset (flip, maps, resize), `data check` and `data build`."""

import json
import shutil

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from toolkit.cli import main as cli
from toolkit.data.check import check_dataset
from toolkit.crop import (
    crop_and_resize,
    expanded_crop_box,
    face_box_in_crop,
    face_mask,
    from_crop_coords,
    to_crop_coords,
)
from toolkit.assets import ASTRONAUT_KEYPOINTS
from toolkit.data.fdf import FDFDataset, keypoint_maps
from toolkit.keypoints import FLIP_PERMUTATION

ASTRONAUT_FACE = (175.0, 60.0, 290.0, 190.0)


# ---------------------------------------------------------------------------------------------- crop


def test_expanded_crop_box_is_square_and_frames_the_face():
    box = expanded_crop_box(ASTRONAUT_FACE, (512, 512, 3))
    x0, y0, x1, y1 = box
    assert all(isinstance(v, int) for v in box)
    assert x1 - x0 == y1 - y0
    fx0, fy0, fx1, fy1 = ASTRONAUT_FACE
    assert x0 < fx0 and y0 < fy0 and x1 > fx1 and y1 > fy1
    # The face box is about the centre half of the crop (FDF framing).
    assert 0.4 < max(fx1 - fx0, fy1 - fy0) / (x1 - x0) < 0.6
    # Boxes near the border extend beyond the image instead of shifting the face off-centre.
    edge = expanded_crop_box((0, 0, 50, 50), (512, 512, 3))
    assert edge[0] < 0 and edge[1] < 0
    with pytest.raises(ValueError):
        expanded_crop_box((10, 10, 10, 30), (512, 512, 3))
    with pytest.raises(ValueError):
        expanded_crop_box((600, 600, 700, 700), (512, 512, 3))


def test_crop_and_resize_real_photo_keypoints_land_on_the_same_pixels():
    image = skimage.data.astronaut()
    box = expanded_crop_box(ASTRONAUT_FACE, image.shape)
    side = box[2] - box[0]
    # Without resizing, the crop is exactly the image region: pins the coordinate convention.
    crop, valid = crop_and_resize(image, box, side)
    assert valid.all()
    np.testing.assert_array_equal(crop, image[box[1] : box[3], box[0] : box[2]])
    kp = to_crop_coords(ASTRONAUT_KEYPOINTS, box, side)
    np.testing.assert_allclose(from_crop_coords(kp, box, side), ASTRONAUT_KEYPOINTS, atol=1e-9)
    for (x, y), (cx, cy) in zip(ASTRONAUT_KEYPOINTS.astype(int), kp.astype(int)):
        np.testing.assert_array_equal(crop[cy, cx], image[y, x])
    # Resized: the colour under each keypoint stays close to the photo's (smooth regions blur a little).
    small, _ = crop_and_resize(image, box, 64)
    kp64 = to_crop_coords(ASTRONAUT_KEYPOINTS[:1], box, 64)[0].astype(int)
    assert np.abs(small[kp64[1], kp64[0]].astype(int) - image[128, 223].astype(int)).max() < 40


def test_crop_and_resize_pads_outside_and_reports_valid_pixels():
    image = skimage.data.astronaut()
    crop, valid = crop_and_resize(image, (-256, -256, 256, 256), 64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert valid.shape == (64, 64) and valid.dtype == bool
    assert valid[32:, 32:].all() and not valid[:32].any() and not valid[:, :32].any()
    # Edge replication: every padded row above the image repeats the image's top row (area-averaged 8x).
    np.testing.assert_array_equal(crop[:32, 32:], np.broadcast_to(crop[:1, 32:], (32, 32, 3)))
    top_row = image[0, :256].reshape(32, 8, 3).mean(1)
    np.testing.assert_allclose(crop[0, 32:].astype(float), top_row, atol=1.5)
    with pytest.raises(ValueError):
        crop_and_resize(image.astype(np.float32), (0, 0, 10, 10), 8)


def test_face_mask_and_box_in_crop():
    box = expanded_crop_box(ASTRONAUT_FACE, (512, 512))
    fb = face_box_in_crop(ASTRONAUT_FACE, box, 64)
    m = face_mask(fb, 64)
    assert m.dtype == np.float32 and m.shape == (64, 64)
    assert set(np.unique(m)) == {0.0, 1.0}
    assert (m == 0).sum() == (fb[2] - fb[0]) * (fb[3] - fb[1])
    # Rounded outwards: every pixel the float box touches is masked.
    float_box = to_crop_coords(np.array([ASTRONAUT_FACE[:2], ASTRONAUT_FACE[2:]]), box, 64).ravel()
    assert fb[0] <= float_box[0] and fb[1] <= float_box[1] and fb[2] >= float_box[2] and fb[3] >= float_box[3]
    assert m[int(float_box[1]), int(float_box[0])] == 0


# ------------------------------------------------------------------------------------- keypoint maps


def test_keypoint_maps_heatmap_and_onehot_peak_at_points():
    kp = np.array([[0.52, 0.47], [0.1, 0.9], [0.99, 0.01], [1.5, 0.5], [np.nan, 0.2], [0.3, 0.3], [0.7, 0.2]])
    vis = np.array([True, True, True, True, True, False, True])
    for mode in ("heatmap", "onehot"):
        maps = keypoint_maps(kp, vis, 32, mode)
        assert maps.shape == (7, 32, 32) and maps.dtype == torch.float32
        for k in (0, 1, 2, 6):
            iy, ix = divmod(int(maps[k].argmax()), 32)
            assert (ix, iy) == (int(kp[k, 0] * 32), int(kp[k, 1] * 32))
        # Outside [0, 1], NaN or not visible: an all-zero map.
        for k in (3, 4, 5):
            assert float(maps[k].abs().sum()) == 0.0
    onehot = keypoint_maps(kp, vis, 32, "onehot")
    assert onehot.sum((1, 2)).tolist() == [1, 1, 1, 0, 0, 0, 1]
    heat = keypoint_maps(kp, vis, 32, "heatmap", sigma=2.0)
    assert 0.8 < float(heat[0].max()) <= 1.0 and float(heat[0, 0, 0]) < 1e-6
    wider = keypoint_maps(kp, vis, 32, "heatmap", sigma=4.0)
    assert float(wider[0].sum()) > float(heat[0].sum())
    # Batched input works and matches the single one.
    batch = keypoint_maps(torch.tensor(np.stack([kp, kp]), dtype=torch.float32), torch.tensor(np.stack([vis, vis])), 32)
    assert batch.shape == (2, 7, 32, 32)
    torch.testing.assert_close(batch[1], keypoint_maps(kp, vis, 32))
    with pytest.raises(ValueError):
        keypoint_maps(kp, vis, 32, "gaussian")


# --------------------------------------------------------------------------------------- the Dataset


def test_fdf_dataset_items_from_built_dataset(fdf_dir):
    ds = FDFDataset(fdf_dir, "train")
    assert len(ds) >= 1
    item = ds[0]
    S = 64
    assert item["image"].shape == (3, S, S) and item["image"].dtype == torch.float32
    assert -1.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert float(item["image"].std()) > 0.1  # a real photo, not a flat pad
    assert item["mask"].shape == (1, S, S)
    x0, y0, x1, y1 = item["box"].tolist()
    assert 0 <= x0 < x1 <= S and 0 <= y0 < y1 <= S
    assert float(item["mask"][0, y0:y1, x0:x1].sum()) == 0.0
    assert float(item["mask"].sum()) == S * S - (x1 - x0) * (y1 - y0)
    assert item["keypoints"].shape == (7, 2) and item["visible"].dtype == torch.bool
    assert item["keypoint_maps"].shape == (7, S, S)
    for k in range(7):
        m = item["keypoint_maps"][k]
        if item["visible"][k]:
            iy, ix = divmod(int(m.argmax()), S)
            px, py = (item["keypoints"][k] * S).tolist()
            assert abs(ix + 0.5 - px) <= 1 and abs(iy + 0.5 - py) <= 1
        else:
            assert float(m.sum()) == 0.0 and item["keypoints"][k].tolist() == [-1.0, -1.0]
    # Nose and eyes of a detected face are inside its box.
    for k in (0, 1, 2):
        if item["visible"][k]:
            px, py = (item["keypoints"][k] * S).tolist()
            assert x0 <= px <= x1 and y0 <= py <= y1
    loader = torch.utils.data.DataLoader(ds, batch_size=2, shuffle=False)
    batch = next(iter(loader))
    assert batch["image"].shape[1:] == (3, S, S)


def test_built_landmarks_match_detections_and_mark_invisible_points(fdf_dir):
    manifest = json.loads((fdf_dir / "toolkit.json").read_text())
    assert manifest["stage"] == "dataset" and manifest["num_faces"] >= 8  # astronaut, obamas, biden, messi, ...
    n_invisible = 0
    for split in ("train", "val"):
        faces = json.loads((fdf_dir / split / "faces.json").read_text())
        lm = np.load(fdf_dir / split / "landmarks.npy")
        boxes = np.load(fdf_dir / split / "bounding_box.npy")
        assert lm.dtype == np.float32 and lm.shape == (len(faces), 7, 2)
        assert np.issubdtype(boxes.dtype, np.integer) and boxes.shape == (len(faces), 4)
        for face, pts, box in zip(faces, lm, boxes):
            inside = np.all((pts >= 0) & (pts <= 1), axis=-1)
            # A point is stored as visible only when the detector saw it (and it lies in the crop) ...
            assert not np.any(inside & ~np.array(face["detector_visible"]))
            n_invisible += int((~inside).sum())
            np.testing.assert_array_equal(pts[~inside], -1.0)
            # ... and stored points map back onto the photo inside the crop box.
            x0, y0, x1, y1 = face["crop_box"]
            back = from_crop_coords(pts[inside] * 64, face["crop_box"], 64)
            assert np.all((back >= [x0, y0]) & (back <= [x1, y1]))
            fb = face_box_in_crop(face["face_box"], face["crop_box"], 64)
            assert np.abs(box - np.array(fb)).max() <= 1  # faces.json rounds the face box to 0.01 px
    assert n_invisible > 0  # the partial-face photos and the face-only detections have hidden points


def test_fdf_dataset_flip_mirrors_and_swaps_left_right(fdf_dir):
    ds = FDFDataset(fdf_dir, "train")
    a, b = ds.get(0, flipped=False), ds.get(0, flipped=True)
    torch.testing.assert_close(b["image"], a["image"].flip(-1))
    torch.testing.assert_close(b["mask"], a["mask"].flip(-1))
    torch.testing.assert_close(b["keypoint_maps"], a["keypoint_maps"][list(FLIP_PERMUTATION)].flip(-1), atol=1e-5,
                               rtol=0)
    for k in range(7):
        src = FLIP_PERMUTATION[k]
        assert bool(b["visible"][k]) == bool(a["visible"][src])
        if a["visible"][src]:
            assert abs(float(b["keypoints"][k, 0]) - (1 - float(a["keypoints"][src, 0]))) < 1e-6
            assert abs(float(b["keypoints"][k, 1]) - float(a["keypoints"][src, 1])) < 1e-6
    # On a frontal face the person's left eye is on the image's right. The mirrored face is again a frontal
    # face, so thanks to the left/right swap its left eye is again on the image's right (without the swap
    # the labels would say the opposite).
    if a["visible"][1] and a["visible"][2]:
        assert a["keypoints"][1, 0] > a["keypoints"][2, 0]
        assert b["keypoints"][1, 0] > b["keypoints"][2, 0]


def test_fdf_dataset_random_flip_is_seeded(fdf_dir):
    n = len(FDFDataset(fdf_dir, "train"))
    draws = lambda **kw: [bool(FDFDataset(fdf_dir, "train", flip=True, **kw)[i % n]["flipped"]) for i in range(40)]
    assert draws(seed=3) == draws(seed=3)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert draws(generator=g1) == draws(generator=g2)
    ds = FDFDataset(fdf_dir, "train", flip=True, seed=1)
    seen = set()
    for epoch in range(16):
        ds.set_epoch(epoch)
        seen.add(bool(ds[0]["flipped"]))
    assert seen == {True, False}
    assert not any(bool(FDFDataset(fdf_dir, "train")[0]["flipped"]) for _ in range(3))


def test_fdf_dataset_resize_scales_box_and_maps(fdf_dir):
    full = FDFDataset(fdf_dir, "train").get(0)
    small = FDFDataset(fdf_dir, "train", size=32, keypoint_maps="onehot").get(0)
    assert small["image"].shape == (3, 32, 32) and small["keypoint_maps"].shape == (7, 32, 32)
    torch.testing.assert_close(small["keypoints"], full["keypoints"])
    fb, sb = full["box"].tolist(), small["box"].tolist()
    assert sb[0] <= fb[0] / 2 and sb[1] <= fb[1] / 2 and sb[2] >= fb[2] / 2 and sb[3] >= fb[3] / 2
    assert all(abs(s - f / 2) <= 1 for s, f in zip(sb, fb))
    assert small["keypoint_maps"].sum((1, 2)).tolist() == small["visible"].float().tolist()
    # Area-averaged downscale ~ 2x2 mean of the full image.
    pooled = torch.nn.functional.avg_pool2d(full["image"][None], 2)[0]
    assert float((pooled - small["image"]).abs().mean()) < 0.03


def _real_fdf256_layout(src, dst, n=12):
    """Copy faces of `src` into the authors' exact FDF256 layout: (N, 14) landmarks, unpadded names."""
    ds = FDFDataset(src, "train")
    lm, boxes = [], []
    (dst / "train" / "images").mkdir(parents=True)
    for i in range(n):
        j = i % len(ds)
        shutil.copy(ds.paths[j], dst / "train" / "images" / f"{i}.png")
        lm.append(ds.landmarks[j])
        boxes.append(ds.boxes[j])
    np.save(dst / "train" / "landmarks.npy", np.asarray(lm, np.float32).reshape(n, 14))
    np.save(dst / "train" / "bounding_box.npy", np.asarray(boxes, np.int64))
    shutil.copytree(dst / "train", dst / "val")
    return np.asarray(lm, np.float32)


def test_fdf_dataset_reads_authors_layout_in_numeric_order(fdf_dir, tmp_path):
    lm = _real_fdf256_layout(fdf_dir, tmp_path, n=12)
    # Mark image 10's row distinctly: numeric order pairs 10.png with row 10 (lexicographic would not).
    lm[10] = lm[10] * 0.5 + 0.25
    np.save(tmp_path / "train" / "landmarks.npy", lm.reshape(12, 14))
    ds = FDFDataset(tmp_path, "train")
    assert [p.name for p in ds.paths[9:12]] == ["9.png", "10.png", "11.png"]
    item = ds.get(10)
    vis = item["visible"].numpy()
    np.testing.assert_allclose(item["keypoints"].numpy()[vis], lm[10][vis], atol=1e-6)
    assert check_dataset(tmp_path)["ok"]


# -------------------------------------------------------------------------------------------- check


def _copy(fdf_dir, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(fdf_dir, dst)
    return dst


def test_check_accepts_built_dataset(fdf_dir, capsys):
    rep = check_dataset(fdf_dir)
    assert rep["ok"], rep["problems"]
    n_train = len(list((fdf_dir / "train" / "images").glob("*.png")))
    assert rep["splits"]["train"]["count"] == n_train and rep["splits"]["train"]["image_size"] == 64
    assert cli(["data", "check", str(fdf_dir)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_catches_wrong_layout(fdf_dir, tmp_path, capsys):
    flat = tmp_path / "flat"
    shutil.copytree(fdf_dir / "train", flat)  # a split dir given as the root
    rep = check_dataset(flat)
    assert not rep["ok"] and "train/" in rep["problems"][0]
    assert cli(["data", "check", str(flat)]) == 1
    assert check_dataset(tmp_path / "missing")["ok"] is False
    ds = _copy(fdf_dir, tmp_path)
    (ds / "train" / "images").rename(ds / "train" / "imgs")
    rep = check_dataset(ds)
    assert any("train/images/: missing" in p for p in rep["problems"])
    with pytest.raises(FileNotFoundError):
        FDFDataset(ds, "train")
    # A split folder itself is accepted for that split only.
    assert len(FDFDataset(fdf_dir / "train", "train")) == len(FDFDataset(fdf_dir, "train"))
    with pytest.raises(FileNotFoundError, match="no 'val' split"):
        FDFDataset(fdf_dir / "train", "val")


def test_check_catches_mismatched_counts_and_bad_arrays(fdf_dir, tmp_path):
    ds = _copy(fdf_dir, tmp_path)
    lm = np.load(ds / "train" / "landmarks.npy")
    np.save(ds / "train" / "landmarks.npy", np.concatenate([lm, lm[:1]]))
    rep = check_dataset(ds)
    assert any("counts differ" in p for p in rep["problems"]), rep["problems"]
    with pytest.raises(ValueError, match="counts differ"):
        FDFDataset(ds, "train")

    lm = lm.copy()
    lm[0, 0] = np.nan
    lm[0, 1] = [120.0, 80.0]  # pixel coordinates stored by mistake
    np.save(ds / "train" / "landmarks.npy", lm)
    boxes = np.load(ds / "train" / "bounding_box.npy")
    boxes[0] = [10, 10, 80, 40]  # x1 beyond the 64 px image
    np.save(ds / "train" / "bounding_box.npy", boxes)
    rep = check_dataset(ds)
    text = "\n".join(rep["problems"])
    assert "NaN" in text and "pixel coordinates" in text and "outside the 64x64 image" in text
    np.save(ds / "train" / "bounding_box.npy", boxes.astype(np.float32) + 0.5)
    assert any("expected integer" in p for p in check_dataset(ds)["problems"])
    with pytest.raises(ValueError, match="integer"):
        FDFDataset(ds, "train")


def test_check_catches_corrupt_and_odd_images(fdf_dir, tmp_path, capsys):
    ds = _copy(fdf_dir, tmp_path)
    first = ds / "train" / "images" / "0.png"
    first.write_bytes(first.read_bytes()[:60])  # truncated PNG
    rep = check_dataset(ds)
    assert not rep["ok"] and any("0.png: unreadable" in p for p in rep["problems"])
    with pytest.raises(ValueError, match="0.png: not a readable PNG"):
        FDFDataset(ds, "train").get(0)
    assert cli(["data", "check", str(ds), "--json", str(tmp_path / "rep.json")]) == 1
    out = capsys.readouterr().out
    assert "problem" in out and "0.png" in out
    assert json.loads((tmp_path / "rep.json").read_text())["num_problems"] >= 1

    img = np.asarray(Image.open(ds / "val" / "images" / "0.png"))
    Image.fromarray(img[:, :48]).save(ds / "val" / "images" / "0.png")  # not square
    Image.fromarray(img).save(ds / "train" / "images" / "0.png")
    (ds / "train" / "images" / "x.png").write_bytes(b"")
    rep = check_dataset(ds, max_problems=1)
    assert rep["num_problems"] >= 2 and len(rep["problems"]) == 1
    text = "\n".join(check_dataset(ds)["problems"])
    assert "not square" in text and "x.png: name is not an integer" in text


def test_check_warnings_and_sampling(fdf_dir, tmp_path):
    ds = _copy(fdf_dir, tmp_path)
    shutil.rmtree(ds / "val")
    n = len(list((ds / "train" / "images").glob("*.png")))
    last = ds / "train" / "images" / f"{n - 1}.png"
    last.rename(ds / "train" / "images" / f"{n + 5}.png")  # a gap in the numbering
    rep = check_dataset(ds, sample=3)
    assert rep["ok"], rep["problems"]
    assert rep["splits"]["train"]["images_checked"] == 3
    text = "\n".join(rep["warnings"])
    assert "no val/" in text and "numbering" in text


# -------------------------------------------------------------------------------------------- build


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    """Real photos: two with faces, one without people (coffee), one corrupt and one empty file."""
    from toolkit.assets import sample_photo

    d = tmp_path_factory.mktemp("photos")
    shutil.copy(sample_photo("astronaut"), d / "astronaut.png")
    shutil.copy(sample_photo("obama"), d / "obama.jpg")
    Image.fromarray(skimage.data.coffee()).save(d / "coffee.png")
    (d / "sub").mkdir()
    (d / "sub" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"not a jpeg" * 20)
    (d / "empty.png").write_bytes(b"")
    return d


def test_build_skips_bad_files_and_photos_without_faces(photo_dir, tmp_path, capsys):
    out = tmp_path / "ds"
    rc = cli(["data", "build", "--images", str(photo_dir), "--out", str(out), "--size", "64",
              "--val-fraction", "0.5", "--quiet"])
    assert rc == 1  # unreadable files are errors, but the rest is built
    captured = capsys.readouterr()
    assert "corrupt.jpg" in captured.err and "empty.png" in captured.err
    assert "coffee.png" in captured.out
    manifest = json.loads((out / "toolkit.json").read_text())
    assert manifest["stage"] == "dataset" and manifest["image_size"] == 64
    assert manifest["skipped"]["no_face"] == ["coffee.png"]
    assert sorted(b["file"] for b in manifest["skipped"]["unreadable"]) == ["empty.png", "sub/corrupt.jpg"]
    assert manifest["num_photos"] == 2 and manifest["splits"]["val"] >= 1 and manifest["splits"]["train"] >= 1
    assert check_dataset(out)["ok"]
    assert (out / "preview.png").exists()
    faces = json.loads((out / "train" / "faces.json").read_text()) + json.loads((out / "val" / "faces.json").read_text())
    assert {f["source"] for f in faces} == {"astronaut.png", "obama.jpg"}
    # The astronaut crop's keypoints match the reference measured on the photo.
    astro = [f for f in faces if f["source"] == "astronaut.png"][0]
    split = "train" if astro in json.loads((out / "train" / "faces.json").read_text()) else "val"
    idx = json.loads((out / split / "faces.json").read_text()).index(astro)
    lm = np.load(out / split / "landmarks.npy")[idx]
    back = from_crop_coords(lm[:5] * 64, astro["crop_box"], 64)
    assert np.abs(back - ASTRONAUT_KEYPOINTS[:5]).max() < 12
    for split in ("train", "val"):
        FDFDataset(out, split, flip=True)[0]


def test_build_is_deterministic_and_never_clobbers(photo_dir, tmp_path):
    from toolkit.data.build import build_dataset

    a, b = tmp_path / "a", tmp_path / "b"
    build_dataset(photo_dir, a, size=32, val_fraction=0.5, seed=7, progress=False)
    build_dataset(photo_dir, b, size=32, val_fraction=0.5, seed=7, progress=False)
    for split in ("train", "val"):
        for name in ("landmarks.npy", "bounding_box.npy"):
            np.testing.assert_array_equal(np.load(a / split / name), np.load(b / split / name))
    # Rebuilding over a previous dataset replaces it (here with another size) ...
    build_dataset(photo_dir, a, size=48, val_fraction=0.5, seed=7, progress=False)
    assert check_dataset(a)["ok"] and check_dataset(a)["splits"]["train"]["image_size"] == 48
    # ... but a non-empty folder that is not a dataset is refused and left untouched.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing"):
        build_dataset(photo_dir, other, size=32, progress=False)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError, match="inside --images"):
        build_dataset(photo_dir, photo_dir / "out", size=32, progress=False)
    assert not (photo_dir / "out").exists()
    # No faces at all: a clear error and nothing written.
    empty = tmp_path / "nofaces"
    empty.mkdir()
    Image.fromarray(skimage.data.coffee()).save(empty / "coffee.png")
    # A detector failure on one photo is reported; the other photos are still built.
    from toolkit.detect import detect

    def flaky(image):
        if image.shape[:2] == (512, 512):
            raise RuntimeError("simulated detector crash")
        return detect(image)

    m = build_dataset(photo_dir, tmp_path / "flaky", size=32, detector=flaky, progress=False)
    assert any("simulated detector crash" in b["error"] for b in m["skipped"]["unreadable"])
    assert m["num_photos"] == 1 and check_dataset(tmp_path / "flaky")["ok"]
    with pytest.raises(RuntimeError, match="no usable faces"):
        build_dataset(empty, tmp_path / "none", size=32, progress=False)
    assert not (tmp_path / "none").exists()
    # A photo that is already a tight face crop: its FDF crop would be mostly padding.
    tight = tmp_path / "tight"
    tight.mkdir()
    Image.fromarray(skimage.data.astronaut()[40:220, 150:300]).save(tight / "astronaut_face.png")
    with pytest.raises(RuntimeError, match=r"under 0.75 inside the photo: 1"):
        build_dataset(tight, tmp_path / "none", size=32, min_inside=0.75, progress=False)
    m = build_dataset(tight, tmp_path / "tight_ds", size=32, min_inside=0.3, progress=False)
    assert m["num_faces"] == 1 and m["skipped"]["mostly_outside"] == []
    with pytest.raises(RuntimeError, match=r"scored under 1: [1-9]"):
        build_dataset(photo_dir, tmp_path / "none", size=32, min_score=1.0, progress=False)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left
    assert not (tmp_path / "none").exists()


def test_build_on_backgrounds_fills_only_the_padding(tmp_path):
    """Tight face crops (LFW-like) on real scenes: the face box and the photo's pixels stay, the padding
    becomes a scene, each face gets `variants` crops in one split, and a background with a person is refused."""
    from toolkit.assets import sample_photo
    from toolkit.data.build import build_dataset

    tight = tmp_path / "tight"
    tight.mkdir()
    Image.fromarray(skimage.data.astronaut()[40:220, 150:300]).save(tight / "astronaut_face.png")
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    Image.fromarray(skimage.data.brick()).save(scenes / "brick.png")
    Image.fromarray(skimage.data.coffee()).save(scenes / "coffee.png")
    shutil.copy(sample_photo("obama"), scenes / "obama.jpg")  # a person: must not become context
    with pytest.raises(ValueError, match="--variants"):
        build_dataset(tight, tmp_path / "x", size=32, variants=3, progress=False)
    plain = build_dataset(tight, tmp_path / "plain", size=64, min_inside=0.3, val_fraction=0, progress=False)
    m = build_dataset(tight, tmp_path / "bg", size=64, min_inside=0.3, val_fraction=0, progress=False,
                      backgrounds=scenes, variants=3)
    assert plain["crop"]["padding"] == "edge-replicate" and m["crop"]["padding"] == "backgrounds"
    assert m["num_faces"] == 1 and m["num_crops"] == 3 and m["splits"] == {"train": 3, "val": 0}
    assert m["backgrounds"]["used"] == ["brick.png", "coffee.png"]
    assert m["backgrounds"]["refused"] == [{"file": "obama.jpg", "error": "a person was detected in it"}]
    assert check_dataset(tmp_path / "bg")["ok"]
    faces = json.loads((tmp_path / "bg" / "train" / "faces.json").read_text())
    assert [f["variant"] for f in faces] == [0, 1, 2] and {f["background"] for f in faces} <= {"brick.png", "coffee.png"}
    base = np.asarray(Image.open(tmp_path / "plain" / "train" / "images" / "0.png"), dtype=np.int16)
    x0, y0, x1, y1 = np.load(tmp_path / "bg" / "train" / "bounding_box.npy")[0]
    _, valid = crop_and_resize(np.asarray(Image.open(tight / "astronaut_face.png").convert("RGB")),
                               faces[0]["crop_box"], 64)
    crops = [np.asarray(Image.open(tmp_path / "bg" / "train" / "images" / f"{i}.png"), dtype=np.int16)
             for i in range(3)]
    for crop in crops:
        np.testing.assert_array_equal(crop[y0:y1, x0:x1], base[y0:y1, x0:x1])  # the face is never touched
        assert np.abs(crop[~valid] - base[~valid]).mean() > 10  # the streaks are gone
    assert np.abs(crops[0] - crops[1])[~valid].mean() > 5  # another background per variant
    # Rebuilt with the same seed: the same backgrounds in the same places.
    build_dataset(tight, tmp_path / "bg2", size=64, min_inside=0.3, val_fraction=0, progress=False,
                  backgrounds=scenes, variants=3)
    for i in range(3):
        assert (Image.open(tmp_path / "bg2" / "train" / "images" / f"{i}.png").tobytes()
                == Image.open(tmp_path / "bg" / "train" / "images" / f"{i}.png").tobytes())
