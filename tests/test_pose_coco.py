"""Human keypoint labels (COCO person keypoints) for the pose model: the loader, ignore regions, training from
`--coco` on anonymized images, evaluation with pycocotools, and clear errors for files that are not COCO.

The COCO files are real: the teacher's labels of bundled photos in COCO's 17-keypoint format, with hand-made
edits (a crowd region, a person with num_keypoints 0, a v=1 point, a labelled point outside the image)."""

import copy
import json

import numpy as np
import pytest
import torch
from fixtures_pose import COCO_CROWD_POLYGON, COCO_UNLABELLED_NEAR

from toolkit.cli import main
from toolkit.pose import data as D
from toolkit.pose.coco import face_box_from_labels, load_coco
from toolkit.pose.evaluate import _result, coco_metrics


def _image(coco_set, name):
    return next(im for im in coco_set.images if im.path.name == name)


# ---------------------------------------------------------------------------------------------- loader


def test_loader_yields_the_labelled_people(coco_train, pose_people):
    ann, root, data = coco_train
    cs = load_coco(ann, root)
    assert [im.path.name for im in cs.images] == ["obama.jpg", "vtest_000.png", "vtest_200.png"]
    c = cs.counts()
    assert c["crowd_regions"] == 1 and c["ignored_people"] == 1 and c["images_missing"] == 0
    assert c["targets"] == c["people"] - 2 and c["targets"] >= 6

    # The 7 points are the teacher's, in the same order (COCO indices 0-6 of the 17).
    obama = _image(cs, "obama.jpg")
    (teacher,) = pose_people[str(root / "obama.jpg")]
    (label,) = obama.labels
    np.testing.assert_allclose(label.keypoints[label.visible], teacher.keypoints[teacher.visible], atol=0.01)
    # v=1 (labelled, occluded) is a label like v=2.
    assert data["annotations"][0]["keypoints"][5 * 3 + 2] == 1 and label.visible[5]
    # The crowd annotation is no person to learn, and has no labelled point.
    crowd = next(p for p in obama.persons if p.iscrowd)
    assert crowd.label is None and not crowd.visible.any()

    # A labelled point outside the image is not a label (vtest_000 person 0: left ear moved past the border).
    v0 = _image(cs, "vtest_000.png").persons[0]
    assert not v0.visible[3] and v0.visible[[0, 1, 2, 4]].all() and v0.label is not None

    # num_keypoints 0: not a target.
    v200 = _image(cs, "vtest_200.png")
    (unlabelled,) = [p for p in v200.persons if p.label is None]
    assert not unlabelled.visible.any()
    x, y, w, h = unlabelled.bbox
    assert x < COCO_UNLABELLED_NEAR[0] < x + w and y < COCO_UNLABELLED_NEAR[1] < y + h
    assert len(v200.labels) == len(pose_people[str(root / "vtest_200.png")]) - 1


def test_face_box_from_labels_matches_the_teachers_scale(pose_people):
    """The estimated head box of a portrait is within 20 % of the face detector's (person size relies on it)."""
    for name in ("obama.jpg", "astronaut.png", "biden.jpg"):
        (p,) = next(v for k, v in pose_people.items() if k.endswith(name))
        box = face_box_from_labels(p.keypoints, p.visible)
        side, teacher = box[2] - box[0], p.face_box_unclipped[2] - p.face_box_unclipped[0]
        assert 0.8 < side / teacher < 1.2, (name, side, teacher)
    kp = np.zeros((7, 2))
    assert face_box_from_labels(kp, np.array([0, 0, 0, 0, 0, 1, 1], bool)) is None  # shoulders only: no face


