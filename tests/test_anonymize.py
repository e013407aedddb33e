"""`toolkit anonymize`: face replacement, baselines, fail-closed policy, folders, video, COCO, input safety.

All images are real photos (astronaut, obama, messi from the asset cache) with the real detector.
"""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from toolkit.anonymize import FaceNotAnonymizedError, Options, anonymize_batch, anonymize_image
from toolkit.anonymize.baselines import box_pixels
from toolkit.anonymize.runner import anonymize_files, exit_code
from toolkit.cli import main
from toolkit.crop import expanded_crop_box
from toolkit.images import load_rgb


class NaNInpainter:
    """A broken model: returns NaN everywhere (what a diverged checkpoint does)."""

    resolution = 32

    def inpaint(self, images, masks, keypoints, visible, *, seed=0, **sampling):
        return torch.full_like(images, float("nan"))


class RaisingInpainter:
    resolution = 32

    def inpaint(self, images, masks, keypoints, visible, *, seed=0, **sampling):
        raise RuntimeError("CUDA out of memory (simulated)")


class FlatInpainter:
    """Fills each face box with one flat colour per face (cycling), keeps known pixels; records batch sizes.

    Not a model: it makes paste-back geometry checkable (every pixel of a face box must end up flat).
    """

    resolution = 32
    colours = torch.tensor([[1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [-1.0, -1.0, 1.0]])

    def __init__(self):
        self.calls = []

    def inpaint(self, images, masks, keypoints, visible, *, seed=0, **sampling):
        self.calls.append({"batch": images.shape[0], "seed": seed, "sampling": sampling,
                           "keypoints": keypoints.clone(), "visible": visible.clone()})
        fill = self.colours[torch.arange(images.shape[0]) % 3][:, :, None, None].expand_as(images)
        return images * masks + fill * (1 - masks)


def outside_box_mask(shape, box):
    x0, y0, x1, y1 = (int(v) for v in box)
    m = np.ones(shape[:2], dtype=bool)
    m[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = False
    return m


# ----------------------------------------------------------------------------------------------------
# the real model


@pytest.fixture(scope="module")
def tiny_inpainter(tiny_teacher_run):
    from toolkit.artifacts import load_inpainter

    return load_inpainter(tiny_teacher_run)


def test_ddpm_on_astronaut_changes_face_and_nothing_outside_expanded_box(astronaut_rgb, astronaut_persons,
                                                                          tiny_inpainter):
    before = astronaut_rgb.copy()
    out, faces = anonymize_image(astronaut_rgb, method="ddpm", inpainter=tiny_inpainter, seed=3,
                                 persons=astronaut_persons, steps=4)
    assert np.array_equal(astronaut_rgb, before), "the input array must not be modified"
    (face,) = faces
    assert face["status"] == "anonymized" and face["method"] == "ddpm"
    crop_box = expanded_crop_box(astronaut_persons[0].face_box, astronaut_rgb.shape)
    assert face["crop_box"] == list(crop_box)
    outside = outside_box_mask(out.shape, crop_box)
    assert outside.sum() > 0.5 * outside.size
    # Byte-exact: not one pixel outside the expanded box differs.
    assert np.array_equal(out[outside], astronaut_rgb[outside])
    fx0, fy0, fx1, fy1 = box_pixels(astronaut_persons[0].face_box, out.shape)
    diff = np.abs(out[fy0:fy1, fx0:fx1].astype(int) - astronaut_rgb[fy0:fy1, fx0:fx1].astype(int))
    assert diff.mean() > 10, f"face region barely changed (mean abs diff {diff.mean():.1f})"
    assert (diff.max(axis=2) > 0).mean() > 0.95
    assert face["time_s"] > 0 and len(face["keypoints"]) == 7
    # Deterministic with the seed.
    again, _ = anonymize_image(astronaut_rgb, method="ddpm", inpainter=tiny_inpainter, seed=3,
                               persons=astronaut_persons, steps=4)
    assert np.array_equal(out, again)
    # ... and independent of batching: the same face among others in one batch (video frames) is the same.
    results = anonymize_batch([astronaut_rgb] * 3, [astronaut_persons] * 3,
                              Options(method="ddpm", seed=3, batch_size=3, sampling={"steps": 4}), tiny_inpainter)
    for r in results:  # equal up to float rounding of batched convolutions (a pixel may differ by 1)
        diff = np.abs(r.image.astype(int) - out)
        assert diff.max() <= 2 and (diff > 0).mean() < 1e-3
    other, _ = anonymize_image(astronaut_rgb, method="ddpm", inpainter=tiny_inpainter, seed=4,
                               persons=astronaut_persons, steps=4)
    assert not np.array_equal(other, out)


# ----------------------------------------------------------------------------------------------------
# geometry with a flat-fill double (fast, exact)


def test_paste_overlapping_faces_leaves_no_original_face_pixel(astronaut_rgb, astronaut_persons):
    """Two overlapping face boxes: each box ends up fully generated; nothing outside the crop boxes moves."""
    p = astronaut_persons[0]
    x0, y0, x1, y1 = p.face_box
    w = x1 - x0
    second = {"face_box": [x0 + 0.4 * w, y0 + 10, x1 + 0.4 * w, y1 + 10], "keypoints": p.keypoints,
              "visible": p.visible}
    inp = FlatInpainter()
    out, faces = anonymize_image(astronaut_rgb, method="ddpm", inpainter=inp, persons=[p, second], feather=0.3)
    assert [f["status"] for f in faces] == ["anonymized", "anonymized"]
    assert [c["batch"] for c in inp.calls] == [2], "faces of one image must share one generation batch"
    boxes = [box_pixels(f["face_box"], out.shape) for f in faces]
    owner = np.full(out.shape[:2], -1)
    for k, (bx0, by0, bx1, by1) in enumerate(boxes):
        owner[by0:by1, bx0:bx1] = k  # the later face wins where boxes overlap
    for k, colour in enumerate(([255, 0, 0], [0, 255, 0])):
        bx0, by0, bx1, by1 = boxes[k]
        # Away from the box edges (where resampling mixes in a pixel of context) each fill is exact.
        inner = np.zeros(out.shape[:2], bool)
        inner[by0 + 8 : by1 - 8, bx0 + 8 : bx1 - 8] = True
        inner &= owner == k
        # Shrink by the same margin from the other box too.
        other = boxes[1 - k]
        grown = np.zeros(out.shape[:2], bool)
        grown[max(0, other[1] - 8) : other[3] + 8, max(0, other[0] - 8) : other[2] + 8] = True
        inner &= ~grown if k == 0 else True
        assert inner.sum() > 500
        assert (np.abs(out[inner].astype(int) - colour).max(axis=1) <= 2).all()
        in_box = owner >= 0
    assert not (out[in_box] == astronaut_rgb[in_box]).all(axis=1).any(), "an original face pixel survived"
    union = np.ones(out.shape[:2], bool)
    for f in faces:
        union &= outside_box_mask(out.shape, f["crop_box"])
    assert np.array_equal(out[union], astronaut_rgb[union])
    # Keypoints reach the model normalized to the crop, invisible ones zeroed.
    kp = inp.calls[0]["keypoints"][0].numpy()
    vis = inp.calls[0]["visible"][0].numpy()
    assert vis.any() and ((kp[vis] > 0) & (kp[vis] < 1)).all()


def test_batches_span_frames_and_respect_batch_size(astronaut_rgb, astronaut_persons):
    inp = FlatInpainter()
    frames = [astronaut_rgb, astronaut_rgb[:, ::-1].copy(), astronaut_rgb]
    p = astronaut_persons[0]
    mirrored = {"face_box": [512 - p.face_box[2], p.face_box[1], 512 - p.face_box[0], p.face_box[3]]}
    opts = Options(method="ddpm", batch_size=2, sampling={"steps": 7})
    results = anonymize_batch(frames, [[p], [mirrored], [p]], opts, inp)
    assert [c["batch"] for c in inp.calls] == [2, 1]
    assert all(c["sampling"] == {"steps": 7} for c in inp.calls)
    assert [r.status for r in results] == ["ok", "ok", "ok"]


def test_folder_images_share_generation_batches(tmp_path, astronaut_rgb):
    src = tmp_path / "in"
    src.mkdir()
    # The real photo, mirrored, and cropped.
    for k, img in enumerate((astronaut_rgb, astronaut_rgb[:, ::-1], astronaut_rgb[24:, 40:])):
        Image.fromarray(np.ascontiguousarray(img)).save(src / f"p{k}.png")
    inp = FlatInpainter()
    report = anonymize_files([src], tmp_path / "out", Options(method="ddpm", batch_size=16), inpainter=inp,
                             progress=False)
    per_image = [len(e["faces"]) for e in report["items"]]
    assert exit_code(report) == 0 and min(per_image) >= 1
    assert [c["batch"] for c in inp.calls] == [sum(per_image)]  # one batch for all faces of all images
    inp2 = FlatInpainter()
    anonymize_files([src], tmp_path / "out2", Options(method="ddpm", batch_size=2), inpainter=inp2, progress=False)
    # batch size 2: images go in groups of two, and each group's faces in batches of at most two.
    first, second = per_image[0] + per_image[1], per_image[2]
    expected = [2] * (first // 2) + [first % 2] * (first % 2) + [2] * (second // 2) + [second % 2] * (second % 2)
    assert [c["batch"] for c in inp2.calls] == expected
    assert all((tmp_path / d / f"p{k}.png").exists() for d in ("out", "out2") for k in range(3))


# ----------------------------------------------------------------------------------------------------
# baselines


@pytest.mark.parametrize("method", ["blur", "pixelate", "mask"])
def test_baseline_changes_face_box_only(method, astronaut_rgb, astronaut_persons):
    out, faces = anonymize_image(astronaut_rgb, method=method, persons=astronaut_persons, mask_color=(10, 20, 30))
    assert faces[0]["status"] == "anonymized" and faces[0]["method"] == method
    bx0, by0, bx1, by1 = box_pixels(astronaut_persons[0].face_box, out.shape)
    outside = outside_box_mask(out.shape, (bx0, by0, bx1, by1))
    assert np.array_equal(out[outside], astronaut_rgb[outside])
    face_in, face_out = astronaut_rgb[by0:by1, bx0:bx1].astype(float), out[by0:by1, bx0:bx1].astype(float)
    assert np.abs(face_out - face_in).mean() > 5
    if method == "mask":
        assert (out[by0:by1, bx0:bx1] == [10, 20, 30]).all()
    else:
        # Detail (local gradient energy) is what identifies a face; both baselines must remove most of it.
        def detail(a):
            return np.abs(np.diff(a, axis=0)).mean() + np.abs(np.diff(a, axis=1)).mean()
        assert detail(face_out) < 0.6 * detail(face_in)


def test_head_seen_from_behind_is_blurred_not_given_a_face(assets, astronaut_rgb, astronaut_persons):
    """A generator of faces would paint one on the back of a head and turn the person round; such heads
    (left/right pairs in back-view order) are blurred instead, unless --facing-away generate."""
    from toolkit import assets as asset_cache
    from toolkit.anonymize.baselines import blur_box
    from toolkit.detect import detect
    from toolkit.keypoints import faces_away

    front = astronaut_persons[0]
    assert not faces_away(front.keypoints, front.visible)
    assert not faces_away(front.keypoints[[0, 2, 1, 4, 3, 6, 5]] * [-1, 1], front.visible)  # a mirrored front
    assert faces_away(front.keypoints * [-1, 1], front.visible)  # the same points, seen from behind
    side = np.array(front.keypoints)
    side[[3, 4], 0] = side[[4, 3], 0]  # the ears disagree with the eyes and shoulders: not a back view
    assert not faces_away(side * [-1, 1], front.visible)

    image = load_rgb(asset_cache.sample_photo("vtest_400"))  # pedestrians, one walking away from the camera
    persons = detect(image)
    away = [faces_away(p.keypoints, p.visible) for p in persons]
    assert any(away) and not all(away)
    out, faces = anonymize_image(image, method="ddpm", inpainter=FlatInpainter(), persons=persons, min_generate=0)
    for person, face, behind in zip(persons, faces, away):
        assert face["status"] == "anonymized" and face["method"] == ("blur" if behind else "ddpm")
        x0, y0, x1, y1 = box_pixels(person.face_box, image.shape)
        if behind:
            assert "faces away" in face["reason"]
            assert np.array_equal(out[y0:y1, x0:x1], blur_box(image.copy(), person.face_box)[y0:y1, x0:x1])
    _, faces = anonymize_image(image, method="ddpm", inpainter=FlatInpainter(), persons=persons,
                               facing_away="generate", min_generate=0)
    assert all(f["method"] == "ddpm" for f in faces)
    with pytest.raises(ValueError, match="facing-away"):
        Options(facing_away="mask")


def test_face_under_min_generate_is_pixelated_not_generated(assets):
    """A face too small to hold identity is pixelated (8x8 cells) instead of generated: the mosaic keeps the
    hair and outline a pose model reads at that size. The threshold is the box's longer side, strict."""
    from toolkit import assets as asset_cache
    from toolkit.anonymize.baselines import pixelate_box
    from toolkit.anonymize.pipeline import DEFAULT_MIN_GENERATE
    from toolkit.detect import detect

    image = load_rgb(asset_cache.sample_photo("vtest_200"))  # pedestrians with heads of 4 to 14 px
    persons = detect(image)
    sides = [max(p.face_box[2] - p.face_box[0], p.face_box[3] - p.face_box[1]) for p in persons]
    assert any(s < DEFAULT_MIN_GENERATE for s in sides)
    out, faces = anonymize_image(image, method="ddpm", inpainter=FlatInpainter(), persons=persons,
                                 facing_away="generate")
    for person, face, side in zip(persons, faces, sides):
        assert face["status"] == "anonymized"
        x0, y0, x1, y1 = box_pixels(person.face_box, image.shape)
        if side < DEFAULT_MIN_GENERATE:
            assert face["method"] == "pixelate" and "--min-generate" in face["reason"]
            assert np.array_equal(out[y0:y1, x0:x1], pixelate_box(image.copy(), person.face_box)[y0:y1, x0:x1])
        else:
            assert face["method"] == "ddpm"
    largest = max(sides)
    for threshold, method in ((largest, "ddpm"), (largest + 0.01, "pixelate")):
        _, faces = anonymize_image(image, method="ddpm", inpainter=FlatInpainter(), persons=persons,
                                   facing_away="generate", min_generate=threshold)
        assert faces[sides.index(largest)]["method"] == method
    _, faces = anonymize_image(image, method="ddpm", inpainter=FlatInpainter(), persons=persons,
                               facing_away="generate", min_generate=0)
    assert all(f["method"] == "ddpm" for f in faces)
    with pytest.raises(ValueError, match="min-generate"):
        Options(min_generate=-1)


def test_blur_sigma_is_configurable(astronaut_rgb, astronaut_persons):
    weak, _ = anonymize_image(astronaut_rgb, method="blur", persons=astronaut_persons, blur_sigma=1.0)
    strong, _ = anonymize_image(astronaut_rgb, method="blur", persons=astronaut_persons, blur_sigma=12.0)
    bx0, by0, bx1, by1 = box_pixels(astronaut_persons[0].face_box, weak.shape)
    sl = (slice(by0, by1), slice(bx0, bx1))
    change = {name: np.abs(img[sl].astype(int) - astronaut_rgb[sl]).mean() for name, img in (("weak", weak),
                                                                                            ("strong", strong))}
    assert change["strong"] > 2 * change["weak"]


# ----------------------------------------------------------------------------------------------------
# fail closed


def test_nan_model_refuses_image_and_reports_why(tmp_path, astronaut_rgb, astronaut_persons):
    with pytest.raises(FaceNotAnonymizedError) as info:
        anonymize_image(astronaut_rgb, method="ddpm", inpainter=NaNInpainter(), persons=astronaut_persons)
    assert "non-finite" in str(info.value) and info.value.faces[0]["status"] == "failed"

    src = tmp_path / "in" / "astro.png"
    src.parent.mkdir()
    Image.fromarray(astronaut_rgb).save(src)
    report = anonymize_files([src], tmp_path / "out", Options(method="ddpm"), inpainter=NaNInpainter(),
                             progress=False)
    assert exit_code(report) == 1
    assert not (tmp_path / "out" / "astro.png").exists()
    (entry,) = report["items"]
    assert entry["status"] == "refused" and entry["output"] is None and "non-finite" in entry["reason"]
    on_disk = json.loads((tmp_path / "out" / "anonymize_report.json").read_text())
    assert on_disk["summary"]["refused"] == 1 and on_disk["items"][0]["faces"][0]["status"] == "failed"


def test_raising_model_and_degenerate_box_fail_closed(astronaut_rgb, astronaut_persons):
    opts = Options(method="ddpm")
    (r,) = anonymize_batch([astronaut_rgb], [astronaut_persons], opts, RaisingInpainter())
    assert r.image is None and "out of memory" in r.reason
    for bad in ([100, 100, 100, 150], [np.nan, 1, 50, 50], [600, 600, 700, 700]):
        (r,) = anonymize_batch([astronaut_rgb], [[{"face_box": bad}]], opts, FlatInpainter())
        assert r.image is None and r.status == "refused" and "crop impossible" in r.reason
        (r,) = anonymize_batch([astronaut_rgb], [[{"face_box": bad}]], Options(method="blur"))
        assert r.image is None and "degenerate" in r.reason


def test_on_miss_mask_writes_face_masked(tmp_path, astronaut_rgb, astronaut_persons, monkeypatch):
    src = tmp_path / "astro.png"
    Image.fromarray(astronaut_rgb).save(src)
    import toolkit.anonymize.runner as runner

    monkeypatch.setattr(runner, "load_model", lambda run_dir, device: NaNInpainter())
    out = tmp_path / "out"
    rc = main(["anonymize", str(src), "--out", str(out), "--model", "broken-run", "--on-miss", "mask",
               "--mask-color", "0,128,255", "--quiet"])
    assert rc == 0
    img = load_rgb(out / "astro.png")
    bx0, by0, bx1, by1 = box_pixels(astronaut_persons[0].face_box, img.shape)
    assert (img[by0:by1, bx0:bx1] == [0, 128, 255]).all()
    outside = outside_box_mask(img.shape, (bx0, by0, bx1, by1))
    assert np.array_equal(img[outside], astronaut_rgb[outside])
    face = json.loads((out / "anonymize_report.json").read_text())["items"][0]["faces"][0]
    assert face["status"] == "masked" and "non-finite" in face["reason"]
    # Default policy with the same broken model: nothing written, exit 1.
    rc = main(["anonymize", str(src), "--out", str(tmp_path / "out2"), "--model", "broken-run", "--quiet"])
    assert rc == 1 and not (tmp_path / "out2" / "astro.png").exists()


def test_missing_model_writes_nothing(tmp_path, astronaut_rgb):
    src = tmp_path / "astro.png"
    Image.fromarray(astronaut_rgb).save(src)
    rc = main(["anonymize", str(src), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "no-such-run")])
    assert rc == 2 and not (tmp_path / "out").exists()
    rc = main(["anonymize", str(src), "--out", str(tmp_path / "out")])  # ddpm without --model
    assert rc == 2 and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------
# files and folders


def test_folder_with_corrupt_file(tmp_path, sample_photos):
    src = tmp_path / "photos"
    (src / "trip").mkdir(parents=True)
    obama = next(p for p in sample_photos if p.name == "obama.jpg")
    shutil.copy(obama, src / "trip" / "obama.jpg")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    out = tmp_path / "anon"
    rc = main(["anonymize", str(src), "--out", str(out), "--method", "pixelate", "--quiet"])
    assert rc == 1
    written = out / "trip" / "obama.png"  # folder mirrored; JPEG -> lossless PNG
    assert written.exists() and not (out / "broken.png").exists()
    report = json.loads((out / "anonymize_report.json").read_text())
    by_name = {e["input"].split("/")[-1]: e for e in report["items"]}
    assert by_name["broken.jpg"]["status"] == "error" and "not a readable image" in by_name["broken.jpg"]["reason"]
    good = by_name["obama.jpg"]
    assert good["status"] == "ok" and len(good["faces"]) >= 1 and good["faces"][0]["method"] == "pixelate"
    orig, anon = load_rgb(obama), load_rgb(written)
    assert anon.shape == orig.shape
    outside = np.ones(orig.shape[:2], bool)
    for face in good["faces"]:
        bx0, by0, bx1, by1 = box_pixels(face["face_box"], orig.shape)
        outside &= outside_box_mask(orig.shape, (bx0, by0, bx1, by1))
        assert not np.array_equal(anon[by0:by1, bx0:bx1], orig[by0:by1, bx0:bx1])
    assert np.array_equal(anon[outside], orig[outside])  # PNG output keeps the rest byte-exact
    assert before == {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}, "inputs must never change"


def test_no_face_written_unchanged_but_flagged(tmp_path, astronaut_rgb):
    # The rocket/flag corners of the real photo: no person in them.
    src = tmp_path / "scene.png"
    Image.fromarray(np.ascontiguousarray(astronaut_rgb[300:512, 380:512])).save(src)
    rc = main(["anonymize", str(src), "--out", str(tmp_path / "a"), "--method", "blur", "--quiet"])
    assert rc == 0
    assert np.array_equal(load_rgb(tmp_path / "a" / "scene.png"), load_rgb(src))
    entry = json.loads((tmp_path / "a" / "anonymize_report.json").read_text())["items"][0]
    assert entry["status"] == "no_face_detected" and entry["faces"] == []
    rc = main(["anonymize", str(src), "--out", str(tmp_path / "b"), "--method", "blur", "--require-face", "--quiet"])
    assert rc == 1 and not (tmp_path / "b" / "scene.png").exists()


def test_output_equal_to_or_around_input_is_refused(tmp_path, astronaut_rgb, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    src = folder / "astro.png"
    Image.fromarray(astronaut_rgb).save(src)
    data = src.read_bytes()
    for out in (folder, tmp_path, folder / "anon", src):
        rc = main(["anonymize", str(folder), "--out", str(out), "--method", "mask"])
        assert rc == 2, out
    assert "never overwritten" in capsys.readouterr().err
    rc = main(["anonymize", str(src), "--out", str(folder), "--method", "mask"])
    assert rc == 2
    assert src.read_bytes() == data and sorted(p.name for p in folder.iterdir()) == ["astro.png"]
    # Two inputs that would land on the same output name are refused up front.
    other = tmp_path / "astro.jpg"
    Image.fromarray(astronaut_rgb).save(other)
    with pytest.raises(ValueError, match="both be written"):
        anonymize_files([src, other], tmp_path / "o", Options(method="mask"), progress=False)


# ----------------------------------------------------------------------------------------------------
# video and COCO


def test_video_round_trip(tmp_path, face_video, tiny_inpainter):
    import cv2

    from toolkit.anonymize.media import VideoReader

    path, frames = face_video
    out = tmp_path / "out"
    report = anonymize_files([path], out, Options(method="ddpm", batch_size=4, sampling={"steps": 2}),
                             inpainter=tiny_inpainter, model="tiny", progress=False)
    assert exit_code(report) == 0
    (entry,) = report["items"]
    assert entry["status"] == "ok" and entry["frames"] == 4 and entry["frames_no_face"] == 0
    reader = VideoReader(out / "walk.avi")
    assert (reader.width, reader.height, reader.fps) == (320, 256, 5.0)
    got = [f for chunk in reader.frames(8) for f in chunk]
    reader.close()
    assert len(got) == 4
    for k, (orig, anon) in enumerate(zip(frames, got)):
        (face,) = entry["frame_faces"][k]["faces"]
        outside = outside_box_mask(orig.shape, face["crop_box"])
        assert np.array_equal(anon[outside], orig[outside]), "FFV1 is lossless: outside must be exact"
        bx0, by0, bx1, by1 = box_pixels(face["face_box"], orig.shape)
        assert np.abs(anon[by0:by1, bx0:bx1].astype(int) - orig[by0:by1, bx0:bx1]).mean() > 10
    assert cv2.VideoCapture(str(path)).isOpened()  # input intact


def test_coco_mode_keeps_annotation_and_writes_all_images(tmp_path, coco_set):
    ann, images_root = coco_set
    ann_bytes = ann.read_bytes()
    out = tmp_path / "anon_coco"
    rc = main(["anonymize", "--coco", str(ann), "--images-root", str(images_root), "--out", str(out),
               "--method", "blur", "--quiet"])
    assert rc == 0
    assert (out / "annotations" / ann.name).read_bytes() == ann_bytes
    data = json.loads(ann_bytes)
    for img in data["images"]:
        written = out / "images" / img["file_name"]
        assert written.exists(), written
        arr = load_rgb(written)
        assert arr.shape[:2] == (img["height"], img["width"])
        assert not np.array_equal(arr, load_rgb(images_root / img["file_name"]))
    report = json.loads((out / "anonymize_report.json").read_text())
    assert report["summary"]["written"] == len(data["images"]) and report["summary"]["faces_failed"] == 0


def test_coco_labelled_face_that_detector_misses_fails_closed(tmp_path, coco_set):
    ann, images_root = coco_set
    data = json.loads(ann.read_text())
    # A labelled person whose face (nose, eyes) lies where the detector found none: the rocket.
    kps = [0.0] * 51
    kps[0:9] = [420, 120, 2, 430, 110, 2, 410, 110, 2]
    data["annotations"].append({"id": 99, "image_id": 1, "category_id": 1, "keypoints": kps, "num_keypoints": 3,
                                "iscrowd": 0, "bbox": [380, 80, 80, 200], "area": 16000})
    ann2 = tmp_path / "ann_extra.json"
    ann2.write_text(json.dumps(data))
    rc = main(["anonymize", "--coco", str(ann2), "--images-root", str(images_root), "--out", str(tmp_path / "a"),
               "--method", "pixelate", "--quiet"])
    assert rc == 1
    astro_name = data["images"][0]["file_name"]
    assert not (tmp_path / "a" / "images" / astro_name).exists()
    assert (tmp_path / "a" / "images" / data["images"][1]["file_name"]).exists()
    rc = main(["anonymize", "--coco", str(ann2), "--images-root", str(images_root), "--out", str(tmp_path / "b"),
               "--method", "pixelate", "--on-miss", "mask", "--quiet"])
    assert rc == 0
    img = load_rgb(tmp_path / "b" / "images" / astro_name)
    assert (img[110:121, 410:431] == 0).all()  # the missed labelled face is masked


def test_student_run_works_through_the_same_contract(tmp_path, astronaut_rgb, astronaut_persons, tiny_student_run):
    src = tmp_path / "astro.png"
    Image.fromarray(astronaut_rgb).save(src)
    out = tmp_path / "out"
    rc = main(["anonymize", str(src), "--out", str(out), "--model", str(tiny_student_run), "--quiet"])
    assert rc == 0
    img = load_rgb(out / "astro.png")
    report = json.loads((out / "anonymize_report.json").read_text())
    assert report["model_info"]["stage"] == "student"
    (face,) = report["items"][0]["faces"]
    assert face["status"] == "anonymized"
    outside = outside_box_mask(img.shape, face["crop_box"])
    assert np.array_equal(img[outside], astronaut_rgb[outside])
    bx0, by0, bx1, by1 = box_pixels(face["face_box"], img.shape)
    assert np.abs(img[by0:by1, bx0:bx1].astype(int) - astronaut_rgb[by0:by1, bx0:bx1]).mean() > 10
    # Settings a student cannot honour are refused before any image is touched.
    rc = main(["anonymize", str(src), "--out", str(tmp_path / "bad"), "--model", str(tiny_student_run), "--steps", "9"])
    assert rc == 2 and not (tmp_path / "bad").exists()


def test_video_with_a_failing_face_is_not_written(tmp_path, face_video):
    path, _frames = face_video
    out = tmp_path / "out"
    report = anonymize_files([path], out, Options(method="ddpm", batch_size=2), inpainter=NaNInpainter(),
                             progress=False)
    assert exit_code(report) == 1
    (entry,) = report["items"]
    assert entry["status"] == "refused" and "frame 0" in entry["reason"] and entry["output"] is None
    assert sorted(p.name for p in out.iterdir()) == ["anonymize_report.json"], "no video, no temp file left"
