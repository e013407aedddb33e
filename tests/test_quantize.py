"""`toolkit quantize`: NNCF PTQ + QAT of the distilled student, ONNX-QDQ, .tflite in TFLM, fit checks."""

import numpy as np
import pytest

from fixtures_quantize import QUANT_TARGET


def _manifest(run):
    from toolkit.artifacts import read_manifest

    return read_manifest(run, expect_stage="quantized")


def _held_out_inputs(manifest, step, n, seed=4242):
    from toolkit.distill.quantize import StudentInputs

    source = manifest["source"]
    return StudentInputs(source["path"], source["manifest"]).for_step(step, held_out=True)(n, seed)


def _output_scale(onnx_path):
    """Scale of the DequantizeLinear that produces the model output (1 output LSB)."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(onnx_path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    node = next(n for n in g.node if g.output[0].name in n.output)
    assert node.op_type == "DequantizeLinear", f"model output comes from {node.op_type}, not from int8"
    return float(inits[node.input[1]])


# --------------------------------------------------------------------------------------- the artifact


def test_quantized_artifact_records_source_target_and_files(quantized_student_run, tiny_student_run):
    m = _manifest(quantized_student_run)
    assert m["target"] == QUANT_TARGET
    assert m["source"]["stage"] == "student"
    assert m["source"]["path"] == str(tiny_student_run.resolve())
    assert m["source"]["manifest"]["stage"] == "student"
    assert sorted(m["steps"]) == ["0", "1"]  # the tiny student has two step networks
    assert "recalibrated" in m["tflite_note"]
    for k, step in m["steps"].items():
        for name in ("qdq_onnx", "float_onnx", "tflite", "checkpoint"):
            assert (quantized_student_run / step["files"][name]).exists(), (k, name)


def test_qdq_onnx_is_int8_qdq_with_per_channel_weights(quantized_student_run):
    import onnx
    from onnx import numpy_helper

    m = _manifest(quantized_student_run)
    g = onnx.load(str(quantized_student_run / m["steps"]["0"]["files"]["qdq_onnx"])).graph
    ops = {n.op_type for n in g.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert all(n.domain in ("", "ai.onnx") for n in g.node), "only standard ONNX ops"
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    conv_weight_dq = 0
    producers = {o: n for n in g.node for o in n.output}
    for conv in (n for n in g.node if n.op_type == "Conv"):
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear"
        scale = inits.get(dq.input[1])
        assert scale is not None and scale.ndim == 1 and scale.size > 1, "per-channel weight scales"
        conv_weight_dq += 1
        x = producers[conv.input[0]]
        # activations enter every conv quantized, per tensor; a concat joins inputs that share one scale
        # (so the int8 concat is a plain copy)
        dqs = [producers[i] for i in x.input] if x.op_type == "Concat" else [x]
        assert all(d.op_type == "DequantizeLinear" for d in dqs), [d.op_type for d in dqs]
        scales = [inits[d.input[1]] for d in dqs]
        assert all(sc.size == 1 for sc in scales), "per-tensor activation scales"
        assert all(sc == scales[0] for sc in scales), "concat inputs share their scale"
    assert conv_weight_dq >= 5


def test_qat_int8_psnr_at_least_as_good_as_ptq(quantized_student_run):
    m = _manifest(quantized_student_run)
    for k, step in m["steps"].items():
        met = step["metrics"]
        # Both measured in onnxruntime on the exported QDQ files, on held-out (val split) real inputs.
        assert met["psnr_int8_onnx_db"] >= met["psnr_ptq_int8_onnx_db"], (k, met)
        assert met["psnr_int8_onnx_db"] > 25.0, (k, met)
        # and the fake-quant figures in torch say the same as onnxruntime's int8 kernels
        assert met["psnr_qat_fakequant_db"] >= met["psnr_ptq_fakequant_db"], (k, met)


def test_int8_reference_agrees_with_onnxruntime(quantized_student_run):
    m = _manifest(quantized_student_run)
    for k, step in m["steps"].items():
        assert step["metrics"]["int8_reference_vs_onnxruntime_max_lsb"] is not None, step["metrics"]
        assert step["metrics"]["int8_reference_vs_onnxruntime_max_lsb"] <= 1


def test_checkpoint_reloads_and_gives_the_same_outputs(quantized_student_run, tmp_path):
    from toolkit.deploy.quantize import export_qdq_onnx, load_checkpoint, psnr, run_onnx
    from toolkit.distill.student import Student

    import torch

    m = _manifest(quantized_student_run)
    files = m["steps"]["1"]["files"]
    student = Student.from_pretrained(m["source"]["path"])
    qmodel = load_checkpoint(student.step_module(1), quantized_student_run / files["checkpoint"])
    x = _held_out_inputs(m, 1, 4)
    saved = quantized_student_run / files["qdq_onnx"]
    again = export_qdq_onnx(qmodel, x[:1], tmp_path / "again.onnx")
    y_saved, y_again = run_onnx(saved, x.numpy()), run_onnx(again, x.numpy())
    np.testing.assert_array_equal(y_saved, y_again)
    with torch.no_grad():
        y_torch = qmodel(x).numpy()
    # Fake quant in float (torch) vs int8 kernels (onnxruntime): values that land near a rounding boundary
    # round either way, so single output steps differ; nothing more.
    lsb = np.abs(y_torch - y_saved) / _output_scale(saved)
    assert lsb.max() <= 1 + 1e-4  # + float rounding of the division by the scale
    assert psnr(y_saved, y_torch, 2.0) > 45.0


def test_tflite_runs_in_tflm_and_roughly_matches_float(quantized_student_run):
    from toolkit.boards import load_board
    from toolkit.deploy.fit import budgets
    from toolkit.deploy.quantize import psnr
    from toolkit.deploy.tflite_export import TflmModel
    from toolkit.distill.student import Student

    import torch

    m = _manifest(quantized_student_run)
    step = m["steps"]["0"]
    tflm = TflmModel(quantized_student_run / step["files"]["tflite"])
    assert tflm.input["dtype"] == np.int8 and tflm.output["dtype"] == np.int8
    x = _held_out_inputs(m, 0, 4)
    with torch.no_grad():
        ref = Student.from_pretrained(m["source"]["path"]).step_module(0)(x).numpy()
    y = tflm.run(x.numpy())
    assert y.shape == ref.shape
    assert psnr(ref, y, 2.0) > 20.0
    arena = tflm.arena_used_bytes
    assert arena == step["metrics"]["tflm_arena_bytes"]
    assert 0 < arena <= budgets(load_board(QUANT_TARGET))["ram_bytes"]


def test_fit_report_in_manifest_and_table(quantized_student_run, capsys):
    from toolkit.deploy.cli import format_table

    m = _manifest(quantized_student_run)
    fit = m["steps"]["0"]["fit"]
    assert fit["fits"] and fit["target"] == QUANT_TARGET
    assert 0 < fit["weight_bytes"] <= fit["flash_budget_bytes"]
    assert 0 < fit["peak_activation_bytes"] <= fit["ram_budget_bytes"]
    table = format_table(m)
    assert "PSNR int8 ONNX-QDQ vs float" in table and "TFLM arena" in table
    assert f"{m['steps']['1']['metrics']['psnr_int8_onnx_db']:.2f}" in table
    total = m["fit"]["total_weight_bytes"]
    assert total == sum(s["fit"]["weight_bytes"] for s in m["steps"].values())
    assert str(total) in table


def test_calibration_inputs_are_what_the_student_sees(tiny_student_run):
    """Real crops + noise; step k's x_t is the float student's own DDIM trajectory from that noise."""
    import torch

    from toolkit.artifacts import read_manifest
    from toolkit.distill.quantize import StudentInputs
    from toolkit.distill.inpainter import sample_student

    src = StudentInputs(tiny_student_run, read_manifest(tiny_student_run, expect_stage="student"))
    st = src.student
    S = st.resolution
    x0_in = src.for_step(0)(6, 11)
    x1_in = src.for_step(1)(6, 11)  # same seed: same crops and noise
    assert x0_in.shape == x1_in.shape == (6, 14, S, S)
    mask = x0_in[:, 6:7]
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0} and 0 < mask.mean() < 1
    context = x0_in[:, 3:6]
    assert torch.all(context[mask.expand_as(context) == 0] == 0), "context is image * mask"
    assert context.abs().max() <= 1.0 and context.std() > 0.1, "real image pixels in [-1, 1]"
    assert torch.equal(x0_in[:, 3:], x1_in[:, 3:])
    assert 0.8 < float(x0_in[:, :3].std()) < 1.2, "step 0 starts from (almost) unit Gaussian noise"
    # x_t of each step is the state the float student's own sampler feeds that step
    batch, noise = src._batch(src.train, 6, 11)
    _, xs = sample_student(st, src.alphas, batch["image"], batch["mask"], batch["keypoint_maps"], noise)
    assert torch.equal(x0_in[:, :3], xs[0]) and torch.equal(x1_in[:, :3], xs[1])
    assert not torch.allclose(xs[0], xs[1])


# --------------------------------------------------------------------------------------- refusals


def _big_student_net():
    """The ESP32-S3 student (mcu64 preset, 64x64): far beyond an STM32F405's 128 KB of SRAM."""
    from toolkit.distill.student import StudentNet, get_preset

    p = get_preset("mcu64")
    return StudentNet(p.channels, p.res_blocks, p.activation).eval(), p.resolution