def test_ignore_regions_are_masked(coco_train):
    ann, root, _ = coco_train
    cs = load_coco(ann, root)
    obama, v200 = _image(cs, "obama.jpg"), _image(cs, "vtest_200.png")
    mask = obama.ignore_mask()
    # The crowd polygon (not its bbox) is ignored; the person is not.
    xs, ys = COCO_CROWD_POLYGON[0::2], COCO_CROWD_POLYGON[1::2]
    assert mask[int(np.mean(ys)), int(np.mean(xs))] and not mask[25, 250]  # inside / outside the polygon
    nose = obama.labels[0].keypoints[0].astype(int)
    assert not mask[nose[1], nose[0]]
    # The num_keypoints-0 person: its bbox is ignored; the other people's noses are not.
    m200 = v200.ignore_mask()
    unlabelled = next(p for p in v200.persons if p.label is None)
    x, y, w, h = unlabelled.bbox
    assert m200[int(y + h / 2), int(x + w / 2)]
    assert not any(m200[int(lab.keypoints[0, 1]), int(lab.keypoints[0, 0])] for lab in v200.labels)
    assert _image(cs, "vtest_000.png").ignore_mask() is None

    # Cut into the person's region like the pixels, and carried through the augmented views.
    from toolkit.images import load_rgb

    regions = D.build_regions({str(obama.path): load_rgb(obama.path)}, {str(obama.path): obama.labels},
                              cs.ignore_masks())
    assert regions.ignore.shape == regions.images.shape[:3] and regions.ignore[0].any()
    M = D.region_transform(obama.labels[0])
    corner = np.array([np.mean(xs), np.mean(ys)]) @ M[:, :2].T + M[:, 2]
    assert regions.ignore[0][int(corner[1]), int(corner[0])]
    _, _, _, _, ignore = D.random_views(regions, 8, np.random.default_rng(0))
    assert ignore.any() and not ignore.all()


def test_ignored_cells_carry_no_loss():
    """A response on an ignored cell (an unlabelled person) costs nothing; the same response elsewhere does,
    and a target's own peak inside an ignore region is still learned."""
    from toolkit.pose import multi
    from toolkit.pose.model import render_heatmaps
    from toolkit.pose.train import heatmap_loss

    kp = np.full((1, 7, 2), 40.0)
    target = torch.from_numpy(render_heatmaps(kp, np.ones((1, 7)), 24, 4, 1.0))
    weight = torch.ones(1, 7)
    ignore = np.zeros((1, 96, 96), bool)
    ignore[0, 70:90, 4:30] = True  # far from the keypoints
    ign = torch.from_numpy(D.ignored_cells(ignore, 4))
    pred = target.clone()
    pred[:, :, 19, 3] = 1.0  # a blob inside the ignore region
    assert heatmap_loss(pred, target, weight, ign).item() == 0.0
    assert heatmap_loss(pred, target, weight).item() == pytest.approx(1.0)  # 1 per map, averaged over maps
    pred2 = target.clone()
    pred2[:, :, 5, 20] = 1.0  # the same blob on background
    assert heatmap_loss(pred2, target, weight, ign).item() == pytest.approx(1.0)
    ignore_all = torch.ones_like(ign)
    assert heatmap_loss(torch.zeros_like(target), target, weight, ignore_all).item() > 0.5  # own peak kept

    people = [[(kp[0], np.ones(7, bool))]]
    c, vis_t, off_t, _, _ = multi.targets(people, 24, 4)
    out = torch.cat([c, vis_t, off_t], dim=1)
    assert multi.loss(out, people, 4).item() == pytest.approx(0.0, abs=1e-6)
    out[:, multi.CENTER, 19, 3] = 1.0
    assert multi.loss(out, people, 4, ignore).item() == pytest.approx(0.0, abs=1e-6)
    assert multi.loss(out, people, 4).item() == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------------------------------------- training


def test_train_from_coco_on_anonymized_images(coco_train, pose_people, tmp_path):
    from toolkit.artifacts import read_manifest
    from toolkit.pose.train import TrainSettings, train_pose

    ann, root, _ = coco_train
    for preset in ("tiny", "multi_tiny"):
        out = tmp_path / preset
        m = train_pose(None, out, coco=ann, images_root=root, method="blur", people=pose_people, progress=False,
                       settings=TrainSettings(steps=4, preset=preset, batch_size=4, threads=1))
        assert read_manifest(out, expect_stage="pose")["labels"] == "coco"
        assert m["teacher"] is None and m["coco"]["targets"] == m["data"]["people"]
        assert m["data"]["images_used"] == 3 and not m["data"]["images_skipped"]
        saved = D.Regions.load(out / "train_regions.npz")
        assert len(saved) == m["data"]["people"] and saved.ignore.any()
    # The regions hold the blurred pixels, the labels the annotation's points.
    cs = load_coco(ann, root)
    i = saved.source.index(str(root / "obama.jpg"))
    from toolkit.images import load_rgb

    lab = _image(cs, "obama.jpg").labels[0]
    original = D.build_regions({"o": load_rgb(root / "obama.jpg")}, {"o": [lab]})
    np.testing.assert_allclose(saved.keypoints[i], original.keypoints[0])
    nose = saved.keypoints[i][0].astype(int)
    diff = np.abs(saved.images[i].astype(int) - original.images[0].astype(int)).sum(-1)
    assert diff[nose[1] - 3:nose[1] + 3, nose[0] - 3:nose[0] + 3].mean() > 5


