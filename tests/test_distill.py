"""`toolkit distill`: the microcontroller student, its budget, export-safety and the distillation itself."""

import json

import pytest
import torch
from torch import nn

from toolkit.distill.student import (
    ALLOWED_LEAF_MODULES,
    ALLOWED_ONNX_OPS,
    IN_CHANNELS,
    PRESETS,
    Student,
    budget,
    count_macs,
    get_preset,
)


def _student(preset="mcu32", steps=4, seed=0):
    torch.manual_seed(seed)
    return Student(get_preset(preset), list(range(999, -1, -1000 // steps))[:steps])


# --- architecture and budget ------------------------------------------------------------------------


def test_mcu32_budget_params_and_macs():
    b = budget("mcu32", num_steps=4)
    assert b.resolution == 32
    assert 50_000 < b.params <= 300_000
    assert 10_000_000 < b.macs <= 60_000_000
    assert b.within
    # The per-step biases fold away: one step network has exactly the parameters of the bare net.
    net = _student("mcu32").step_module(2)
    assert sum(p.numel() for p in net.parameters()) == b.params


def test_mac_count_matches_conv_arithmetic():
    """Hook-counted MACs equal the closed form for a known two-conv net (stride and padding included)."""
    net = nn.Sequential(nn.Conv2d(IN_CHANNELS, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2, padding=1))
    macs, _, rows = count_macs(net, 16)
    assert macs == 16 * 16 * 8 * IN_CHANNELS * 9 + 8 * 8 * 4 * 8 * 9
    assert len(rows) == 2


def test_every_preset_runs_and_mcu64_is_bigger():
    for name, p in PRESETS.items():
        b = budget(name)
        assert b.params > 0 and b.macs > 0, name
    assert budget("mcu64").macs > budget("mcu32").macs
    assert budget("mcu64").within


def test_step_module_uses_only_allowed_modules():
    student = _student("mcu32")
    for k in range(student.num_steps):
        net = student.step_module(k)
        leaves = [m for m in net.modules() if not list(m.children())]
        assert leaves, "no modules"
        bad = [type(m).__name__ for m in leaves if not isinstance(m, ALLOWED_LEAF_MODULES)]
        assert not bad, f"step {k} has disallowed modules {bad}"
        assert not any(isinstance(m, (nn.GroupNorm, nn.BatchNorm2d, nn.LayerNorm, nn.MultiheadAttention, nn.Linear))
                       for m in net.modules())


def test_traced_graph_has_only_conv_relu_upsample_cat_add():
    import operator

    net = _student("mcu32").step_module(1)
    gm = torch.fx.symbolic_trace(net)
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_module":
            assert isinstance(modules[node.target], ALLOWED_LEAF_MODULES), node.target
        elif node.op == "call_function":
            assert node.target in (torch.cat, operator.add, operator.getitem), node.target
        elif node.op == "call_method":
            pytest.fail(f"unexpected method call {node.target}")


def test_onnx_export_of_step_module_has_only_allowed_ops(tmp_path):
    onnx = pytest.importorskip("onnx")
    net = _student("mcu32").step_module(0)
    x = torch.randn(1, IN_CHANNELS, 32, 32)
    path = tmp_path / "step0.onnx"
    torch.onnx.export(net, (x,), str(path), opset_version=17, dynamo=False, input_names=["x"], output_names=["x0"])
    model = onnx.load(str(path))
    ops = {n.op_type for n in model.graph.node}
    assert ops <= ALLOWED_ONNX_OPS, ops - ALLOWED_ONNX_OPS
    assert {"Conv", "Concat", "Add", "Resize"} <= ops
    shape = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    assert shape == [1, 3, 32, 32]


def test_step_bias_is_folded_exactly():
    """forward(x, k) == step_module(k)(x): training and export compute the same function, per step."""
    student = _student("tiny", steps=2)
    with torch.no_grad():
        for table in student.step_bias:
            table.normal_(std=0.3)  # distinct per-step constants
    x = torch.randn(2, IN_CHANNELS, 32, 32)
    outs = []
    with torch.no_grad():
        for k in range(2):
            a, b = student(x, k), student.step_module(k)(x)
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            outs.append(a)
    assert (outs[0] - outs[1]).abs().max() > 1e-3, "steps must differ once their biases differ"
    # step_module is a detached copy: changing it leaves the student alone.
    net = student.step_module(0)
    with torch.no_grad():
        net.head.bias.add_(1.0)
    torch.testing.assert_close(student(x, 0), outs[0], rtol=1e-5, atol=1e-5)


def test_save_and_load_roundtrip(tmp_path):
    student = Student(get_preset("tiny"), [900, 400], 32, [0.01, 0.5], {"kind": "gaussian", "sigma_px": 1.0})
    with torch.no_grad():
        student.step_bias[0].fill_(0.25)
    student.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["timesteps"] == [900, 400] and cfg["prediction"] == "x0"
    again = Student.from_pretrained(tmp_path)
    x = torch.randn(1, IN_CHANNELS, 32, 32)
    torch.testing.assert_close(again(x, 1), student(x, 1))


def test_bad_student_configs_are_refused():
    with pytest.raises(ValueError, match="unknown student preset"):
        get_preset("mcu9000")
    with pytest.raises(ValueError, match="descending"):
        Student(get_preset("tiny"), [100, 500])
    with pytest.raises(ValueError, match="divisible"):
        Student(get_preset("mcu64"), [999], resolution=36)
    with pytest.raises(IndexError):
        _student("tiny", steps=2)(torch.zeros(1, IN_CHANNELS, 32, 32), 2)


def test_print_budget_cli(capsys):
    from toolkit.cli import main

    assert main(["distill", "--preset", "mcu32", "--print-budget"]) == 0
    text = capsys.readouterr().out
    assert "parameters per step network" in text and "within budget:               yes" in text
    assert main(["distill", "info", "--preset", "mcu64", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["resolution"] == 64 and info["macs"] == budget("mcu64").macs
    assert main(["distill", "info", "--preset", "nope"]) == 2


# --- distillation on the tiny teacher -----------------------------------------------------------------


def test_wrong_teacher_is_refused(tmp_path, fdf_dir, capsys):
    from toolkit.cli import main

    rc = main(["distill", "--teacher", str(fdf_dir), "--out", str(tmp_path / "s"), "--steps", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a teacher" in err
    rc = main(["distill", "--teacher", str(tmp_path / "missing"), "--out", str(tmp_path / "s"), "--steps", "1"])
    assert rc == 2 and "no such artifact" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_distilled_student_gets_closer_to_teacher(tiny_student_run):
    from toolkit.artifacts import read_manifest

    m = read_manifest(tiny_student_run, expect_stage="student")
    met = m["metrics"]
    assert met["train_face_mse_after"] < 0.7 * met["train_face_mse_before"], met
    assert m["steps"] == 2 and len(m["timesteps"]) == 2 and m["timesteps"][0] > m["timesteps"][1]
    # Held-out evaluation against the guided teacher from the same noise is stored.
    for key in ("psnr_db", "ssim", "kp_patch_psnr_db"):
        assert isinstance(met[key], float), key
    assert met["eval_faces"] >= 1
    assert m["budget"]["params"] > 0 and m["teacher"]["sampling"]["steps"] == 8
    assert (tiny_student_run / "samples.png").exists()
    assert (tiny_student_run / "config.json").exists()
    assert (tiny_student_run / "diffusion_pytorch_model.safetensors").exists()


def test_student_is_closer_to_teacher_on_held_out_faces(tiny_student_run, fdf_dir):
    """On the val split, from the same noise: distilled student vs the same net before distillation."""
    from toolkit.artifacts import read_manifest
    from toolkit.data import FDFDataset
    from toolkit.distill.evaluate import evaluate_against_teacher
    from toolkit.distill.inpainter import StudentInpainter, load_student_inpainter
    from toolkit.distill.teacher import load_teacher

    m = read_manifest(tiny_student_run)
    after = load_student_inpainter(tiny_student_run)
    torch.manual_seed(m["training"]["seed"])  # the initial weights of the run (same seed, same constructor)
    before = StudentInpainter(Student.from_config(after.student.config()))
    sampling = m["teacher"]["sampling"]
    teacher = load_teacher(m["teacher"]["path"], steps=sampling["steps"], repaint=sampling["repaint"],
                           cfg_scale=sampling["cfg_scale"], rg_weight=sampling["rg_weight"])
    val = FDFDataset(fdf_dir, "val", size=32)
    result = evaluate_against_teacher(teacher, {"before": before, "after": after}, val, n_faces=4, progress=False)
    b, a = result["students"]["before"], result["students"]["after"]
    assert a["psnr_db"] > b["psnr_db"] + 1.0, result["students"]
    assert a["ssim"] > b["ssim"], result["students"]


def test_student_implements_the_inpainter_contract(tiny_student_run, fdf_dir):
    from toolkit.data import FDFDataset
    from toolkit.diffusion import load_inpainter

    inp = load_inpainter(tiny_student_run)
    assert inp.resolution == 32
    ds = FDFDataset(fdf_dir, "val", size=32)
    item = ds.get(0)
    images, masks = item["image"][None], item["mask"][None]
    out = inp.inpaint(images, masks, item["keypoints"][None], item["visible"][None], seed=3)
    assert out.shape == images.shape and out.min() >= -1 and out.max() <= 1
    known = masks.expand_as(images) > 0.5
    assert torch.equal(out[known], images[known]), "known pixels must be the input's"
    hole = ~known
    assert (out[hole] - images[hole]).abs().mean() > 0.01, "the face region must be regenerated"
    again = inp.inpaint(images, masks, item["keypoints"][None], item["visible"][None], seed=3)
    assert torch.equal(out, again)
    other = inp.inpaint(images, masks, item["keypoints"][None], item["visible"][None], seed=4)
    assert not torch.equal(out, other)
    with pytest.raises(ValueError, match="distilled for 2 step"):
        inp.inpaint(images, masks, item["keypoints"][None], item["visible"][None], steps=4)


def test_resume_continues_from_checkpoint(tmp_path, tiny_teacher_run, capsys):
    from safetensors.torch import load_file

    from toolkit.cli import main
    from toolkit.distill.distill import CHECKPOINT_FILE, TARGETS_FILE, distill

    kw = dict(preset="tiny", batch_size=4, pairs_per_image=1, teacher_steps=4, max_images=4, checkpoint_every=5,
              eval_faces=0, progress=False, max_steps=10, seed=0)
    full = tmp_path / "full"
    distill(tiny_teacher_run, full, 1, **kw)
    with pytest.raises(ValueError, match="--resume"):
        distill(tiny_teacher_run, full, 1, **kw)

    # The same run through the CLI, interrupted after 5 steps (checkpoint, no artifact yet), then resumed.
    part = tmp_path / "part"
    args = ["distill", "--teacher", str(tiny_teacher_run), "--out", str(part), "--steps", "1", "--preset", "tiny",
            "--batch-size", "4", "--pairs-per-image", "1", "--teacher-steps", "4", "--max-images", "4",
            "--checkpoint-every", "5", "--eval-faces", "0", "--max-steps", "10", "--no-progress"]
    assert main(args + ["--stop-after", "5"]) == 0
    assert torch.load(part / CHECKPOINT_FILE, weights_only=False)["step"] == 5
    assert not (part / "toolkit.json").exists()
    cache_mtime = (part / TARGETS_FILE).stat().st_mtime_ns
    assert main(args[:-2] + ["20", "--no-progress", "--resume"]) == 2  # other --max-steps: refused
    assert "other settings" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert (part / TARGETS_FILE).stat().st_mtime_ns == cache_mtime, "cached teacher targets must be reused"
    a = load_file(str(full / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(part / "diffusion_pytorch_model.safetensors"))
    for name in a:  # interrupted + resumed == uninterrupted
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)


def test_eval_command_stores_metrics(tmp_path, tiny_student_run, capsys):
    import shutil

    from toolkit.artifacts import read_manifest
    from toolkit.cli import main

    run = tmp_path / "student"
    shutil.copytree(tiny_student_run, run)
    before = read_manifest(run)["metrics"]
    assert main(["distill", "eval", str(run), "--faces", "2", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    s = result["students"]["2"]
    assert 0 < s["psnr_db"] <= 100 and -1 <= s["ssim"] <= 1
    # Same faces, same seeds, same weights: the stored evaluation is reproduced exactly.
    assert s["psnr_db"] == pytest.approx(before["psnr_db"], abs=1e-3)
    after = read_manifest(run)["metrics"]
    assert after["psnr_db"] == s["psnr_db"] and after["train_face_mse_after"] == before["train_face_mse_after"]
    assert main(["distill", "eval", str(tmp_path / "nothing")]) == 2


def test_ddim_jump_target_lands_on_the_next_state():
    from toolkit.distill.distill import pick_timesteps
    from toolkit.distill.inpainter import ddim_step, ddim_target_x0

    g = torch.Generator().manual_seed(0)
    x_t, x_next = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    x0 = ddim_target_x0(x_t, x_next, 0.02, 0.6)
    torch.testing.assert_close(ddim_step(x_t, x0, 0.02, 0.6), x_next, rtol=1e-5, atol=1e-5)
    teacher_ts = list(range(960, -1, -40))  # 25 DDIM steps
    assert pick_timesteps(teacher_ts, 1) == [960]
    assert pick_timesteps(teacher_ts, 2) == [960, 480]
    assert pick_timesteps(teacher_ts, 4) == [960, 720, 480, 240]
    with pytest.raises(ValueError):
        pick_timesteps([960, 480], 4)
