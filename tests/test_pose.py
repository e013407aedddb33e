"""The tiny pose estimator (toolkit.pose): architecture limits, geometry, training on anonymized real photos,
evaluation against the BlazePose teacher on held-out originals, the CLI and its errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.cli import main
from toolkit.keypoints import FLIP_PERMUTATION
from toolkit.pose import data as D
from toolkit.pose.model import (ALLOWED_ONNX_OPS, MAX_PARAMS, PRESETS, PoseNet, budget, decode_heatmaps,
                                disallowed_modules, get_preset, render_heatmaps)

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------- architecture


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_parameter_budget_and_mcu_op_set(preset, tmp_path):
    net = PoseNet(get_preset(preset), 96)
    b = budget(net)
    assert b.params == sum(p.numel() for p in net.parameters())
    assert b.params <= MAX_PARAMS
    assert b.heatmap_size == 24 and net(torch.zeros(1, 3, 96, 96)).shape == (1, net.out_channels, 24, 24)
    assert net.out_channels == (22 if net.multi_person else 1 if net.verifier else 7)
    # Walk the module tree: nothing but conv / relu / relu6 / nearest upsample (plus containers).
    assert disallowed_modules(net) == []
    for m in net.modules():
        if isinstance(m, torch.nn.Upsample):
            assert m.mode == "nearest"
    # ... and the exported graph holds only the ops the int8 engine implements.
    import onnx

    from toolkit.deploy.quantize import export_float_onnx

    path = export_float_onnx(net.export_module(), torch.zeros(1, 3, 96, 96), tmp_path / "pose.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ops <= ALLOWED_ONNX_OPS, ops - ALLOWED_ONNX_OPS


def test_mcu_preset_is_the_product_size():
    b = budget(PoseNet(get_preset("mcu96"), 96))
    assert 150_000 < b.params <= 250_000
    assert b.macs < 60_000_000


def test_op_check_catches_foreign_modules():
    net = PoseNet(get_preset("tiny"), 96)
    net.head = torch.nn.Sequential(torch.nn.BatchNorm2d(12), net.head)
    assert any("BatchNorm2d" in s for s in disallowed_modules(net))


def test_heatmap_render_decode_round_trip():
    rng = np.random.default_rng(0)
    pts = rng.uniform(6, 90, size=(3, 7, 2))
    maps = render_heatmaps(pts, np.ones((3, 7)), 24, 4, sigma=1.0)
    dec, peak = decode_heatmaps(maps, 4)
    assert np.abs(dec - pts).max() < 1.0  # sub-cell precision (cells are 4 px)
    assert (peak > 0.6).all()
    # Out-of-frame or unweighted points get empty maps.
    pts[0, 0] = (-20, 40)
    w = np.ones((3, 7))
    w[1, 2] = 0
    maps = render_heatmaps(pts, w, 24, 4, sigma=1.0)
    assert maps[0, 0].max() == 0 and maps[1, 2].max() == 0 and maps[2, 2].max() > 0.5


def test_flipped_view_swaps_left_and_right(pose_people):
    # A real person: the flipped view's "left eye" is the original right eye, mirrored.
    from toolkit.images import load_rgb

    path = next(p for p in pose_people if p.endswith("obama.jpg"))
    (lab,) = D.labels_from_persons(pose_people[path])
    regions = D.build_regions({path: load_rgb(path)}, {path: [lab]})
    center = regions.keypoints[0].mean(axis=0)
    M0 = D.view_transform(D.REGION_PX, center, regions.ref[0], 96, 3.0)
    M1 = D.view_transform(D.REGION_PX, center, regions.ref[0], 96, 3.0, flip=True)
    v0, k0, _, _ = D.render_view(regions, 0, M0, 96, False)
    v1, k1, _, _ = D.render_view(regions, 0, M1, 96, True)
    assert np.abs(v1.astype(int) - v0[:, ::-1]).max() <= 1  # the view itself is mirrored (rounding aside)
    np.testing.assert_allclose(k1[:, 0], 96 - k0[list(FLIP_PERMUTATION), 0], atol=1e-6)
    # On a frontal photo the person's left eye is on the image's right: the flip must keep that true.
    assert k0[1, 0] > k0[2, 0] and k1[1, 0] > k1[2, 0]


def test_int8_decoding_matches_float_decoding(tiny_pose_run, pose_people):
    """The firmware's integer decoding reference agrees with the float decoder on the same int8 heatmaps."""
    from toolkit.images import load_rgb
    from toolkit.pose.model import decode_heatmaps_int8

    net = PoseNet.from_pretrained(tiny_pose_run)
    path = next(p for p in pose_people if p.endswith("biden.jpg"))
    regions = D.build_regions({path: load_rgb(path)}, {path: D.labels_from_persons(pose_people[path])})
    views, *_ = D.eval_views(regions, 3, seed=1)
    with torch.no_grad():
        hm = net(D.to_model_input(views)).numpy()
    scale = float(hm.max() - hm.min()) / 255.0
    zp = int(round(-128 - hm.min() / scale))
    for b in range(hm.shape[0]):
        q = np.clip(np.round(hm[b] / scale) + zp, -128, 127).astype(np.int8)  # (K, H, W)
        pts_q8, peaks = decode_heatmaps_int8(q.transpose(1, 2, 0), zp, net.stride)
        ref, _ = decode_heatmaps(((q.astype(np.float64) - zp) * scale)[None], net.stride)
        # Same cell, same weighted mean: only the final 1/256-pixel rounding differs.
        assert np.abs(pts_q8 / 256.0 - ref[0]).max() <= net.stride / 256.0
        assert np.array_equal(peaks, q.reshape(7, -1).max(1))