def test_labelled_face_the_detector_missed_skips_the_image(coco_train, pose_people, tmp_path):
    """Fail closed: a labelled face the anonymizer would not replace keeps its image out of training."""
    from toolkit.pose.train import TrainSettings, train_pose

    ann, root, _ = coco_train
    people = {k: copy.deepcopy(v) for k, v in pose_people.items()}
    people[str(root / "vtest_000.png")] = people[str(root / "vtest_000.png")][1:]  # person 0's face "missed"
    m = train_pose(None, tmp_path / "r", coco=ann, images_root=root, method="pixelate", people=people,
                   progress=False, settings=TrainSettings(steps=2, preset="tiny", batch_size=2, threads=1))
    (skipped,) = m["data"]["images_skipped"]
    assert skipped["image"].endswith("vtest_000.png") and "not found by the face detector" in skipped["reason"]
    assert m["data"]["images_used"] == 2


def test_cli_train_from_coco(coco_train, tmp_path, capsys):
    ann, root, _ = coco_train
    out = tmp_path / "run"
    rc = main(["pose", "train", "--coco", str(ann), "--images-root", str(root), "--out", str(out), "--method",
               "original", "--steps", "3", "--preset", "tiny", "--batch-size", "2", "--threads", "1",
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    assert "(COCO labels)" in capsys.readouterr().out
    assert (out / "diffusion_pytorch_model.safetensors").exists()


# ---------------------------------------------------------------------------------------------- evaluation


def test_coco_metrics_perfect_perturbed_and_ignored(coco_train):
    ann, root, _ = coco_train
    cs = load_coco(ann, root)
    targets = [(im.id, lab) for im in cs.images for lab in im.labels]
    perfect = [_result(i, lab.keypoints, 0.9) for i, lab in targets]
    r = coco_metrics(cs, perfect)
    assert r["oks"] == pytest.approx(1.0) and r["ap"] == pytest.approx(1.0) and r["pck@0.2"] == 1.0
    assert r["people"] == r["people_found"] == len(targets)

    # Perturbed by 0.15 person sizes: OKS, AP and PCK@0.1 drop.
    rng = np.random.default_rng(0)
    noisy = [_result(i, lab.keypoints + rng.normal(0, 0.15 * lab.ref, (7, 2)), 0.9) for i, lab in targets]
    n = coco_metrics(cs, noisy)
    assert 0.2 < n["oks"] < 0.95 and n["ap"] < 0.9 and n["pck@0.1"] < 0.9

    # A confident detection on the num_keypoints-0 person is no false positive; on empty background it is.
    v200 = _image(cs, "vtest_200.png")
    x, y, w, h = next(p for p in v200.persons if p.label is None).bbox
    on_ignored = _result(v200.id, np.tile([x + w / 2, y + h / 3], (7, 1)), 1.0)
    assert coco_metrics(cs, perfect + [on_ignored])["ap"] == pytest.approx(1.0)
    on_background = _result(v200.id, np.tile([30.0, 540.0], (7, 1)), 1.0)
    assert coco_metrics(cs, perfect + [on_background])["ap"] < 0.99

    # Nothing detected: zeros, every person missed.
    none = coco_metrics(cs, [])
    assert none["oks"] == 0.0 and none["pck@0.2"] == 0.0 and none["people_found"] == 0


def test_cli_eval_coco_reports_oks_and_pck(tiny_pose_run, coco_heldout, tmp_path, capsys):
    ann, root, _ = coco_heldout
    report = tmp_path / "eval.json"
    rc = main(["pose", "eval", "--coco", str(ann), "--images-root", str(root), "--model", str(tiny_pose_run),
               "--json", str(report), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    r = json.loads(report.read_text())
    assert f"OKS {r['oks']:.3f}" in out and f"PCK@0.2 {r['pck@0.2']:.3f}" in out
    assert r["labels"] == "coco" and r["people"] >= 3 and r["detections"] == r["people"]  # top-down: one each
    assert 0.0 < r["oks"] < 1.0 and 0.0 <= r["ap"] <= 1.0 and 0.0 < r["pck@0.2"] <= 1.0


def test_eval_coco_multi_person_sees_whole_images(coco_heldout, coco_train, pose_people, tmp_path):
    from toolkit.pose.evaluate import evaluate_coco
    from toolkit.pose.train import TrainSettings, train_pose

    ann, root, _ = coco_train
    run = tmp_path / "multi"
    train_pose(None, run, coco=ann, images_root=root, method="blur", people=pose_people, progress=False,
               settings=TrainSettings(steps=3, preset="multi_tiny", batch_size=4, threads=1))
    hann, hroot, _ = coco_heldout
    r = evaluate_coco(hann, hroot, run, progress=False)
    assert r["multi_person"] and r["people"] >= 3
    assert 0.0 <= r["oks"] <= 1.0 and 0.0 <= r["pck@0.2"] <= 1.0 and r["people_found"] <= r["people"]


# ---------------------------------------------------------------------------------------------- errors


def _variant(tmp_path, data, edit, name="ann.json"):
    d = copy.deepcopy(data)
    edit(d)
    path = tmp_path / name
    path.write_text(json.dumps(d))
    return path


def test_bad_coco_files_give_clear_errors(coco_train, tmp_path, capsys):
    ann, root, data = coco_train

    def err(path, verb="train"):
        where = ["--out", str(tmp_path / "r"), "--method", "blur"] if verb == "train" else ["--model", str(tmp_path)]
        assert main(["pose", verb, "--coco", str(path), "--images-root", str(root), *where]) == 2
        return capsys.readouterr().err

    assert "no 'categories' list" in err(_variant(tmp_path, data, lambda d: d.pop("categories")))
    assert "no category has a 'keypoints' list" in err(
        _variant(tmp_path, data, lambda d: d["categories"][0].pop("keypoints")))
    assert "expected COCO's 17 person keypoints" in err(
        _variant(tmp_path, data, lambda d: d["categories"][0].update(keypoints=["head"] * 17)))
    e = err(_variant(tmp_path, data, lambda d: d["annotations"][0].update(keypoints=[1, 2, 2])))
    assert "'keypoints' must be 51 numbers" in e and "got 3" in e
    assert "has no 'bbox'" in err(_variant(tmp_path, data, lambda d: d["annotations"][0].pop("bbox")))
    assert "which is not in 'images'" in err(
        _variant(tmp_path, data, lambda d: d["annotations"][0].update(image_id=12345)))
    assert "is listed as 11x" in err(_variant(tmp_path, data, lambda d: d["images"][0].update(width=11)))
    (tmp_path / "not.json").write_text("{nope")
    assert "not a JSON file" in err(tmp_path / "not.json")
    assert "no such annotation file" in err(tmp_path / "absent.json")
    # Every image missing: an error; some missing: skipped and counted.
    assert "none of its 3 image(s) is under --images-root" in err(
        _variant(tmp_path, data, lambda d: [im.update(file_name="x/" + im["file_name"]) for im in d["images"]]))
    partial = _variant(tmp_path, data, lambda d: d["images"].append(
        {"id": 99, "file_name": "not_here.jpg", "width": 10, "height": 10}), "partial.json")
    cs = load_coco(partial, root)
    assert cs.missing == ["not_here.jpg"] and cs.counts()["images_missing"] == 1 and len(cs.images) == 3
    assert "not_here.jpg" in capsys.readouterr().err
    assert "points outside --images-root" in err(
        _variant(tmp_path, data, lambda d: d["images"][0].update(file_name="../obama.jpg")))
    # The same checks guard evaluation (before any model is loaded).
    assert "no 'images' list" in err(_variant(tmp_path, data, lambda d: d.pop("images")), verb="eval")

    # Flags: one label source; --coco needs --images-root.
    assert main(["pose", "train", "--coco", str(ann), "--out", str(tmp_path / "r"), "--method", "blur"]) == 2
    assert "--coco needs --images-root" in capsys.readouterr().err
    assert main(["pose", "train", "--coco", str(ann), "--images-root", str(root), "--images", str(root),
                 "--out", str(tmp_path / "r"), "--method", "blur"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["pose", "eval", "--model", str(tmp_path)]) == 2
    assert "give --images DIR" in capsys.readouterr().err


def test_write_coco_round_trip_without_edits(coco_heldout, pose_people):
    """An unedited file gives back the teacher's people as targets, the same points (person sizes differ a
    little: the head box is estimated from the points, so people right at the 8 px limit may switch sides)."""
    ann, root, _ = coco_heldout
    cs = load_coco(ann, root)
    for im in cs.images:
        noses = [lab.keypoints[0] for lab in im.labels]
        teacher = D.labels_from_persons(pose_people[str(im.path)])
        for t in teacher:
            if t.ref >= 1.5 * D.MIN_PERSON_PX:
                assert min(np.abs(n - t.keypoints[0]).max() for n in noses) < 0.01
        assert abs(len(im.labels) - len(teacher)) <= 1
