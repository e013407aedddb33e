"""On-device anonymization pipeline: the host integer reference (toolkit.onboard) and the firmware running it
under QEMU bit-exactly (`toolkit bench --pipeline`)."""

import dataclasses
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from toolkit.onboard import reference as R

REPO = Path(__file__).resolve().parent.parent


def _faces(pipe, frames, seed=3):
    out = []
    for label, f in frames:
        got, info = R.anonymize_frame(f, pipe, seed)
        if got is not None:
            out.append((label, f, got, info))
    return out


# ------------------------------------------------------------------------------------------ integer helpers


def test_crop_box_is_expanded_crop_box_in_integers():
    from toolkit.crop import expanded_crop_box

    rng = np.random.default_rng(0)
    for _ in range(2000):
        x0, y0 = (int(v) for v in rng.integers(-40, 120, 2))
        w, h = (int(v) for v in rng.integers(1, 90, 2))
        box = (x0, y0, x0 + w, y0 + h)
        cx, cy, side = R.crop_box(box)
        assert (cx, cy, cx + side, cy + side) == expanded_crop_box(box)


def test_face_box_contains_the_float_rule_box():
    """The integer box (Q8 keypoints, floor sqrt, outward rounding) covers `_box_from_keypoints`' box."""
    from toolkit.detect.pipeline import _box_from_keypoints

    rng = np.random.default_rng(1)
    for _ in range(500):
        kp_q8 = rng.integers(0, 96 * 256, (7, 2))
        visible = rng.random(7) < 0.7
        box = R.face_box(kp_q8, visible, cover_head=False)
        fbox = _box_from_keypoints(kp_q8 / 256.0, np.where(visible, 1.0, 0.0))
        assert box[0] <= fbox[0] + 0.02 and box[1] <= fbox[1] + 0.02
        assert box[2] >= fbox[2] - 0.02 and box[3] >= fbox[3] - 0.02
        # and not much larger: at most one pixel of outward rounding per side
        assert box[2] - box[0] <= (fbox[2] - fbox[0]) + 2
        # growing it to cover the head keypoints only ever grows it, about the same nose
        grown = R.face_box(kp_q8, visible)
        assert grown[0] <= box[0] and grown[1] <= box[1] and grown[2] >= box[2] and grown[3] >= box[3]
        assert abs((grown[0] + grown[2]) - (box[0] + box[2])) <= 1 and abs((grown[1] + grown[3]) - (box[1] + box[3])) <= 1


def test_face_box_holds_every_visible_head_keypoint_with_a_margin():
    rng = np.random.default_rng(2)
    for _ in range(2000):
        kp_q8 = rng.integers(-10 * 256, 106 * 256, (7, 2))
        visible = rng.random(7) < 0.6
        x0, y0, x1, y1 = R.face_box(kp_q8, visible)
        margin = R.head_scale(kp_q8, visible) // 4
        for k in (R.NOSE, R.L_EYE, R.R_EYE, R.L_EAR, R.R_EAR):
            if visible[k] or k == R.NOSE:
                kx, ky = (int(v) for v in kp_q8[k])
                assert 256 * x0 <= kx - margin and kx + margin <= 256 * x1, (k, kp_q8.tolist(), visible)
                assert 256 * y0 <= ky - margin and ky + margin <= 256 * y1, (k, kp_q8.tolist(), visible)