# ---------------------------------------------------------------------------------------------- training


def test_training_beats_untrained_on_heldout_originals(tiny_pose_run, pose_photos, pose_people):
    from toolkit.pose.evaluate import evaluate_pose, evaluate_regions, original_regions

    trained = evaluate_pose(pose_photos["heldout"], tiny_pose_run, people=pose_people, progress=False)
    paths = [p for p in pose_people if "/heldout/" in p]
    regions, _ = original_regions(paths, pose_people, progress=False)
    torch.manual_seed(0)
    untrained = evaluate_regions(PoseNet(get_preset("tiny"), 96), regions)
    assert trained["people"] >= 3 and trained["keypoints"] >= 50
    assert trained["pck@0.2"] > untrained["pck@0.2"] + 0.15, (trained["pck@0.2"], untrained["pck@0.2"])
    assert trained["mean_error"] < untrained["mean_error"]
    assert 0.0 <= trained["oks"] <= 1.0 and trained["oks"] > untrained["oks"]
    # the per-person hits (what the experiment's bootstrap resamples) add up to the pooled figures
    hits, counts = np.array(trained["per_person"]["hits@0.2"]), np.array(trained["per_person"]["keypoints"])
    assert hits.shape == counts.shape == (trained["people"], 7) and counts.sum() == trained["keypoints"]
    assert hits.sum() / counts.sum() == pytest.approx(trained["pck@0.2"])


# ---------------------------------------------------------------------------------------------- statistics


def test_person_hits_sum_each_persons_views():
    from toolkit.pose.evaluate import person_hits

    target = np.zeros((3, 7, 2))
    pred = target.copy()
    pred[1, 0] = [5.0, 0.0]  # person 0's second view: nose 0.5 person sizes off
    mask = np.ones((3, 7), bool)
    mask[2, 6] = False  # person 1: right shoulder unseen
    hits, counts = person_hits(pred, target, mask, np.full(3, 10.0), np.array([0, 0, 1]), people=2)
    assert counts.tolist() == [[2] * 7, [1] * 6 + [0]]
    assert hits.tolist() == [[1] + [2] * 6, [1] * 6 + [0]]


def _bootstrap_case(seed=0, people=12, seeds=3):
    rng = np.random.default_rng(seed)
    counts = rng.integers(20, 60, people)
    rate = rng.uniform(0.2, 0.6, people)  # people differ a lot: the resampling unit matters
    hits = rng.binomial(np.broadcast_to(counts, (seeds, people)), rate)
    return hits, counts, rate


def test_bootstrap_people_identical_inputs_are_within_noise():
    from toolkit.pose.evaluate import bootstrap_people

    hits, counts, _ = _bootstrap_case()
    b = bootstrap_people(hits, counts, hits.copy(), resamples=500)
    assert b["diff"] == 0.0 and b["diff_ci"][1] - b["diff_ci"][0] < 1e-12 and b["verdict"] == "within noise"
    assert b["value"] == pytest.approx(hits.sum() / (3 * counts.sum()))
    assert b["ci"][0] < b["value"] < b["ci"][1] and b["ci"][1] - b["ci"][0] > 0.02  # people vary: a real width
    assert b["seed_values"] == pytest.approx(list(hits.sum(1) / counts.sum()))