def test_model_too_large_for_stm32f405_is_refused_before_training(tmp_path):
    import torch

    from toolkit.boards import load_board
    from toolkit.deploy.fit import ModelTooLargeError, check_fit, estimate_onnx_memory
    from toolkit.deploy.quantize import QuantizeSettings, quantize_and_export

    net, size = _big_student_net()
    calls = []

    def sample_inputs(n, seed):
        calls.append(n)
        return torch.zeros(n, 14, size, size)

    with pytest.raises(ModelTooLargeError) as err:
        quantize_and_export(net, sample_inputs, tmp_path / "big", load_board("stm32f405"),
                            QuantizeSettings(qat_steps=5, calib=4), progress=False)
    msg = str(err.value)
    assert "stm32f405" in msg and "budget 120.0 KiB" in msg  # 128 KiB SRAM minus 8 KiB reserve
    assert "activations with the input and output buffers need" in msg and "Largest layer" in msg
    assert calls == [1], "refused before calibration or fine-tuning"
    # The same network is fine in the ESP32-S3's 4 MiB PSRAM pool.
    estimate = estimate_onnx_memory(tmp_path / "big" / "model_float.onnx")
    assert check_fit(estimate, load_board("esp32s3"))["fits"]
    assert estimate.peak_bytes > 120 * 1024


