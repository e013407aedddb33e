"""On-device anonymization pipeline: the host integer reference (toolkit.sensor) and the firmware running it
under QEMU bit-exactly (`toolkit bench --pipeline`)."""

import dataclasses
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from toolkit.sensor import reference as R

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
    from toolkit.data.crop import expanded_crop_box

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
        box = R.face_box(kp_q8, visible)
        fbox = _box_from_keypoints(kp_q8 / 256.0, np.where(visible, 1.0, 0.0))
        assert box[0] <= fbox[0] + 0.02 and box[1] <= fbox[1] + 0.02
        assert box[2] >= fbox[2] - 0.02 and box[3] >= fbox[3] - 0.02
        # and not much larger: at most one pixel of outward rounding per side
        assert box[2] - box[0] <= (fbox[2] - fbox[0]) + 2


def test_rounding_helpers():
    assert R.rshr(np.array([5, -5, 3, -3, 6, -6]), 1).tolist() == [3, -3, 2, -2, 3, -3]
    assert [R.div_round(7, 2), R.div_round(-7, 2), R.div_round(5, 3), R.div_round(-4, 3)] == [4, -4, 2, -1]
    assert [R.floor_div(-1, 2), R.ceil_div(-1, 2), R.ceil_div(7, 2)] == [-1, 0, 4]


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
        assert np.array_equal(out[ys, xs], info["generated"][iy, ix])
        # the face really changes (the generated pixels are not the input's)
        assert (out[inside] != frame[inside]).any(axis=-1).mean() > 0.5, label
        assert info["crc"] == R.zlib.crc32(out.tobytes())


def test_reference_is_deterministic_per_seed(sensor_pipeline, sensor_frames):
    _, frame, out, info = _faces(sensor_pipeline, sensor_frames)[0]
    again, info2 = R.anonymize_frame(frame, sensor_pipeline, 3)
    other, info3 = R.anonymize_frame(frame, sensor_pipeline, 4)
    assert np.array_equal(out, again) and info2["crc"] == info["crc"]
    assert info3["box"] == info["box"]  # same keypoints, same box; other noise, other face
    assert not np.array_equal(out, other)
    assert not np.shares_memory(out, frame)