def test_bootstrap_people_detects_a_clear_shift_and_not_a_seed_wobble():
    from toolkit.pose.evaluate import bootstrap_people

    hits, counts, _ = _bootstrap_case()
    worse = np.maximum(hits - (0.25 * counts).astype(int), 0)  # every person loses a quarter of the keypoints
    b = bootstrap_people(worse, counts, hits)
    assert b["verdict"] == "worse" and b["diff_ci"][1] < 0 and b["diff"] < -0.2
    assert bootstrap_people(hits, counts, worse)["verdict"] == "better"
    # one person much better, one much worse (equal counts): no consistent difference over people
    counts = np.full(12, 40)
    base = np.full((3, 12), 20)
    mixed = base.copy()
    mixed[:, 0], mixed[:, 1] = 38, 2
    assert bootstrap_people(mixed, counts, base)["verdict"] == "within noise"


def test_bootstrap_people_is_seeded_and_resamples_whole_people():
    from toolkit.pose.evaluate import bootstrap_people

    hits, counts, _ = _bootstrap_case()
    a = bootstrap_people(hits, counts, hits // 2, seed=3)
    assert a == bootstrap_people(hits, counts, hits // 2, seed=3)
    assert a["ci"] != bootstrap_people(hits, counts, hits // 2, seed=4)["ci"]
    # The unit is the person: people who all score 20 of 40 give a zero-width interval (a bootstrap over
    # keypoints would see 0.5 +- 0.08), and the seeds are resampled too: identical seeds add no width.
    same = bootstrap_people(np.full((3, 10), 20), np.full(10, 40))
    assert same["ci"] == [0.5, 0.5] and same["value"] == 0.5
    seeds_differ = bootstrap_people(np.array([[10] * 10, [20] * 10, [30] * 10]), np.full(10, 40))
    assert seeds_differ["value"] == 0.5 and seeds_differ["ci"][0] < 0.4 and seeds_differ["ci"][1] > 0.6
    with pytest.raises(ValueError, match="counts"):
        bootstrap_people(hits, counts[:-1])
    with pytest.raises(ValueError, match="baseline"):
        bootstrap_people(hits, counts, hits[:2])
    with pytest.raises(ValueError, match="hits <= counts"):
        bootstrap_people(hits + 1000, counts)


def test_run_artifact(tiny_pose_run, pose_photos):
    from toolkit.artifacts import read_manifest

    m = read_manifest(tiny_pose_run, expect_stage="pose")
    assert m["method"] == "blur" and m["params"] <= MAX_PARAMS and m["macs"] > 0
    assert m["data"]["images_used"] == len(list(pose_photos["train"].iterdir()))
    assert m["training"]["loss_last"] < m["training"]["loss_first"]
    net = PoseNet.from_pretrained(tiny_pose_run)
    assert net.config() == json.loads((tiny_pose_run / "config.json").read_text())
    assert sum(p.numel() for p in net.parameters()) == m["params"]


def test_training_regions_are_anonymized(tiny_pose_run, pose_people):
    """The saved training pixels are the blurred ones: the face area differs from the original, the rest not."""
    from toolkit.images import load_rgb

    saved = D.Regions.load(tiny_pose_run / "train_regions.npz")
    path = next(p for p in saved.source if p.endswith("obama.jpg"))
    i = saved.source.index(path)
    labels = D.labels_from_persons(pose_people[path])
    original = D.build_regions({path: load_rgb(path)}, {path: labels})
    diff = np.abs(saved.images[i].astype(int) - original.images[0].astype(int)).sum(-1)
    nose = saved.keypoints[i][0].astype(int)
    assert diff[nose[1] - 3:nose[1] + 3, nose[0] - 3:nose[0] + 3].mean() > 5  # blurred face
    assert diff[-10:, :].mean() < 1  # body below the face untouched


def test_ddpm_training_uses_the_generator(tmp_path, tiny_student_run, pose_photos, pose_people):
    """The default, privacy-friendly path: faces replaced by the distilled student before training."""
    from toolkit.artifacts import read_manifest
    from toolkit.pose.train import TrainSettings, train_pose

    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("obama.jpg", "vtest_000.png"):
        (images / name).write_bytes((pose_photos["train"] / name).read_bytes())
    people = {str(images / n): pose_people[str(pose_photos["train"] / n)] for n in ("obama.jpg", "vtest_000.png")}
    out = tmp_path / "run"
    train_pose(images, out, model_run=tiny_student_run, people=people, progress=False,
               settings=TrainSettings(steps=5, preset="tiny", batch_size=4, threads=1))
    m = read_manifest(out, expect_stage="pose")
    assert m["method"] == "ddpm" and m["generator"]["stage"] == "student"
    assert m["data"]["images_used"] == 2 and m["data"]["people"] >= 2


def test_images_that_cannot_be_anonymized_are_left_out(pose_people):
    """Fail closed: a face the anonymizer refuses (degenerate box) drops its image from training."""
    import copy

    from toolkit.pose.train import process_images

    path = next(p for p in pose_people if p.endswith("obama2.jpg"))
    broken = copy.deepcopy(pose_people[path])
    broken[0].face_box = np.array([50.0, 50.0, 50.0, 50.0])
    good = next(p for p in pose_people if p.endswith("obama.jpg"))
    out, report = process_images({path: broken, good: pose_people[good]}, "pixelate", progress=False)
    assert list(out) == [good]
    assert report["images_skipped"][0]["image"] == path


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_eval_reports_and_writes_json(tiny_pose_run, pose_photos, tmp_path, capsys):
    report = tmp_path / "eval.json"
    rc = main(["pose", "eval", "--images", str(pose_photos["heldout"]), "--model", str(tiny_pose_run),
               "--views", "2", "--json", str(report), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    r = json.loads(report.read_text())
    assert f"PCK@0.2 {r['pck@0.2']:.3f}" in out
    assert r["views"] == 2 * r["people"] and r["method"] == "blur"


def test_cli_train_small(tmp_path, pose_photos, capsys):
    images = tmp_path / "one"
    images.mkdir()
    (images / "obama.jpg").write_bytes((pose_photos["train"] / "obama.jpg").read_bytes())
    out = tmp_path / "run"
    rc = main(["pose", "train", "--images", str(images), "--out", str(out), "--method", "mask", "--steps", "3",
               "--preset", "tiny", "--batch-size", "2", "--threads", "1", "--no-progress"])
    assert rc == 0
    assert "pose model" in capsys.readouterr().out
    assert (out / "config.json").exists() and (out / "diffusion_pytorch_model.safetensors").exists()
    # The input run is never overwritten: a second train into it is refused.
    rc = main(["pose", "train", "--images", str(images), "--out", str(out), "--method", "mask", "--steps", "3"])
    assert rc == 2 and "not empty" in capsys.readouterr().err


def test_cli_bad_inputs(tmp_path, capsys):
    from toolkit.artifacts import write_manifest

    student = tmp_path / "student_run"
    write_manifest(student, "student")  # another stage's artifact (only its manifest matters here)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["pose", "train", "--images", str(empty), "--out", str(tmp_path / "r"), "--method", "blur"]) == 2
    assert "no images found" in capsys.readouterr().err
    # Default method is ddpm: without a generator run it refuses instead of training on raw faces.
    assert main(["pose", "train", "--images", str(empty), "--out", str(tmp_path / "r")]) == 2
    assert "--model" in capsys.readouterr().err
    # A generator run with a classical method is a contradiction, not silently ignored.
    assert main(["pose", "train", "--images", str(empty), "--out", str(tmp_path / "r"), "--method", "blur",
                 "--model", str(student)]) == 2
    assert "--method ddpm only" in capsys.readouterr().err
    # A student run is not a pose model.
    assert main(["pose", "eval", "--images", str(empty), "--model", str(student)]) == 2
    err = capsys.readouterr().err
    assert "'student' artifact" in err and "'pose'" in err
    # A folder that is no artifact at all.
    assert main(["pose", "eval", "--images", str(empty), "--model", str(empty)]) == 2
    assert "not a toolkit artifact" in capsys.readouterr().err
    # Unreadable image file.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jpg").write_bytes(b"not a jpeg")
    assert main(["pose", "train", "--images", str(bad), "--out", str(tmp_path / "r2"), "--method", "blur"]) == 2
    assert "not a readable image" in capsys.readouterr().err


def test_images_without_people_are_refused(tmp_path, capsys):
    """A folder of real images without a usable person gives a clear error, not an empty model."""
    from toolkit import assets

    images = tmp_path / "street"
    images.mkdir()
    # vtest frame 100: a real street scene in which the teacher finds nobody.
    src = assets.sample_photo("vtest_100")
    (images / src.name).write_bytes(src.read_bytes())
    rc = main(["pose", "train", "--images", str(images), "--out", str(tmp_path / "r"), "--method", "blur",
               "--steps", "2", "--preset", "tiny", "--no-progress"])
    assert rc == 2 and "no usable person" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_predict_keypoints_returns_image_pixels(tiny_pose_run, pose_people):
    import cv2

    from toolkit.images import load_rgb
    from toolkit.pose import predict_keypoints

    net = PoseNet.from_pretrained(tiny_pose_run)
    path = next(p for p in pose_people if p.endswith("astronaut.png"))
    regions = D.build_regions({path: load_rgb(path)}, {path: D.labels_from_persons(pose_people[path])})
    view = D.eval_views(regions, 1)[0][0]
    pts, conf = predict_keypoints(net, view)
    big, _ = predict_keypoints(net, cv2.resize(view, (192, 192), interpolation=cv2.INTER_NEAREST))
    assert pts.shape == (7, 2) and conf.shape == (7,)
    np.testing.assert_allclose(big, 2 * pts, atol=1e-6)  # same model input, coordinates in the bigger image


@pytest.mark.slow
def test_quantize_accepts_a_pose_run(tiny_pose_run, tmp_path, capsys):
    """`toolkit quantize` takes the pose artifact unchanged: int8 QDQ ONNX calibrated on its training regions."""
    from toolkit.artifacts import read_manifest

    out = tmp_path / "pose-q"
    rc = main(["quantize", "--model", str(tiny_pose_run), "--target", "stm32h743", "--out", str(out),
               "--qat-steps", "2", "--calib", "4", "--eval", "4", "--batch-size", "2", "--no-tflite", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    m = read_manifest(out, expect_stage="quantized")
    assert m["model_kind"] == "pose" and m["input"]["shape"] == [1, 3, 96, 96]
    assert m["output"]["shape"] == [1, 7, 24, 24]
    step = m["steps"]["0"]
    assert (out / step["files"]["qdq_onnx"]).is_file()
    # None would mean the integer lowering rejected the graph: the C code could not run this model
    lsb = step["metrics"]["int8_reference_vs_onnxruntime_max_lsb"]
    assert lsb is not None and lsb <= 1, step["metrics"]


def test_pose_experiment_tables_recompute_from_saved_per_person_scores(tmp_path, capsys):
    import importlib.util

    from toolkit.pose.evaluate import PCK_ALPHA

    spec = importlib.util.spec_from_file_location("pose_experiment", ROOT / "benchmarks" / "pose_experiment.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    hits, counts, _ = _bootstrap_case(people=10)
    per_kp = np.repeat(counts[:, None], 7, axis=1)  # every person: `counts` views of each keypoint

    def row(method, h):  # h (seeds, people): the same hit count on every keypoint
        runs = [{"seed": k, "train_s": 1.0, "images_used": 5, "images_skipped": 0, "oks": 0.1,
                 "per_person": {f"hits@{PCK_ALPHA:g}": np.repeat(hk[:, None], 7, axis=1).tolist(),
                                "keypoints": per_kp.tolist()}} for k, hk in enumerate(h)]
        return {"method": method, "runs": runs}

    result = {"train_images": 5, "heldout_images": 3, "heldout_people": 10, "views_per_person": 4, "seeds": [0, 1, 2],
              "settings": {"preset": "tiny", "steps": 300},
              "rows": [row("original", hits), row("ddpm (teacher)", hits), row("mask", hits // 4),
                       row("untrained", hits[:1] // 10)]}
    exp.analyse(result)
    verdicts = {s["method"]: (s["pck@0.2"].get("verdict"), s["face_pck"].get("verdict")) for s in result["summary"]}
    assert verdicts == {"original": (None, None), "ddpm (teacher)": ("within noise",) * 2, "mask": ("worse",) * 2,
                        "untrained": (None, None)}  # untrained: one unseeded model, nothing to pair with
    assert [(c["method"], c["against"], c["pck@0.2"]["verdict"]) for c in result["generated_vs_classical"]] == [
        ("ddpm (teacher)", "mask", "better")]
    path = tmp_path / "result.json"
    path.write_text(json.dumps(result))
    assert exp.main(["--from-json", str(path)]) == 0
    table = capsys.readouterr().out
    assert table == exp.markdown_table(result) + "\n"
    assert "| mask | 5 / 0 |" in table and "| ddpm (teacher) − mask |" in table and "worse" in table
