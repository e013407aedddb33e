"""`toolkit distill`: the microcontroller student, its budget, export-safety and the distillation itself."""

import json

import numpy as np
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


def test_training_refuses_eval_only_options(tmp_path, capsys):
    from toolkit.cli import main

    for flag in (["--draws", "2"], ["--no-keypoints"]):
        rc = main(["distill", "--teacher", str(tmp_path / "t"), "--out", str(tmp_path / "s"), *flag])
        assert rc == 2 and "options of `toolkit distill eval" in capsys.readouterr().err, flag
    assert not (tmp_path / "s").exists()


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
    for key in ("psnr_db", "ssim", "kp_patch_psnr_db", "kp_nme", "kp_pck@0.2", "sec_per_face"):
        assert isinstance(met[key], float), key
    assert met["eval_faces"] >= 1 and met["eval_split"] == "val"
    assert isinstance(met["teacher_keypoints"]["kp_nme"], float)
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
    from toolkit.artifacts import load_inpainter

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


def test_eval_command_compares_students_and_stores_metrics(tmp_path, tiny_student_run, tiny_teacher_run, fdf_dir,
                                                           capsys):
    import shutil

    from toolkit.artifacts import read_manifest
    from toolkit.cli import main
    from toolkit.distill.distill import distill

    run = tmp_path / "student"
    shutil.copytree(tiny_student_run, run)
    before = read_manifest(run)["metrics"]
    # A second (barely trained) 1-step student of the same teacher, same teacher sampling: one table for both.
    one = tmp_path / "one-step"
    distill(tiny_teacher_run, one, 1, preset="tiny", max_steps=5, batch_size=4, pairs_per_image=1,
            teacher_steps=8, max_images=4, eval_faces=0, progress=False)
    # At the distillation's teacher steps (8) the evaluation stored at the end of training is reproduced.
    assert main(["distill", "eval", str(run), str(one), "--faces", "2", "--teacher-steps", "8", "--json",
                 "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["students"]) == {"1", "2"}
    s = result["students"]["2"]
    assert 0 < s["psnr_db"] <= 100 and -1 <= s["ssim"] <= 1
    # Same faces, same seeds, same weights: the stored evaluation is reproduced exactly.
    assert s["psnr_db"] == pytest.approx(before["psnr_db"], abs=1e-3)
    # Held-out faces only: the fixture's val split has one face, and the output says it is too few.
    assert result["faces"] == 1 and result["split"] == "val"
    assert "only 1 held-out face" in result["warning"] and "the val split holds no more" in result["warning"]
    # Keypoint adherence for the real crops (the probe's floor), the teacher and each student; time per face.
    for row in (result["real"], result["mean_face"], result["noise_control"], result["teacher"],
                *result["students"].values()):
        # within half a face-box side on average (measured 0.10-0.14 here; a probe reading the crop's corner
        # gives ~1), and NME agrees with PCK: each point beyond 0.2 box sides adds at least 0.2 to the mean
        assert 0 <= row["kp_nme"] < 0.5 and 0 <= row["kp_pck@0.2"] <= 1, row
        assert row["kp_nme"] >= 0.2 * (1 - row["kp_pck@0.2"]) - 1e-3, row
    for row in (result["teacher"], *result["students"].values()):
        assert row["sec_per_face"] > 0
    assert result["teacher"]["steps"] == 8
    # The probe cached by the distillation was reused (not retrained) and copied into the other run.
    assert result["probe"]["cached"] == str(run / "keypoint_probe")
    assert (one / "keypoint_probe" / "probe.json").exists()
    for r, steps in ((run, 2), (one, 1)):
        met = read_manifest(r)["metrics"]
        assert met["psnr_db"] == result["students"][str(steps)]["psnr_db"]
        assert met["kp_nme"] == result["students"][str(steps)]["kp_nme"]
        assert set(met["evaluation"]["students"]) == {"1", "2"} and met["eval_warning"] == result["warning"]
        assert met["teacher_keypoints"]["kp_nme"] == result["teacher"]["kp_nme"]
    assert read_manifest(run)["metrics"]["train_face_mse_after"] == before["train_face_mse_after"]
    # The printed table: one row per model, the warning, and the probe's floor vs the baseline.
    assert main(["distill", "eval", str(run), str(one), "--faces", "2", "--teacher-steps", "8",
                 "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "WARNING: only 1 held-out face" in table and "on 1 held-out (val) face" in table
    for row in ("| real crops (probe floor) |", "| mean keypoints (baseline) |", "| noise in the box (control) |", "| teacher | 8 |", "| student | 1 |", "| student | 2 |"):
        assert row in table, table
    assert "mean-keypoint baseline" in table
    # More noise draws: more samples of the same held-out face, said as such.
    assert main(["distill", "eval", str(run), "--faces", "2", "--draws", "3", "--json", "--no-progress"]) == 0
    drawn = json.loads(capsys.readouterr().out)
    assert drawn["faces"] == 1 and drawn["samples"] == 3 and drawn["draws"] == 3
    assert drawn["teacher"]["steps"] == 50  # by default the students are measured against the 50-step teacher
    assert main(["distill", "eval", str(tmp_path / "nothing")]) == 2
    assert main(["distill", "eval", str(run), "--draws", "0"]) == 2
    # No val split: refused, never evaluated on training faces.
    noval = tmp_path / "noval"
    shutil.copytree(fdf_dir / "train", noval / "train")
    capsys.readouterr()
    assert main(["distill", "eval", str(run), "--data", str(noval), "--no-progress"]) == 2
    assert "never uses training faces" in capsys.readouterr().err


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


# --- keypoint probe and adherence ---------------------------------------------------------------------

PROBE_CV_ITERS = 300


def test_keypoint_probe_beats_the_mean_keypoint_baseline_on_held_out_faces(fdf_dir):
    """3-fold cross-validation over the real training faces (the val split holds a single face): on faces it
    never saw, the probe must be closer to the true keypoints than the box-relative mean position is."""
    from toolkit.data import FDFDataset
    from toolkit.distill.probe import (
        ProbeConfig,
        mean_keypoints,
        probe_floor,
        train_probe,
    )

    ds = FDFDataset(fdf_dir, "train", size=32)
    n = len(ds)
    assert n >= 9, f"fixture too small for 3 folds ({n} faces)"
    sums = {"probe": 0.0, "baseline": 0.0, "points": 0}
    for fold in range(3):
        held = [i for i in range(n) if i % 3 == fold]
        keep = [i for i in range(n) if i % 3 != fold]
        probe = train_probe(ds, ProbeConfig(resolution=32, iters=PROBE_CV_ITERS), progress=False, indices=keep)
        f = probe_floor(probe, ds, mean_keypoints(ds, keep), indices=held, flips=True)
        sums["probe"] += f["nme"] * f["points"]
        sums["baseline"] += f["baseline_nme"] * f["points"]
        sums["points"] += f["points"]
    probe_nme, base_nme = sums["probe"] / sums["points"], sums["baseline"] / sums["points"]
    assert probe_nme < 0.9 * base_nme, (probe_nme, base_nme)


def _fixture_probe(run):
    from toolkit.distill.evaluate import PROBE_DIR
    from toolkit.distill.probe import load_probe

    found = load_probe(run / PROBE_DIR)
    assert found is not None, "the distillation's evaluation must cache its keypoint probe in the run"
    return found


def test_adherence_is_worse_for_keypoints_shifted_off_the_face(tiny_student_run, fdf_dir):
    """The metric can fail: the same real faces judged against keypoints moved by a quarter of the face box
    score clearly worse than against their own keypoints."""
    from toolkit.data import FDFDataset
    from toolkit.distill.probe import adherence, box_side, load_split

    probe, info = _fixture_probe(tiny_student_run)
    for split in ("train", "val"):
        d = load_split(FDFDataset(fdf_dir, split, size=32), flips=True)
        true = adherence(probe, d["image"], d["keypoints"], d["visible"], d["box"])
        side = torch.tensor([box_side(b) for b in d["box"]])[:, None] / 32
        for axis in (0, 1):
            kp = d["keypoints"].clone()
            kp[..., axis] += 0.25 * side  # a quarter of the box: still inside it, no longer on the features
            moved = adherence(probe, d["image"], kp, d["visible"], d["box"])
            assert moved["nme"] > true["nme"] + 0.05, (split, axis, true, moved)
            assert moved["pck@0.2"] < true["pck@0.2"], (split, axis, true, moved)
    # The probe's floor on the held-out face is stored beside it (the figure the adherence is read against).
    assert info["floor"]["faces"] == len(FDFDataset(fdf_dir, "val")) and info["floor"]["nme"] is not None


def test_probe_is_cached_and_reused(tmp_path, fdf_dir):
    from toolkit.data import FDFDataset
    from toolkit.distill.probe import (
        ProbeConfig,
        load_or_train_probe,
        load_probe,
        predict,
        probe_key,
    )

    cfg = ProbeConfig(resolution=32, iters=20)
    a, b = tmp_path / "run_a" / "keypoint_probe", tmp_path / "run_b" / "keypoint_probe"
    probe, info = load_or_train_probe(fdf_dir, 32, [a], cfg, progress=False)
    assert info["cached"] is None and (a / "probe.json").exists()
    again, info2 = load_or_train_probe(fdf_dir, 32, [b, a], cfg, progress=False)
    assert info2["cached"] == str(a) and (b / "probe.json").exists(), "found in a, copied to b"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    boxes = torch.tensor([[8, 6, 24, 24], [9, 7, 25, 25]])
    torch.testing.assert_close(predict(probe, x, boxes), predict(again, x, boxes))
    # Other training settings: not the same probe, unless any training settings will do.
    key = probe_key(FDFDataset(fdf_dir, "train", size=32), ProbeConfig(resolution=32, iters=21))
    assert load_probe(a, key) is None
    assert load_probe(a, key, any_config=True) is not None
    with pytest.raises(ValueError, match="32 px"):
        load_or_train_probe(fdf_dir, 64, [a], cfg, progress=False)


def test_probe_and_metric_units():
    from toolkit.distill.probe import (
        KeypointProbe,
        box_masks,
        point_errors,
        soft_argmax,
        summarize_errors,
    )

    # soft-argmax of a sharp peak is that cell's centre
    logits = torch.full((1, 7, 16, 16), -50.0)
    logits[0, :, 4, 10] = 50.0
    torch.testing.assert_close(soft_argmax(logits)[0, 0], torch.tensor([10.5 / 16, 4.5 / 16]))
    m = box_masks([[2, 3, 6, 8]], 10)
    assert m.shape == (1, 1, 10, 10) and m[0, 0, 3:8, 2:6].sum() == 0 and m.sum() == 100 - 20
    # errors are per box side sqrt(w*h): a 4 px miss in a 16x16 box of a 32 px crop is 0.25
    ref = np.full((7, 2), 0.5)
    pred = ref.copy()
    pred[0, 0] += 4 / 32
    vis = np.array([1, 1, 1, 0, 0, 1, 1], bool)
    e = point_errors(pred, ref, vis, (8, 8, 24, 24), 32)
    assert e.tolist() == [0.25, 0.0, 0.0]  # face points only, invisible ones skipped
    s = summarize_errors([e])
    assert s["nme"] == pytest.approx(0.25 / 3, abs=1e-4) and s["pck@0.2"] == pytest.approx(2 / 3, abs=1e-4)
    assert summarize_errors([])["nme"] is None
    with pytest.raises(ValueError, match="32x32"):
        KeypointProbe(32).keypoints(torch.zeros(1, 3, 64, 64), torch.ones(1, 1, 64, 64))
