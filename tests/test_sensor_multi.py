"""Multi-person frame pipeline: every head the centre+offset pose net finds is replaced, more than max_faces or
a face the verify pass still sees fails the frame closed; the firmware on qemu-m7 agrees bit for bit."""

import dataclasses
import json

import numpy as np
import pytest

from toolkit.pose import multi
from toolkit.onboard import reference as R


def _decode_pipe(**kw):
    """A Pipeline with only what decode_centers_int8 reads (stride 4, zero point -10, offset LUT 16 px/unit)."""
    from toolkit.onboard.config import Pipeline

    base = dict(frame_size=16, pose_name="p", pose_graph=None, pose_source="", pose_input_lut=None,
                heatmap_zero_point=-10, heatmap_stride=4, heatmap_scale=0.05, visible_min=10, size=8,
                pixel_q16=None, sqrt_a0_q14=0, sqrt_1ma0_q14=0, gauss_q15=None, steps=[], out_pixel_lut=None,
                student_base="s", multi_person=True, center_min=6,
                offset_q8=((np.arange(-128, 128) + 10) * 64).astype(np.int32))  # (q - zp) * 0.25 px * 256
    base.update(kw)
    return Pipeline(**base)


def test_decode_centers_finds_each_local_maximum_once():
    pipe = _decode_pipe()
    out = np.full((4, 4, multi.OUT_CHANNELS), -10, np.int8)
    out[1, 1, 0] = 20  # a head
    out[1, 2, 0] = 20  # ... whose plateau neighbour after it in raster order is not a second head
    out[3, 3, 0] = 0  # a second head (10 above zp >= center_min 6)
    out[0, 3, 0] = -5  # below center_min: nobody
    out[1, 1, multi.VIS0:multi.OFF0] = [30, 30, -10, -5, -10, 30, 30]  # visible: q - zp >= 10
    out[1, 1, multi.OFF0:multi.OFF0 + 2] = [-6, 2]  # nose offset: (-6 + 10) * 0.25 = 1 px right, 3 px down
    people = R.decode_centers_int8(out, pipe)
    assert len(people) == 2
    kp, peaks, vis = people[0]
    # cell (1, 1) centre = 6 px; + offsets
    assert kp[0].tolist() == [6 * 256 + 256, 6 * 256 + 3 * 256]
    assert vis.tolist() == [True, True, False, False, False, True, True] and peaks[0] == 30
    assert people[1][0][0].tolist() == [14 * 256, 14 * 256]  # offsets at the zero point: the cell centre
    # a strictly higher neighbour suppresses a cell
    out[2, 2, 0] = 30
    assert [p[0][0].tolist() for p in R.decode_centers_int8(out, pipe)] == [[10 * 256, 10 * 256]]


def test_float_and_int8_multi_decoding_agree(multi_pipeline, multi_frames):
    """The int8 decoder on the quantized net's output finds the people the float decoder finds on the same
    output dequantized, at the same places up to the offset LUT's rounding."""
    pipe = multi_pipeline
    zp, scale = pipe.heatmap_zero_point, pipe.heatmap_scale
    for label, frame, _ in multi_frames:
        q = R.run_network(pipe.pose_graph, pipe.pose_input_lut[frame.astype(np.int64)][None])[0]
        got = R.decode_centers_int8(q, pipe)
        deq = ((q.astype(np.float64) - zp) * scale).transpose(2, 0, 1)
        want = multi.decode(deq, pipe.heatmap_stride, center_min=(pipe.center_min - 0.5) * scale,
                            visible_min=(pipe.visible_min - 0.5) * scale)
        assert len(got) == len(want), label
        for (kp, _, vis), (fkp, fvis, _) in zip(got, want):
            assert np.abs(kp / 256 - fkp).max() <= 1 / 256 + 1e-9, label
            assert vis.tolist() == fvis.tolist(), label


def test_every_found_face_is_replaced_and_nothing_else(multi_pipeline, multi_frames):
    pipe = multi_pipeline
    delivered = 0
    for i, (label, frame, _) in enumerate(multi_frames):
        out, info = R.anonymize_frame(frame, pipe, i)
        if out is None:
            assert info["status"] in (R.STATUS_NO_FACE, R.STATUS_TOO_MANY, R.STATUS_VERIFY_FAILED), label
            continue
        delivered += 1
        assert info["people"] == len(info["faces"]) >= 1
        covered = np.zeros(frame.shape[:2], bool)
        for f in info["faces"]:
            x0, y0, x1, y1 = f["box"]
            covered[max(y0, 0):y1, max(x0, 0):x1] = True
            assert R.in_box(f["keypoints_q8"][0], f["box"]), label  # the box is on the nose
        assert np.array_equal(out[~covered], frame[~covered]), f"{label}: pixels outside the boxes changed"
        assert (out[covered] != frame[covered]).any(), label
        assert info["verify_left"] == []
    assert delivered >= 1, "the multi-person pose net delivered no frame at all"


def test_more_people_than_max_faces_fail_closed(multi_pipeline, multi_frames):
    seen = 0
    for label, frame, _ in multi_frames:
        _, info = R.anonymize_frame(frame, multi_pipeline, 0)
        if info["people"] < 2:
            continue
        one = dataclasses.replace(multi_pipeline, max_faces=info["people"] - 1)
        out, info1 = R.anonymize_frame(frame, one, 0)
        assert out is None and info1["status"] == R.STATUS_TOO_MANY, label
        seen += 1
    assert seen, "no frame with two or more people found by the net"


