"""The frame pipeline's independent verifier (toolkit.pose.heads): a face-presence net, trained apart from the
pose net, run on the output; a face it sees outside the replaced boxes fails the frame closed, on the host
reference and on the firmware alike (the qemu-m7 run is in test_sensor_multi.py)."""

import dataclasses
import json

import numpy as np

from toolkit.onboard import reference as R
from toolkit.pose import heads, multi


def test_a_cell_straddling_a_box_edge_is_a_face_left():
    lit = np.full((6, 6), -100, np.int64)
    lit[2, 2] = lit[2, 4] = 10  # cells (ix 2, iy 2) = pixels [8, 12)^2 and (4, 2) = x [16, 20), y [8, 12)
    assert heads.cells_left(lit, 5, [[8, 8, 12, 12]], 4) == [(4, 2)]  # exactly covered: not left
    assert heads.cells_left(lit, 5, [[9, 8, 20, 12]], 4) == [(2, 2)]  # one pixel column outside: left
    assert heads.cells_left(lit, 5, [[8, 8, 12, 12], [16, 8, 20, 12]], 4) == []
    assert heads.cells_left(lit, 11, [], 4) == []  # below the threshold: nothing


def test_training_targets_mark_the_cells_of_nose_and_eyes():
    t = heads.target_cells([np.array([[5.0, 9.0], [13.9, 9.5]]), np.array([[23.9, 0.0]])], 6, 4)
    assert sorted(zip(*np.nonzero(t))) == [(0, 5), (2, 1), (2, 3)]


def test_ignored_cells_and_the_cells_around_a_face_carry_no_loss():
    import torch

    pred = torch.zeros(1, 1, 4, 4)  # logit 0 everywhere: every cell costs log 2 (positives 8x)
    base = float(heads.loss(pred, [[]], 4))
    ignore = np.zeros((1, 16, 16), bool)
    ignore[0, :4, :4] = True  # one cell
    assert abs(float(heads.loss(pred, [[]], 4, ignore)) - base * 15 / 16) < 1e-5
    face = [np.array([[6.0, 6.0]])]  # cell (1, 1): itself weighted 8x, its 8 neighbours ignored
    assert abs(float(heads.loss(pred, [face], 4)) - base / 16 * (8 + 16 - 9)) < 1e-5


def test_composed_verifier_frames_hold_their_faces(quantized_verifier_run):
    from toolkit.pose.data import Regions

    regions = Regions.load(quantized_verifier_run.parent / "heads-tiny" / "train_regions.npz")
    imgs, faces, ignore = heads.compose_frames(regions, 12, np.random.default_rng(0))
    assert ignore.shape == (12, 96, 96) and not ignore.any()  # teacher labels: nothing ignored
    assert imgs.shape == (12, 96, 96, 3) and imgs.dtype == np.uint8
    for f in faces:
        for pts in f:
            assert ((pts >= 0) & (pts < 96)).all()  # only face points inside the frame are targets
    assert sum(len(f) for f in faces) >= 6


def test_threshold_is_calibrated_on_training_frames_of_the_int8_net(verified_pipeline, quantized_verifier_run):
    import math

    manifest = json.loads((quantized_verifier_run / "toolkit.json").read_text())
    source = manifest["source"]["manifest"]["verifier"]  # the float net's calibration, at training
    assert "training regions" in source["data"] and source["faces"] > 0
    assert source["threshold"] == source["lowest_face_score"] / source["margin"]
    assert source["replaced_faces"]["frames"] >= 1  # trained on the pipeline's own outputs too
    cal = manifest["verifier"]  # the int8 net's, at quantization: same frames (seed), int8 outputs
    assert cal["seed"] == source["seed"] and cal["faces"] == source["faces"]
    v = verified_pipeline.verifier
    t = v.graph.tensors[v.graph.output]
    assert v.min_value == cal["min_value"] <= cal["lowest_face_output"]  # every validation face lights a cell
    lowest_p = 1 / (1 + math.exp(-(cal["lowest_face_output"] - t.zero_point) * t.scale))
    assert abs(cal["threshold"] - lowest_p / cal["margin"]) < 1e-9
    # min_value is the threshold's logit rounded down to the output grid: never stricter than calibrated
    logit = math.log(cal["threshold"] / (1 - cal["threshold"]))
    assert (v.min_value - t.zero_point) * t.scale <= logit < (v.min_value + 1 - t.zero_point) * t.scale
    assert verified_pipeline.model_names[-1] == v.name == "verifier_step0"