def test_cli_refuses_a_student_too_large_for_stm32f405(tiny_student_run, tmp_path, capsys):
    """An (untrained) ESP32-S3-sized student run: `toolkit quantize --target stm32f405` stops before training."""
    import json

    from toolkit.artifacts import read_manifest, write_manifest
    from toolkit.cli import main
    from toolkit.distill.student import Student, get_preset

    small = read_manifest(tiny_student_run, expect_stage="student")
    cfg = json.loads((tiny_student_run / "config.json").read_text())
    big = Student(get_preset("mcu64"), cfg["timesteps"], 64, cfg["alphas_cumprod"], cfg["keypoint_maps"])
    run = tmp_path / "mcu64-student"
    big.save_pretrained(run)
    write_manifest(run, "student", preset="mcu64", steps=big.num_steps, data=small["data"], resolution=64)
    out = tmp_path / "q"
    # both step networks together: too much flash
    rc = main(["quantize", "--model", str(run), "--target", "stm32f405", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "2 step network(s) does not fit target 'stm32f405'" in err and "of flash together, budget 960.0 KiB" in err
    # one step network: its weights fit the flash, its activations not the SRAM
    rc = main(["quantize", "--model", str(run), "--target", "stm32f405", "--out", str(out), "--no-progress",
               "--step", "0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "does not fit target 'stm32f405'" in err and "budget 120.0 KiB" in err and "Largest layer" in err
    assert not out.exists(), "no half-written artifact is left behind"


def test_flash_overflow_names_flash_budget(tmp_path):
    import torch
    from torch import nn

    from toolkit.boards import load_board
    from toolkit.deploy.fit import ModelTooLargeError, estimate_onnx_memory, check_fit
    from toolkit.deploy.quantize import export_float_onnx

    # 2 x 512x512x3x3 convs = 4.7 M int8 weights: more than the F405's 1 MB flash, tiny activations.
    net = nn.Sequential(nn.Conv2d(14, 512, 3, padding=1), nn.ReLU(), nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(512, 512, 3, padding=1), nn.ReLU(), nn.Conv2d(512, 3, 1)).eval()
    path = export_float_onnx(net, torch.zeros(1, 14, 4, 4), tmp_path / "wide.onnx")
    estimate = estimate_onnx_memory(path)
    assert estimate.weight_bytes > 4_000_000
    with pytest.raises(ModelTooLargeError, match=r"weights need .* of flash, budget 960\.0 KiB"):
        check_fit(estimate, load_board("stm32f405"))


def test_step_networks_share_the_flash_budget():
    from toolkit.boards import load_board
    from toolkit.deploy.fit import ModelTooLargeError, check_total_flash

    board = load_board("stm32f405")
    assert check_total_flash(400_000, board, "2 step network(s)")["fits"]
    expected = r"4 step network\(s\).*1171\.9 KiB of flash together, budget 960\.0 KiB"
    with pytest.raises(ModelTooLargeError, match=expected):
        check_total_flash(4 * 300_000, board, "4 step network(s)")


@pytest.mark.parametrize("kind", ["teacher", "random"])
def test_wrong_artifact_is_refused(tmp_path, capsys, kind):
    from toolkit.artifacts import write_manifest
    from toolkit.cli import main

    src = tmp_path / kind
    src.mkdir()
    if kind == "teacher":
        write_manifest(src, "teacher", preset="tiny32")
    else:
        (src / "weights.bin").write_bytes(b"\0" * 16)
    out = tmp_path / "out"
    rc = main(["quantize", "--model", str(src), "--target", "stm32f405", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2
    if kind == "teacher":
        assert "is a 'teacher' artifact" in err and "'student'" in err
    else:
        assert "not a toolkit artifact" in err
    assert not out.exists()


def test_unknown_target_and_existing_out_are_refused(tiny_student_run, tmp_path, capsys):
    from toolkit.cli import main

    rc = main(["quantize", "--model", str(tiny_student_run), "--target", "arduino-uno", "--out", str(tmp_path / "o")])
    assert rc == 2 and "unknown target 'arduino-uno'" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    rc = main(["quantize", "--model", str(tiny_student_run), "--target", "stm32f405", "--out", str(busy)])
    assert rc == 2 and "not empty" in capsys.readouterr().err
    assert (busy / "keep.txt").read_text() == "mine"
    rc = main(["quantize", "--model", str(tiny_student_run), "--target", "stm32f405", "--out", str(tmp_path / "o2"),
               "--step", "7", "--no-tflite"])
    assert rc == 2 and "out of range" in capsys.readouterr().err


def test_help_lists_options(capsys):
    from toolkit.cli import main

    with pytest.raises(SystemExit):
        main(["quantize", "--help"])
    out = capsys.readouterr().out
    for flag in ("--model", "--target", "--out", "--qat-steps", "--calib", "--step"):
        assert flag in out