def test_head_gate_rules():
    """Squared-distance gate on hand-placed keypoints (Q8, 96 px frame, eyes 10 px apart)."""
    kp = np.array([[48, 44], [53, 40], [43, 40], [57, 42], [39, 42], [66, 66], [30, 66]], np.int64) * 256
    vis = np.ones(7, bool)
    assert R.head_scale(kp, vis) == R.isqrt(18 ** 2 * 256 ** 2)  # ear distance, the largest term
    assert R.head_gate(kp, vis) == R.GATE_OK
    assert R.head_gate(kp, np.r_[False, vis[1:]]) == R.GATE_NO_NOSE
    assert R.head_gate(kp, np.r_[True, False, False, vis[3:]]) == R.GATE_NO_EYE
    assert R.head_gate(kp, np.r_[True, True, False, False, False, False, False]) == R.GATE_OK  # 6.4 px <= 8 px floor
    # nose on the neck (between the shoulders): every eye farther than 1.5 head scales
    neck = kp.copy()
    neck[R.NOSE] = [48 * 256, 70 * 256]
    assert R.head_gate(neck, vis) == R.GATE_IMPLAUSIBLE
    # the measured astronaut case: the whole head on the neck, consistent in itself, shoulders far away
    astro = np.round(np.array([[38.5, 61.9], [41.9, 61.3], [37.9, 59.3], [42.3, 62.2], [46.2, 62.6],
                               [92.4, 70.3], [86.0, 70.6]]) * 256).astype(np.int64)
    assert R.head_gate(astro, vis) == R.GATE_IMPLAUSIBLE
    assert R.head_gate(astro, np.r_[vis[:5], False, False]) == R.GATE_OK  # without shoulders, nothing contradicts it
    # each threshold is inclusive: a keypoint at exactly num/den floor scales passes, one Q8 step farther not
    s = R.GATE_SCALE_FLOOR_Q8
    for k, (num, den) in R.GATE_RATIO.items():
        edge = np.zeros((7, 2), np.int64)
        edge[R.L_EYE] = [0, 1]  # the eye the gate needs (unless k is one), next to the nose
        vis = np.zeros(7, bool)  # no visible pair: the scale is the floor
        vis[[R.NOSE, k if k in (R.L_EYE, R.R_EYE) else R.L_EYE, k]] = True
        assert s * num % den == 0
        edge[k] = [0, -s * num // den]
        assert R.head_gate(edge, vis) == R.GATE_OK, k
        edge[k] = [0, -s * num // den - 1]
        assert R.head_gate(edge, vis) == R.GATE_IMPLAUSIBLE, k


def test_head_gate_accepts_the_teacher_on_every_real_frame(sensor_teacher_frames):
    """BlazePose keypoints of every bundled photo's person, in 96 px frame coordinates: one head each."""
    assert len(sensor_teacher_frames) >= 4
    for label, _, kp, vis in sensor_teacher_frames:
        assert R.head_gate(kp, vis) == R.GATE_OK, label
        # with room to spare: the gate still passes with every threshold at two thirds
        s = R.head_scale(kp, vis)
        for k, (num, den) in R.GATE_RATIO.items():
            if vis[k]:
                d2 = int(((kp[k] - kp[R.NOSE]) ** 2).sum())
                assert 9 * den * den * d2 <= 4 * num * num * s * s, (label, k)
        # a nose moved down onto the neck, or across to a shoulder, is refused
        for target in ((kp[R.L_SH] + kp[R.R_SH]) // 2, kp[R.L_SH], kp[R.R_SH]):
            moved = kp.copy()
            moved[R.NOSE] = target
            assert R.head_gate(moved, vis) == R.GATE_IMPLAUSIBLE, label


def _pose_standin(pipe, kp_px):
    """A pose network stand-in whose int8 heatmaps peak (127, zero point elsewhere) at the given pixels."""
    st = pipe.heatmap_stride
    n = pipe.frame_size // st

    def pose(q):
        hm = np.full((1, n, n, 7), pipe.heatmap_zero_point, np.int8)
        for k, (x, y) in enumerate(kp_px):
            hm[0, min(int(y) // st, n - 1), min(int(x) // st, n - 1), k] = 127
        return hm
    return pose


def test_pipeline_refuses_a_misplaced_nose_and_covers_the_head(sensor_pipeline, sensor_teacher_frames):
    """End to end on real frames with the real student: the teacher's keypoints give an anonymized face whose
    box holds every head keypoint; the same keypoints with the nose on the neck fail closed."""
    for label, frame, kp, vis in sensor_teacher_frames[:2]:
        px = kp / 256.0
        pipe = dataclasses.replace(sensor_pipeline, pose_graph=_pose_standin(sensor_pipeline, px))
        out, info = R.anonymize_frame(frame, pipe, 5)
        assert out is not None and info["status"] == "ok" and info["gate"] == R.GATE_OK, label
        x0, y0, x1, y1 = info["box"]
        got = np.asarray(info["keypoints_q8"])
        for k in range(5):
            assert 256 * x0 <= got[k, 0] <= 256 * x1 and 256 * y0 <= got[k, 1] <= 256 * y1, (label, k)
            # the face region around the keypoint was regenerated, not passed through
            y, x = int(got[k, 1]) // 256, int(got[k, 0]) // 256
            assert (out[y, x] != frame[y, x]).any(), (label, k)
        neck = px.copy()
        neck[R.NOSE] = (px[R.L_SH] + px[R.R_SH]) / 2
        pipe = dataclasses.replace(sensor_pipeline, pose_graph=_pose_standin(sensor_pipeline, neck))
        before = frame.copy()
        out, info = R.anonymize_frame(frame, pipe, 5)
        assert out is None and info["status"] == "no_face" and info["gate"] == R.GATE_IMPLAUSIBLE, label
        assert "box" not in info and np.array_equal(frame, before)


def test_rounding_helpers():
    assert R.rshr(np.array([5, -5, 3, -3, 6, -6]), 1).tolist() == [3, -3, 2, -2, 3, -3]
    assert [R.div_round(7, 2), R.div_round(-7, 2), R.div_round(5, 3), R.div_round(-4, 3)] == [4, -4, 2, -1]
    assert [R.floor_div(-1, 2), R.ceil_div(-1, 2), R.ceil_div(7, 2)] == [-1, 0, 4]


def test_colour_split_constants_are_the_hosts():
    """tk_frame.h's skin rule is the host's (toolkit.diffusion.prior); the integer YCrCb follows OpenCV's."""
    import re

    import cv2

    from toolkit.diffusion import prior as P

    h = (REPO / "firmware" / "src" / "app" / "tk_frame.h").read_text()
    c = {k: int(v) for k, v in re.findall(r"#define TK_FRAME_SKIN_(\w+) (\d+)", h)}
    assert (c["CR_MIN"], c["CR_MAX"], c["CB_MIN"], c["CB_MAX"]) == (*P.SKIN_CR, *P.SKIN_CB)
    assert c["MIN"] == P.MIN_SKIN_PIXELS and (c["DEFAULT_CR"], c["DEFAULT_CB"]) == R.DEFAULT_CHROMA
    px = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    ycc = cv2.cvtColor(px, cv2.COLOR_RGB2YCrCb).astype(np.int64)
    assert np.abs(R.luma_u8(px) - ycc[..., 0]).max() <= 1
    # a pixel put into its own chroma comes back (up to the rounding of the two conversions)
    cr, cb = R.chroma_u8(px)
    assert max(np.abs(cr - ycc[..., 1]).max(), np.abs(cb - ycc[..., 2]).max()) <= 1
    ok = (np.abs(cr - 128) < 40) & (np.abs(cb - 128) < 40)  # away from the clamp
    back = np.stack([R.colour_pixels(p, (int(r), int(b))) for p, r, b in zip(px[ok], cr[ok], cb[ok])])
    assert np.abs(back.astype(np.int64) - px[ok]).max() <= 3


def test_device_noise_is_a_seeded_unit_gaussian():
    z = R.noise_q16(1, 6000) / 65536.0
    assert abs(z.mean()) < 0.05 and 0.95 < z.std() < 1.05
    assert np.abs(z).max() <= 6.0
    assert np.array_equal(R.noise_q16(1, 100), R.noise_q16(1, 100))
    assert not np.array_equal(R.noise_q16(1, 100), R.noise_q16(2, 100))


# ------------------------------------------------------------------------------------------ host reference


def test_reference_replaces_exactly_the_face_box(sensor_pipeline, sensor_frames):
    pipe = sensor_pipeline
    faces = _faces(pipe, sensor_frames)
    assert len(faces) >= 2, "the pose model found fewer than two faces on the real frames"
    S = pipe.size
    for label, frame, out, info in faces:
        x0, y0, x1, y1 = info["box"]
        inside = np.zeros(frame.shape[:2], bool)
        inside[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
        assert inside.any(), label
        # outside the face box: byte-identical
        assert np.array_equal(out[~inside], frame[~inside]), label
        # inside: every pixel comes from a crop pixel the student generated (unknown in the mask)
        cx, cy, side = info["crop"]
        ys, xs = np.nonzero(inside)
        iy = np.clip(((2 * (ys - cy) + 1) * S) // (2 * side), 0, S - 1)
        ix = np.clip(((2 * (xs - cx) + 1) * S) // (2 * side), 0, S - 1)
        assert not info["known"][iy, ix].any(), f"{label}: a face pixel was pasted from a known crop pixel"
        chroma = info["faces"][0]["chroma"]
        pasted = info["generated"] if chroma is None else R.colour_pixels(info["generated"], chroma)
        assert np.array_equal(out[ys, xs], pasted[iy, ix])
        # the face really changes (the generated pixels are not the input's)
        assert (out[inside] != frame[inside]).any(axis=-1).mean() > 0.5, label
        assert info["crc"] == R.zlib.crc32(out.tobytes())


def _centre_chroma(img, box):
    """Mean (Cr, Cb) (OpenCV YCrCb) of the middle half of a face box: the face's skin."""
    import cv2

    x0, y0, x1, y1 = (max(v, 0) for v in box)
    w, h = x1 - x0, y1 - y0
    patch = np.ascontiguousarray(img[y0 + h // 4:y1 - h // 4, x0 + w // 4:x1 - w // 4])
    return cv2.cvtColor(patch, cv2.COLOR_RGB2YCrCb).reshape(-1, 3)[:, 1:].astype(np.float64).mean(0)


def test_gray_trained_student_is_pasted_in_the_skin_colour_of_its_context(sensor_pipeline, sensor_frames,
                                                                            quantized_student_run, tmp_path):
    """A student trained on gray faces (face prior colour "luma", as the demo's LFW-trained one) draws gray
    faces. Without the colour split the device pasted them as grey blocks into colour frames (box chroma
    neutral, 128/128: 44.9 levels |Cr|+|Cb| from the real face on the demo's head-and-shoulders frames); the host
    colours them from the context's skin (prior.colour_from_context). The device now does the same in integers:
    the student sees the crop in gray, the face keeps its luma in the mean chroma of the context's skin pixels
    (16.9 levels; benchmarks/frame_colour.py, docs/firmware.md)."""
    import shutil

    from toolkit.diffusion.prior import load_prior
    from toolkit.onboard.config import build_pipeline, c_sources

    # the flag comes from the student's face prior, and reaches the C config
    assert not sensor_pipeline.luma_student  # the fixture's generator was trained on colour photos
    luma_run = tmp_path / "student-luma"
    shutil.copytree(quantized_student_run, luma_run)
    prior = load_prior(luma_run)
    prior.colour = "luma"
    prior.save(luma_run)
    pipe = build_pipeline(sensor_pipeline.meta["pose_run"], luma_run, "pose_step0", "student")
    assert pipe.luma_student and json.loads(c_sources(pipe)["pipeline_config.json"])["luma_student"]
    # the colour of what is pasted, before the verify pass judges it (same gate, same frames both ways)
    rgb_faces = _faces(dataclasses.replace(sensor_pipeline, verify=False), sensor_frames)
    faces = _faces(dataclasses.replace(pipe, verify=False), sensor_frames)
    assert len(faces) >= 2 and [f[0] for f in faces] == [f[0] for f in rgb_faces]
    skin = 0
    for (label, frame, out, info), (_, _, _, rgb_info) in zip(faces, rgb_faces):
        face = info["faces"][0]
        assert info["box"] == rgb_info["box"], label  # same keypoints, same box: only the colour differs
        crop = info["crop_pixels"]
        assert (crop[..., 0] == crop[..., 1]).all() and (crop[..., 1] == crop[..., 2]).all(), label
        skin += tuple(face["chroma"]) != R.DEFAULT_CHROMA
        real = _centre_chroma(frame, info["box"])
        err = np.abs(_centre_chroma(out, info["box"]) - real).sum()
        gray = np.abs(128.0 - real).sum()  # the grey block's error
        assert err < 0.6 * gray, f"{label}: face chroma {err:.1f} levels from the real face's (grey: {gray:.1f})"
    assert skin >= 1, "no frame's context showed skin: every face took the default chroma"


def test_reference_is_deterministic_per_seed(sensor_pipeline, sensor_frames):
    _, frame, out, info = _faces(sensor_pipeline, sensor_frames)[0]
    again, info2 = R.anonymize_frame(frame, sensor_pipeline, 3)
    other, info3 = R.anonymize_frame(frame, sensor_pipeline, 4)
    assert np.array_equal(out, again) and info2["crc"] == info["crc"]
    assert info3["box"] == info["box"]  # same keypoints, same box; other noise, other face
    assert not np.array_equal(out, other)
    assert not np.shares_memory(out, frame)


def test_no_face_fails_closed(sensor_pipeline, sensor_frames):
    from toolkit.onboard.frames import blank_frame, landscape_frame

    for frame in (blank_frame(), landscape_frame()):
        before = frame.copy()
        out, info = R.anonymize_frame(frame, sensor_pipeline, 0)
        assert out is None and info["status"] == "no_face" and "box" not in info
        assert np.array_equal(frame, before)  # the input is never modified
    # a real person whose nose the model cannot confirm is also refused, not passed through
    strict = dataclasses.replace(sensor_pipeline, visible_min=10**6)
    for _, frame in sensor_frames:
        out, info = R.anonymize_frame(frame, strict, 0)
        assert out is None and info["status"] == "no_face"


def test_bad_frames_are_refused(sensor_pipeline):
    with pytest.raises(ValueError, match="96x96x3 uint8"):
        R.anonymize_frame(np.zeros((64, 64, 3), np.uint8), sensor_pipeline, 0)
    with pytest.raises(ValueError, match="96x96x3 uint8"):
        R.anonymize_frame(np.zeros((96, 96, 3), np.float32), sensor_pipeline, 0)
    with pytest.raises(ValueError, match="32-bit"):
        R.anonymize_frame(np.zeros((96, 96, 3), np.uint8), sensor_pipeline, -1)


def test_integer_student_follows_the_float_student(sensor_pipeline, sensor_frames, tiny_student_run):
    """Same crop, mask, keypoint maps and noise through the float student and the integer pipeline: the
    generated pixels agree to int8 precision (measured 1.04 levels mean, 4 max), far closer than the float
    student with other noise (over 3x further): the integer glue follows `sample_student`."""
    import torch

    from toolkit.distill.inpainter import load_student_inpainter, sample_student

    pipe = sensor_pipeline
    label, frame, _, info = _faces(pipe, sensor_frames)[0]
    S = pipe.size
    img, known, maps, _, _ = R.student_inputs(frame, pipe, np.asarray(info["keypoints_q8"]), info["visible"],
                                           info["box"], info["crop"], 3)
    z = R.noise_q16(3, S * S * 3).reshape(S, S, 3) / 65536.0
    inp = load_student_inpainter(tiny_student_run)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).permute(2, 0, 1)[None]
    x0, _ = sample_student(inp.student, inp.alphas, t(img / 127.5 - 1.0), t(known[..., None]), t(maps / 32768.0), t(z))
    ref = ((x0[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255)
    unknown = ~known
    err = np.abs(ref[unknown] - info["generated"][unknown].astype(np.float64))
    assert err.mean() < 2.0 and err.max() <= 6, f"{label}: integer pipeline drifts from the float student " \
        f"(mean {err.mean():.1f}, max {err.max():.0f} levels)"
    z2 = R.noise_q16(99, S * S * 3).reshape(S, S, 3) / 65536.0
    x0b, _ = sample_student(inp.student, inp.alphas, t(img / 127.5 - 1.0), t(known[..., None]), t(maps / 32768.0), t(z2))
    other = ((x0b[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255)
    assert np.abs(other[unknown] - ref[unknown]).mean() > 3 * err.mean()


# ------------------------------------------------------------------------------------------ C config


def test_c_config_is_deterministic_and_linked_only_with_its_models(sensor_pipeline, tmp_path):
    from toolkit.bench.firmware import configured_models, write_registry
    from toolkit.onboard.config import c_sources, write_c_config

    a, b = c_sources(sensor_pipeline), c_sources(sensor_pipeline)
    assert a == b
    c = a["pipeline_config.c"]
    assert "&pose_step0_model" in c and "&student_step1_model" in c and "gauss_q15" in c
    assert "float" not in c.split("*/", 1)[1]  # the device gets integer tables only
    gen = tmp_path / "generated"
    write_c_config(sensor_pipeline, gen)
    assert configured_models(gen) == sensor_pipeline.model_names
    write_registry(gen)  # its models are not exported here: the pipeline must not be linked
    assert "tk_pipeline = NULL;" in (gen / "models.c").read_text()


def test_pipeline_memory_fits_the_target_boards(sensor_pipeline):
    from toolkit.onboard.bench import fit_checks
    from toolkit.deploy.codegen import plan_arena
    from toolkit.onboard.config import memory_plan

    arenas = {sensor_pipeline.pose_name: plan_arena(sensor_pipeline.pose_graph)["size"],
              **{s.name: plan_arena(s.graph)["size"] for s in sensor_pipeline.steps}}
    mem = memory_plan(sensor_pipeline, arenas)
    assert mem["frame"] == 96 * 96 * 3 and mem["model_in"] >= 96 * 96 * 3
    assert mem["total"] >= mem["frame"] + mem["arena"] + mem["scratch"]
    weights = sensor_pipeline.pose_graph.weight_bytes() + sum(s.graph.weight_bytes() for s in sensor_pipeline.steps)
    fits = fit_checks(sensor_pipeline, mem, weights, ["stm32h743", "esp32s3", "stm32f405"])
    assert fits["stm32h743"]["fits"] and fits["esp32s3"]["fits"]
    assert fits["stm32h743"]["ram_bytes"] == mem["total"] and fits["stm32h743"]["flash_bytes"] > weights
    # a board too small is reported as not fitting, with the reason
    big = {**mem, "total": 10 * 2**20}
    f = fit_checks(sensor_pipeline, big, weights, ["stm32h743"])["stm32h743"]
    assert not f["fits"] and "does not fit" in f["message"]


# ------------------------------------------------------------------------------------------ on QEMU


def test_cli_errors(quantized_student_run, tmp_path):
    from toolkit.cli import main

    out = str(tmp_path / "p.json")
    assert main(["bench", "--pipeline", "--model", str(quantized_student_run), "--board", "native", "--out", out]) == 2
    assert main(["bench", "--pipeline", "--pose", str(quantized_student_run), "--model", str(quantized_student_run),
                 "--board", "native", "--out", out]) == 2
    assert main(["bench", "--pose", str(tmp_path), "--model", str(quantized_student_run), "--board", "native",
                 "--out", out]) == 2


def test_pipeline_on_qemu_m7_is_bit_exact(quantized_pose_run, quantized_student_run, tmp_path, capsys):
    from toolkit.cli import main

    generated = REPO / "firmware" / "generated"
    before = {f.name: f.read_bytes() for f in generated.iterdir()} if generated.is_dir() else None
    out = tmp_path / "bench" / "pipe.json"
    rc = main(["bench", "--pipeline", "--pose", str(quantized_pose_run), "--model", str(quantized_student_run),
               "--board", "qemu-m7", "--frames", "4", "--seed", "11", "--out", str(out),
               "--firmware-dir", str(tmp_path / "fw")])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    res = json.loads(out.read_text())
    s = res["summary"]
    assert s["all_bit_exact"] and s["fail_closed"] and s["memory_matches_device"]
    assert s["faces_found"] >= 2
    rows = res["results"]
    assert sum(r["person"] and r["frame_bit_exact"] and r["status_device"] == "ok" for r in rows) >= 2
    assert [r["status_device"] for r in rows if not r["person"]] == ["no_face"]
    # per-stage timing: every stage measured, shares summing to one
    names = [st["stage"] for st in s["stages"]]
    assert names == ["preprocess", "pose", "decode", "crop", "step0", "step1", "paste", "verify"]
    # (instructions = ticks x 40 under -icount: that ratio is measured by test_firmware's test_unit_tests_qemu)
    assert all(st["mean"] > 0 for st in s["stages"])
    # shares of the mean ok frame; refused frames also count in the early stages' means (their decode stage
    # has the head gate but no face box), so the sum is 1 only up to a few hundred instructions
    assert math.isclose(sum(st["share"] for st in s["stages"]), 1.0, rel_tol=1e-4)
    assert s["stages"][1]["mean"] > s["stages"][0]["mean"]  # the network costs more than a table lookup
    # fit figures for both product boards
    for board in ("stm32h743", "esp32s3"):
        f = s["fit"][board]
        assert f["fits"] and 0 < f["ram_bytes"] <= f["ram_budget_bytes"] and 0 < f["flash_bytes"] <= f["flash_budget_bytes"]
    assert out.with_suffix(".csv").is_file() and out.with_suffix(".png").stat().st_size > 1000
    assert "| pose |" in printed and "fit stm32h743: fits" in printed
    # the repository's firmware/ was not touched
    assert ({f.name: f.read_bytes() for f in generated.iterdir()} if generated.is_dir() else None) == before
    status = subprocess.run(["git", "status", "--porcelain", "--", "firmware/generated"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    assert "pipeline_config" not in status


# ------------------------------------------------------------------------------------------ C twin, edge cases


def _tiny_pipeline(luma: bool = True):
    """Python twin of firmware/test/support/tiny_pipeline.c (same tables, same stand-in networks; `luma` is
    its TINY_LUMA)."""
    from toolkit.onboard.config import Pipeline, StepConst

    def pose(q):  # heatmap cell (cy, cx) of keypoint k = red channel of pixel (4cy + k % 4, 4cx + k // 4)
        out = np.zeros((1, 4, 4, 7), np.int8)
        for k in range(7):
            out[0, :, :, k] = q[0, k % 4::4, k // 4::4, 0][:4, :4]
        return out

    def step(q):  # x_t + known + keypoint map c - right-hand neighbour's x_t (raster order, wrapping)
        v = q[0].reshape(-1, 14).astype(np.int64)
        out = v[:, :3] + v[:, 6:7] + v[:, 7:10] - np.roll(v[:, :3], -1, axis=0)
        return np.clip(out, -128, 127).astype(np.int8).reshape(1, 8, 8, 3)

    i = np.arange(256)
    trunc = lambda n, d: np.sign(n) * (np.abs(n) // d)  # C truncates toward zero
    x0 = ((i - 128) * 1024).astype(np.int32)
    gauss = np.array([32768, 32704, 32514, 32199, 31764, 31214, 30555, 29794, 28942, 28007, 27000, 25933, 24818,
                      23665, 22486, 21293, 20096, 18906, 17731, 16581, 15464, 14385, 13351, 12365], np.uint16)
    steps = [StepConst("tiny_step", step, "", 1 << 30, -9, 0, x0, 9000, 9000),
             StepConst("tiny_step", step, "", 1 << 30, -9, 0, x0, 0, 0)]
    return Pipeline(frame_size=16, pose_name="tiny_pose", pose_graph=pose, pose_source="",
                    pose_input_lut=(i - 128).astype(np.int8), heatmap_zero_point=-128, heatmap_stride=4,
                    heatmap_scale=1 / 256, visible_min=100, size=8,
                    pixel_q16=trunc((2 * i - 255) * 65536, 255).astype(np.int32), sqrt_a0_q14=3000,
                    sqrt_1ma0_q14=16000, gauss_q15=gauss, steps=steps, out_pixel_lut=(255 - i).astype(np.uint8),
                    student_base="tiny", verify=False,  # tiny_pipeline.c leaves verify off
                    luma_student=luma)


@pytest.mark.parametrize("luma", [True, False], ids=["luma_student", "rgb_student"])
def test_firmware_pipeline_matches_reference_at_frame_edges(tmp_path, luma):
    """The C pipeline (built for the host with the hand-written test pipeline, under ASan/UBSan) against its
    Python twin on frames whose faces sit anywhere, edges and corners included: boxes clipped by the frame,
    crops reaching outside it (edge replication), negative coordinates; heads the gate accepts and refuses
    (no nose, no eye, a nose away from the rest); with and without the colour split. Every byte must agree."""
    from toolkit.bench import transport
    from toolkit.bench.protocol import Device

    fw = REPO / "firmware"
    exe = tmp_path / "tiny_pipeline_fw"
    srcs = ["src/main.c", "src/ee_harness.c", "src/ee_protocol.c", "src/port/port_native.c",
            "test/support/tiny_model.c", "test/support/tiny_pipeline.c", "src/app/tk_frame.c"]
    subprocess.run(["gcc", "-std=c99", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-DTH_NATIVE_POOL_BYTES=262144", f"-DTINY_LUMA={int(luma)}", "-Isrc", "-Isrc/app",
                    "-Ilib/tkengine/include", *srcs, "-o", str(exe)],
                   cwd=fw, check=True)
    pipe = _tiny_pipeline(luma)
    rng = np.random.default_rng(7)
    seen = {"ok": 0, "no_face": 0, "clipped": 0, "crop_outside": 0, R.GATE_NO_NOSE: 0, R.GATE_NO_EYE: 0,
            R.GATE_IMPLAUSIBLE: 0}
    with transport.open_native(exe, timeout=20) as link:
        dev = Device(link)
        dev.identify()
        layout = dev.pipeline()
        assert (layout["pose"], layout["size"], layout["h"]) == ("tiny_pose", 8, 16)
        for n in range(90):
            frame = rng.integers(0, 90, (16, 16, 3), dtype=np.uint8)  # dark: no keypoint visible
            if n % 3 == 0:
                for _ in range(int(rng.integers(0, 4))):  # bright patches anywhere, often at an edge
                    y, x = (int(v) for v in rng.integers(-2, 16, 2))
                    frame[max(y, 0):y + 3, max(x, 0):x + 3, 0] = rng.integers(230, 256)
            else:  # a head: keypoint k lit in a heatmap cell (its pixel (4cy + k % 4, 4cx + k // 4))
                nose = rng.integers(0, 4, 2)
                for k in range(7):
                    if k and rng.random() < 0.35:
                        continue
                    # near the nose (same or next cell), shoulders a cell lower; every third head has its
                    # nose moved away from the rest (the misplaced-nose case)
                    cell = nose + (rng.integers(-1, 2, 2) if k else 0) + ([0, 1] if k >= 5 else 0)
                    if k and n % 3 == 2:
                        cell = 3 - nose + rng.integers(-1, 1, 2)
                    cy, cx = np.clip(cell, 0, 3)
                    frame[4 * cy + k % 4, 4 * cx + k // 4, 0] = rng.integers(200, 256)
            seed = int(rng.integers(0, 2**32))
            ref, info = R.anonymize_frame(frame, pipe, seed)
            dev.load_frame(frame)
            got = dev.anonymize(seed, timeout=20)
            assert got["status"] == info["status"], n
            assert got["keypoints_q8"] == info["keypoints_q8"] and got["peaks"] == info["peaks"], n
            assert got["visible"] == info["visible"], n
            seen[info["status"]] += 1
            if info["gate"] != R.GATE_OK:
                seen[info["gate"]] += 1
            if ref is None:
                continue
            assert got["box"] == info["box"] and got["crop"] == info["crop"], n
            assert got["crc"] == info["crc"], n
            assert np.array_equal(dev.frame_out(frame.size).reshape(frame.shape), ref), n
            bx0, by0, bx1, by1 = info["box"]
            seen["clipped"] += bx0 < 0 or by0 < 0 or bx1 > 16 or by1 > 16
            cx, cy, side = info["crop"]
            seen["crop_outside"] += cx < 0 or cy < 0 or cx + side > 16 or cy + side > 16
    assert all(v > 0 for v in seen.values()), seen  # every path was exercised, each refusal of the gate too