def _only_first_person(pipe, people):
    """A stand-in multi-person pose net that always reports only the first person of `people` (teacher keypoints:
    nose and eyes), whatever the frame: it misses everyone else, in the first pass and in the verify pass."""
    kp, vis = people[0]
    s = pipe.heatmap_stride
    ix, iy = int(kp[0, 0] // s), int(kp[0, 1] // s)
    zp = pipe.heatmap_zero_point
    out = np.full((1, pipe.frame_size // s, pipe.frame_size // s, multi.OUT_CHANNELS), zp, np.int8)
    out[0, iy, ix, multi.CENTER] = min(zp + pipe.center_min + 20, 127)
    cell = np.array([(2 * ix + 1) * s * 128, (2 * iy + 1) * s * 128])
    for k in (0, 1, 2):
        if not vis[k]:
            continue
        out[0, iy, ix, multi.VIS0 + k] = min(zp + pipe.visible_min + 5, 127)
        for d in (0, 1):  # the int8 offset whose Q8 value is nearest the teacher's
            want = kp[k, d] * 256 - cell[d]
            out[0, iy, ix, multi.OFF0 + 2 * k + d] = int(np.abs(pipe.offset_q8 - want).argmin()) - 128
    return lambda q: out


def test_a_face_the_pose_net_missed_is_refused_by_the_verifier(verified_pipeline, multi_frames):
    """With a pose net that sees only the first person, the other faces stay in the output: the pose net's own
    verify pass (same net) passes the frame, the verifier sees a face outside the box and the frame fails
    closed; without the verifier the same frame would leave the device with a face."""
    refused = 0
    for label, frame, people in multi_frames:
        if len(people) < 2 or not people[0][1][:3].all():
            continue
        pipe = dataclasses.replace(verified_pipeline, pose_graph=_only_first_person(verified_pipeline, people))
        out0, info0 = R.anonymize_frame(frame, dataclasses.replace(pipe, verifier=None), 0)
        assert info0["status"] == R.STATUS_OK and info0["verify_left"] == [], label  # the pose verify passes it
        out, info = R.anonymize_frame(frame, pipe, 0)
        if info["status"] == R.STATUS_OK:
            continue  # the tiny verifier missed the other faces here (a leak the real one must not have)
        assert out is None and info["status"] == R.STATUS_VERIFY_FAILED and info["verifier_left"], label
        # the cells it saw are outside the replaced box, on the faces the stand-in pose net missed
        box = info["faces"][0]["box"]
        s = verified_pipeline.verifier.stride
        assert all(not (box[0] <= x * s and x * s + s <= box[2] and box[1] <= y * s and y * s + s <= box[3])
                   for x, y in info["verifier_left"])
        refused += 1
    assert refused >= 1, "the verifier refused no frame whose other faces the pose net missed"


def test_the_verifier_passes_frames_whose_found_faces_are_all_replaced(verified_pipeline, multi_frames):
    """Delivered frames are exactly the multi-person pipeline's deliveries that the verifier saw no face left
    in, and a delivered frame's output is unchanged by the verifier (it only reads)."""
    without = dataclasses.replace(verified_pipeline, verifier=None)
    for i, (label, frame, _) in enumerate(multi_frames):
        out, info = R.anonymize_frame(frame, verified_pipeline, i)
        out0, info0 = R.anonymize_frame(frame, without, i)
        if info0["status"] != R.STATUS_OK:
            assert info["status"] == info0["status"], label
            continue
        left = R.verify_heads(out0, verified_pipeline, [f["box"] for f in info0["faces"]])
        assert info["verifier_left"] == left, label
        if left:
            assert out is None and info["status"] == R.STATUS_VERIFY_FAILED, label
        else:
            assert info["status"] == R.STATUS_OK and np.array_equal(out, out0), label


def test_verified_pipeline_fits_stm32h743(verified_pipeline):
    from toolkit.onboard.bench import fit_checks
    from toolkit.onboard.config import config_flash_bytes, memory_plan

    arenas = {n: 128 * 1024 for n in verified_pipeline.model_names}  # generous stand-in for the planned arenas
    mem = memory_plan(verified_pipeline, arenas)
    weights = sum(g.weight_bytes() for g in verified_pipeline.graphs)
    f = fit_checks(verified_pipeline, mem, weights, ["stm32h743"])["stm32h743"]
    assert f["fits"], f
    assert f["flash_bytes"] == weights + config_flash_bytes(verified_pipeline)
    assert verified_pipeline.verifier.graph.weight_bytes() < weights


def test_a_pose_net_is_refused_as_the_verifier(quantized_multi_pose_run, quantized_student_run):
    import pytest

    from toolkit.onboard.config import build_pipeline

    with pytest.raises(ValueError, match="not a quantized face-presence verifier"):
        build_pipeline(quantized_multi_pose_run, quantized_student_run, "pose_step0", "student",
                       verifier_run=quantized_multi_pose_run)


def test_verifier_refusals_on_native_are_bit_exact(quantized_multi_pose_run, quantized_student_run,
                                                    quantized_verifier_run, tmp_path):
    """The firmware's verifier path that refuses: with its threshold at the bottom of the int8 range every cell is
    lit, so every frame that reaches the verifier has cells outside its boxes and must be refused (wiped, nothing
    read back), with the same cell count as the host reference."""
    import shutil

    from toolkit.cli import main

    strict = tmp_path / "verifier-q"
    shutil.copytree(quantized_verifier_run, strict)
    manifest = json.loads((strict / "toolkit.json").read_text())
    manifest["verifier"]["min_value"] = -128
    (strict / "toolkit.json").write_text(json.dumps(manifest))
    out = tmp_path / "bench" / "strict.json"
    rc = main(["bench", "--pipeline", "--pose", str(quantized_multi_pose_run), "--model", str(quantized_student_run),
               "--verifier", str(strict), "--board", "native", "--frames", "4", "--out", str(out),
               "--firmware-dir", str(tmp_path / "fw")])
    res = json.loads(out.read_text())
    rows = [r for r in res["results"] if "t_heads" in r]
    assert rows, "no frame reached the verifier"
    for r in rows:
        assert r["status_device"] == r["status_reference"] == "verify_failed", r["frame"]
        assert r["verifier_left"] == r["verifier_left_reference"] > 0, r["frame"]
    assert res["summary"]["all_bit_exact"] and res["summary"]["verifier_refusals"] == len(rows)
    assert rc == 0