def test_no_face_fails_closed(sensor_pipeline, sensor_frames):
    from toolkit.sensor.frames import blank_frame, landscape_frame

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
    generated pixels agree to int8 precision (measured ~1 level mean, <= 4 max), far closer than the float
    student with other noise (~18 levels): the integer glue follows `sample_student`."""
    import torch

    from toolkit.distill.inpainter import load_student_inpainter, sample_student

    pipe = sensor_pipeline
    label, frame, _, info = _faces(pipe, sensor_frames)[0]
    S = pipe.size
    img, known, maps, _ = R.student_inputs(frame, pipe, np.asarray(info["keypoints_q8"]), info["visible"],
                                           info["box"], info["crop"], 3)
    z = R.noise_q16(3, S * S * 3).reshape(S, S, 3) / 65536.0
    inp = load_student_inpainter(tiny_student_run)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).permute(2, 0, 1)[None]
    x0, _ = sample_student(inp.student, inp.alphas, t(img / 127.5 - 1.0), t(known[..., None]), t(maps / 32768.0), t(z))
    ref = ((x0[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255)
    unknown = ~known
    err = np.abs(ref[unknown] - info["generated"][unknown].astype(np.float64))
    assert err.mean() < 3.0 and err.max() <= 16, f"{label}: integer pipeline drifts from the float student " \
        f"(mean {err.mean():.1f}, max {err.max():.0f} levels)"
    z2 = R.noise_q16(99, S * S * 3).reshape(S, S, 3) / 65536.0
    x0b, _ = sample_student(inp.student, inp.alphas, t(img / 127.5 - 1.0), t(known[..., None]), t(maps / 32768.0), t(z2))
    other = ((x0b[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255)
    assert np.abs(other[unknown] - ref[unknown]).mean() > 3 * err.mean()


# ------------------------------------------------------------------------------------------ C config


def test_c_config_is_deterministic_and_linked_only_with_its_models(sensor_pipeline, tmp_path):
    from toolkit.bench.firmware import write_registry
    from toolkit.sensor.config import c_sources, configured_models, write_c_config

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
    from toolkit.bench.pipeline import fit_checks
    from toolkit.deploy.codegen import plan_arena
    from toolkit.sensor.config import memory_plan

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

    registry = (REPO / "firmware" / "generated" / "models.c").read_text()
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
    # per-stage timing: every stage measured, instructions under -icount, shares summing to one
    names = [st["stage"] for st in s["stages"]]
    assert names == ["preprocess", "pose", "decode", "crop", "step0", "step1", "paste"]
    assert all(st["mean"] > 0 and st["instructions"] == st["mean"] * 40 for st in s["stages"])
    assert math.isclose(sum(st["share"] for st in s["stages"]), 1.0, rel_tol=1e-6)
    assert s["stages"][1]["mean"] > s["stages"][0]["mean"]  # the network costs more than a table lookup
    # fit figures for both product boards
    for board in ("stm32h743", "esp32s3"):
        f = s["fit"][board]
        assert f["fits"] and 0 < f["ram_bytes"] <= f["ram_budget_bytes"] and 0 < f["flash_bytes"] <= f["flash_budget_bytes"]
    assert out.with_suffix(".csv").is_file() and out.with_suffix(".png").stat().st_size > 1000
    assert "| pose |" in printed and "fit stm32h743: fits" in printed
    # the repository's firmware/ was not touched
    assert (REPO / "firmware" / "generated" / "models.c").read_text() == registry
    assert not (REPO / "firmware" / "generated" / "pipeline_config.c").exists()
    status = subprocess.run(["git", "status", "--porcelain", "--", "firmware/generated"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    assert "pipeline_config" not in status


# ------------------------------------------------------------------------------------------ C twin, edge cases


def _tiny_pipeline():
    """Python twin of firmware/test/support/tiny_pipeline.c (same tables, same stand-in networks)."""
    from toolkit.sensor.config import Pipeline, StepConst

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
                    student_base="tiny")


def test_firmware_pipeline_matches_reference_at_frame_edges(tmp_path):
    """The C pipeline (built for the host with the hand-written test pipeline, under ASan/UBSan) against its
    Python twin on frames whose faces sit anywhere, edges and corners included: boxes clipped by the frame,
    crops reaching outside it (edge replication), negative coordinates. Every byte must agree."""
    from toolkit.bench import transport
    from toolkit.bench.protocol import Device

    fw = REPO / "firmware"
    exe = tmp_path / "tiny_pipeline_fw"
    srcs = ["src/main.c", "src/ee_harness.c", "src/ee_protocol.c", "src/port/port_native.c",
            "test/support/tiny_model.c", "test/support/tiny_pipeline.c", "lib/tkengine/src/tk_frame.c"]
    subprocess.run(["gcc", "-std=c99", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-DTH_NATIVE_POOL_BYTES=262144", "-Isrc", "-Ilib/tkengine/include", *srcs, "-o", str(exe)],
                   cwd=fw, check=True)
    pipe = _tiny_pipeline()
    rng = np.random.default_rng(7)
    seen = {"ok": 0, "no_face": 0, "clipped": 0, "crop_outside": 0}
    with transport.open_native(exe, timeout=20) as link:
        dev = Device(link)
        dev.identify()
        layout = dev.pipeline()
        assert (layout["pose"], layout["size"], layout["h"]) == ("tiny_pose", 8, 16)
        for n in range(60):
            frame = rng.integers(0, 90, (16, 16, 3), dtype=np.uint8)  # dark: no keypoint visible
            for _ in range(int(rng.integers(0, 4))):  # bright patches anywhere, often at an edge
                y, x = (int(v) for v in rng.integers(-2, 16, 2))
                frame[max(y, 0):y + 3, max(x, 0):x + 3, 0] = rng.integers(230, 256)
            seed = int(rng.integers(0, 2**32))
            ref, info = R.anonymize_frame(frame, pipe, seed)
            dev.load_frame(frame)
            got = dev.anonymize(seed, timeout=20)
            assert got["status"] == info["status"], n
            assert got["keypoints_q8"] == info["keypoints_q8"] and got["peaks"] == info["peaks"], n
            assert got["visible"] == info["visible"], n
            seen[info["status"]] += 1
            if ref is None:
                continue
            assert got["box"] == info["box"] and got["crop"] == info["crop"], n
            assert got["crc"] == info["crc"], n
            assert np.array_equal(dev.frame_out(frame.size).reshape(frame.shape), ref), n
            bx0, by0, bx1, by1 = info["box"]
            seen["clipped"] += bx0 < 0 or by0 < 0 or bx1 > 16 or by1 > 16
            cx, cy, side = info["crop"]
            seen["crop_outside"] += cx < 0 or cy < 0 or cx + side > 16 or cy + side > 16
    assert all(v > 0 for v in seen.values()), seen  # every path was exercised