def test_verify_refuses_a_frame_with_a_face_left(multi_pipeline, multi_frames):
    """The verify pass runs the pose net on the output: an unreplaced frame (no boxes) still shows its
    people, so it must report them; a frame where every found face was replaced reports none."""
    for label, frame, _ in multi_frames:
        people = R.find_people(frame, multi_pipeline)
        left = R.verify_output(frame, multi_pipeline, [])
        assert len(left) == len(people), label
        # with a box over every nose, nothing is left
        boxes = [[int(kp[0, 0]) // 256 - 1, int(kp[0, 1]) // 256 - 1, int(kp[0, 0]) // 256 + 2,
                  int(kp[0, 1]) // 256 + 2] for kp, _, _ in people]
        assert R.verify_output(frame, multi_pipeline, boxes) == []


def test_blank_frame_fails_closed(multi_pipeline):
    from toolkit.onboard.frames import blank_frame

    out, info = R.anonymize_frame(blank_frame(96), multi_pipeline, 0)
    assert out is None and info["status"] == R.STATUS_NO_FACE and info["gate"] == R.GATE_NO_PERSON


def test_multi_person_pipeline_fits_stm32h743(multi_pipeline, quantized_multi_pose_run, quantized_student_run):
    from toolkit.onboard.bench import fit_checks
    from toolkit.onboard.config import memory_plan

    arenas = {n: 128 * 1024 for n in multi_pipeline.model_names}  # generous stand-in for the planned arenas
    mem = memory_plan(multi_pipeline, arenas)
    weights = sum(g.weight_bytes() for g in [multi_pipeline.pose_graph] + [s.graph for s in multi_pipeline.steps])
    f = fit_checks(multi_pipeline, mem, weights, ["stm32h743"])["stm32h743"]
    assert f["fits"], f


def test_multi_person_frames_on_qemu_m7_are_bit_exact(quantized_multi_pose_run, quantized_student_run,
                                                       quantized_verifier_run, tmp_path, capsys):
    """`toolkit bench --pipeline` with the multi-person net and the verifier: frames of 1-4 people from the bundled
    photos and a blank one; status, every face's keypoints / box / crop, the verifier's cells left and the output
    frame equal the host reference."""
    from toolkit.cli import main

    out = tmp_path / "bench" / "multi.json"
    rc = main(["bench", "--pipeline", "--pose", str(quantized_multi_pose_run), "--model", str(quantized_student_run),
               "--verifier", str(quantized_verifier_run), "--board", "qemu-m7", "--frames", "4", "--seed", "3", "--timeout", "600", "--out", str(out),
               "--firmware-dir", str(tmp_path / "fw")])
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())
    s = res["summary"]
    assert s["all_bit_exact"] and s["fail_closed"] and s["memory_matches_device"], printed
    rows = res["results"]
    assert [r["people_truth"] for r in rows if r["person"]] == [1, 2, 3, 4]
    assert any(r["people_found"] >= 2 for r in rows), "the net found no multi-person frame: nothing multi tested"
    names = [st["stage"] for st in s["stages"]]
    assert names[-2:] == ["verify", "heads"] and "paste" in names
    assert res["pipeline"]["models"][-1] == "verifier_step0"
    # the verifier ran on the device (a frame reached it) and agreed with the reference on every frame
    ran = [r for r in rows if r.get("t_heads", 0) > 0]
    assert ran and all(r["verifier_left"] == r["verifier_left_reference"] for r in rows), printed
    # exit status 1 only when a delivered frame kept a face (checked against the teacher): report, not hide
    assert rc == (1 if s["delivered_with_face_left"] else 0), printed


def test_letterbox_keeps_the_aspect_ratio():
    from toolkit.images import letterbox

    img = np.full((50, 200, 3), 200, np.uint8)
    out, scale, offset = letterbox(img, 96)
    assert scale == 96 / 200 and list(offset) == [0, 36]
    assert out.shape == (96, 96, 3)
    assert (out[:30] == 0).all() and (out[-30:] == 0).all()  # bars above and below: 200x50 -> 96x24
    assert (out[36:60] == 200).all()


def test_frames_from_a_folder_on_native(quantized_multi_pose_run, quantized_student_run, tmp_path, sample_photos):
    """`--frames-from DIR`: the user's images of any size, each with its status, reason, faces and stage ticks
    in the JSON and its frame in / out as PNG; a refused frame's out is all zero."""
    from toolkit import assets
    from toolkit.cli import main
    from toolkit.images import load_rgb, save_rgb

    src = tmp_path / "frames"
    src.mkdir()
    save_rgb(load_rgb(assets.sample_photo("astronaut")), src / "astronaut.png")  # 512x512
    save_rgb(load_rgb(assets.sample_photo("messi5")), src / "messi.png")  # wide
    save_rgb(np.full((40, 70, 3), 90, np.uint8), src / "wall.png")  # nobody
    out = tmp_path / "user" / "run.json"
    rc = main(["bench", "--pipeline", "--pose", str(quantized_multi_pose_run), "--model", str(quantized_student_run),
               "--board", "native", "--frames-from", str(src), "--out", str(out),
               "--firmware-dir", str(tmp_path / "fw")])
    res = json.loads(out.read_text())
    rows = {r["frame"]: r for r in res["results"]}
    assert {"astronaut", "messi", "wall"} <= set(rows)
    assert rows["wall"]["status_device"] != "ok" and rows["wall"]["reason"]
    for r in res["results"]:
        assert r["frame_bit_exact"] and r["keypoints_exact"], r["frame"]
        assert "t_pose" in r and isinstance(r["faces"], list)
        if r["status_device"] == "ok":
            assert r["boxes"] and all(len(f["keypoints_q8"]) == 7 for f in r["faces"])
    pngs = sorted(p.name for p in (out.parent / "run_frames").iterdir())
    assert len(pngs) == 2 * len(rows) and all(p.endswith(("_in.png", "_out.png")) for p in pngs)
    assert rc in (0, 1)  # 1 only when a check failed; bit-exactness is asserted above
