"""The diffusion teacher: training (loss, exact resume, refusals), the artifact, and guided sampling."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.artifacts import ArtifactError, write_manifest
from toolkit.cli import main
from toolkit.artifacts import load_inpainter
from toolkit.diffusion.train import make_config, read_log, train

REPO = Path(__file__).resolve().parent.parent


def _faces(fdf_dir, size, n=4, split="train"):
    from toolkit.data.fdf import FDFDataset

    ds = FDFDataset(fdf_dir, split, size=size)
    items = [ds.get(i % len(ds)) for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) for k in ("image", "mask", "keypoints", "visible")}


def _unet_weights(run):
    from safetensors.torch import load_file

    return load_file(str(Path(run) / "unet" / "diffusion_pytorch_model.safetensors"))


def _final_state(run):
    from toolkit.diffusion.train import latest_checkpoint

    return torch.load(latest_checkpoint(Path(run)) / "state.pt", map_location="cpu", weights_only=False)


def _assert_same_state(a, b):
    assert a["step"] == b["step"]
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), f"model weight {k} differs"
    for x, y in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"]):
        assert torch.equal(x, y), "EMA weights differ"
    for sid, st in a["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(st[key], b["optimizer"]["state"][sid][key]), f"optimizer {key} differs"
    assert a["lr_scheduler"] == b["lr_scheduler"]


# ------------------------------------------------------------------------------------------- training


def test_tiny_teacher_loss_falls(tiny_teacher_run):
    rows = read_log(tiny_teacher_run)
    assert [int(r["step"]) for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) >= 200
    first = np.mean([r["loss"] for r in rows[:20]])
    last = np.mean([r["loss"] for r in rows[-50:]])
    assert first > 0.5, first  # epsilon-MSE of an untrained net is ~1
    assert last < 0.6 * first, (first, last)
    assert all(r["time"] >= 0 for r in rows)


def test_artifact_loads_with_diffusers(tiny_teacher_run):
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

    manifest = json.loads((tiny_teacher_run / "toolkit.json").read_text())
    assert manifest["stage"] == "teacher"
    assert manifest["preset"]["name"] == "tiny32"
    assert manifest["steps"] == len(read_log(tiny_teacher_run))
    assert manifest["data"]["manifest"] is not None  # the dataset's own toolkit.json is carried along
    unet = UNet2DModel.from_pretrained(tiny_teacher_run / "unet")
    assert unet.config.in_channels == manifest["conditioning"]["in_channels"]
    assert unet.config.sample_size == 32
    DDPMScheduler.from_pretrained(tiny_teacher_run / "scheduler")
    DDIMScheduler.from_pretrained(tiny_teacher_run / "scheduler")
    # The main weights are the EMA weights, not the raw training weights.
    state = _final_state(tiny_teacher_run)
    names = [n for n, _ in unet.named_parameters()]
    ema = dict(zip(names, state["ema"]["shadow_params"]))
    for name, p in unet.named_parameters():
        assert torch.equal(p.detach(), ema[name]), name
    assert any(not torch.equal(state["model"][n], ema[n]) for n in names)
    assert sorted(tiny_teacher_run.glob("samples/*.png")), "no sample grid written"


def _train_cmd(data, out, *extra):
    return [sys.executable, "-m", "toolkit.cli", "train", "--data", str(data), "--preset", "tiny32",
            "--out", str(out), "--batch-size", "4", "--checkpoint-every", "3", "--sample-every", "0",
            "--no-progress", *extra]


def test_kill_and_resume_is_bit_identical(fdf_dir, tmp_path):
    steps = 12
    # Reference: one uninterrupted run.
    ref = train(make_config(fdf_dir, tmp_path / "ref", "tiny32", max_steps=steps, batch_size=4, checkpoint_every=3,
                            sample_every=0, progress=False))

    # SIGKILL a real `toolkit train` process as soon as its step-6 checkpoint exists (it was asked for 1000).
    killed = tmp_path / "killed"
    # Same CPU thread count as this process (float reductions may depend on it), so results are comparable.
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    err_log = tmp_path / "killed.stderr"
    with open(err_log, "wb") as err:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(_train_cmd(fdf_dir, killed, "--max-steps", "1000"), cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 240
    try:
        while not (killed / "checkpoints" / "step-0000006" / "state.pt").exists():
            assert proc.poll() is None, err_log.read_text()[-2000:]
            assert time.time() < deadline, "training subprocess too slow"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "toolkit.json").exists()
    res = subprocess.run(_train_cmd(fdf_dir, killed, "--max-steps", str(steps), "--resume"), cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming" in res.stdout + res.stderr

    # Stopped cleanly at a checkpoint, then resumed with a larger --max-steps.
    stopped = tmp_path / "stopped"
    train(make_config(fdf_dir, stopped, "tiny32", max_steps=5, batch_size=4, checkpoint_every=3, sample_every=0,
                      progress=False))
    train(make_config(fdf_dir, stopped, "tiny32", max_steps=steps, batch_size=4, checkpoint_every=3,
                      sample_every=0, progress=False), resume=True)

    ref_w, ref_state = _unet_weights(ref), _final_state(ref)
    for run in (killed, stopped):
        w = _unet_weights(run)
        assert w.keys() == ref_w.keys()
        for k in ref_w:
            assert torch.equal(w[k], ref_w[k]), f"{run.name}: EMA weight {k} differs from the uninterrupted run"
        _assert_same_state(_final_state(run), ref_state)
        log = read_log(run)
        assert [int(r["step"]) for r in log] == list(range(1, steps + 1))
        assert [r["loss"] for r in log] == [r["loss"] for r in read_log(ref)]

    # A different configuration is refused on --resume, with the reason.
    with pytest.raises(ValueError, match="lr"):
        train(make_config(fdf_dir, stopped, "tiny32", max_steps=steps, batch_size=4, lr=1e-3, progress=False),
              resume=True)


def test_train_refusals(fdf_dir, tmp_path, capsys):
    # Missing data directory.
    rc = main(["train", "--data", str(tmp_path / "nope"), "--preset", "tiny32", "--out", str(tmp_path / "r")])
    assert rc == 2 and "no such directory" in capsys.readouterr().err
    # A directory that is not an FDF dataset.
    junk = tmp_path / "junk"
    (junk / "train" / "images").mkdir(parents=True)
    (junk / "train" / "images" / "0.png").write_bytes(b"not a png")
    rc = main(["train", "--data", str(junk), "--preset", "tiny32", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a usable FDF-format dataset" in err
    assert not (tmp_path / "r").exists()
    # --resume of a run that does not exist; a non-empty --out without --resume.
    rc = main(["train", "--data", str(fdf_dir), "--preset", "tiny32", "--out", str(tmp_path / "r"), "--resume"])
    assert rc == 2 and "nothing to resume" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    rc = main(["train", "--data", str(fdf_dir), "--preset", "tiny32", "--out", str(tmp_path / "full")])
    assert rc == 2 and "not empty" in capsys.readouterr().err
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="unknown preset"):
        make_config(fdf_dir, tmp_path / "x", "huge1024")


def test_flip_matches_dataset_flip(fdf_dir):
    """The per-step flip of the training loop is the dataset's flip (keypoint swap included)."""
    from toolkit.data.fdf import FDFDataset
    from toolkit.diffusion.train import flip_batch

    ds = FDFDataset(fdf_dir, "train", size=32)
    keys = ("image", "mask", "keypoints", "visible")
    plain = {k: torch.stack([ds.get(i)[k] for i in range(2)]) for k in keys}
    flipped = flip_batch(plain, torch.tensor([True, False]))
    ref = ds.get(0, flipped=True)
    for k in ("image", "mask", "visible"):
        assert torch.equal(flipped[k][0], ref[k]), k
        assert torch.equal(flipped[k][1], plain[k][1]), k
    vis = ref["visible"]
    assert torch.allclose(flipped["keypoints"][0][vis], ref["keypoints"][vis])


def test_augment_moves_keypoints_and_box_with_the_image():
    """Scale/shift jitter keeps image, keypoints and face box together; tone jitter changes only the tone."""
    from toolkit.diffusion.train import augment_batch

    S, b = 32, 6
    yy, xx = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    kp = torch.full((b, 7, 2), -1.0)
    kp[:, 0] = torch.tensor([[0.3 + 0.08 * i, 0.6 - 0.05 * i] for i in range(b)])  # a bright dot at the nose
    image = -torch.ones(b, 3, S, S)
    for i in range(b):
        image[i] += 2 * torch.exp(-((xx - kp[i, 0, 0] * S) ** 2 + (yy - kp[i, 0, 1] * S) ** 2) / 2.0)
    mask = torch.ones(b, 1, S, S)
    mask[:, :, 10:22, 9:20] = 0
    batch = {"image": image, "mask": mask, "keypoints": kp, "visible": kp[..., 0] >= 0}
    aug = {"scale": 0.2, "shift": 0.1}
    assert augment_batch(batch, torch.Generator().manual_seed(0), {}) is batch
    out = augment_batch(batch, torch.Generator().manual_seed(0), aug)
    again = augment_batch(batch, torch.Generator().manual_seed(0), aug)
    assert all(torch.equal(out[k], again[k]) for k in out)  # drawn from the step's generator only
    assert not torch.equal(out["image"], image)
    for i in range(b):
        peak = divmod(int(out["image"][i, 0].argmax()), S)
        nose = out["keypoints"][i, 0] * S
        assert abs(peak[1] + 0.5 - nose[0]) <= 1.0 and abs(peak[0] + 0.5 - nose[1]) <= 1.0
        assert bool(out["visible"][i, 0]) and not bool(out["visible"][i, 1:].any())
        ys, xs = torch.nonzero(out["mask"][i, 0] == 0, as_tuple=True)  # still one box, around the moved box
        assert len(ys) == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    from toolkit.diffusion.cli import parse_augment

    assert parse_augment("scale=0.2, shift=0.1") == aug and parse_augment(None) is None
    for bad in ("zoom=0.1", "scale=big", "shift=1.5"):
        with pytest.raises(ValueError, match="--augment"):
            parse_augment(bad)
    tone = augment_batch(batch, torch.Generator().manual_seed(1), {"brightness": 0.2, "contrast": 0.3})
    assert torch.equal(tone["mask"], mask) and torch.equal(tone["keypoints"], kp)
    assert not torch.allclose(tone["image"], image) and tone["image"].abs().max() <= 1


def test_heatmaps_match_data_keypoint_maps(fdf_dir):
    from toolkit.data.fdf import keypoint_maps
    from toolkit.diffusion.model import keypoint_heatmaps

    b = _faces(fdf_dir, 32, n=3)
    ours = keypoint_heatmaps(b["keypoints"], b["visible"], 32, 1.5)
    theirs = keypoint_maps(b["keypoints"], b["visible"], 32, "heatmap", 1.5)
    assert torch.allclose(ours, theirs, atol=1e-5)
    assert b["visible"].any()
    assert float(ours.amax()) > 0.6 and torch.all(ours[~b["visible"]] == 0)


# ------------------------------------------------------------------------------------------- sampling


def test_reconstruction_guidance_lowers_known_error(tiny_teacher_run, fdf_dir):
    model = load_inpainter(tiny_teacher_run)
    b = _faces(fdf_dir, model.resolution, n=6)
    args = (b["image"], b["mask"], b["keypoints"], b["visible"])
    common = dict(seed=3, steps=10, scheduler="ddim", cfg_scale=1.0, return_info=True)
    _, plain = model.inpaint(*args, rg_weight=0.0, **common)
    _, guided = model.inpaint(*args, rg_weight=1.0, **common)
    assert float(guided["known_error"].mean()) < 0.9 * float(plain["known_error"].mean()), (
        plain["known_error"], guided["known_error"])
    assert float(guided["x0_known_error"].mean()) < float(plain["x0_known_error"].mean())


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "dpm"])
def test_sampling_is_seeded_and_keeps_known_pixels(tiny_teacher_run, fdf_dir, scheduler):
    model = load_inpainter(tiny_teacher_run)
    b = _faces(fdf_dir, model.resolution, n=3)
    args = (b["image"], b["mask"], b["keypoints"], b["visible"])
    opts = dict(steps=6, scheduler=scheduler, cfg_scale=2.0)
    a1 = model.inpaint(*args, seed=7, **opts)
    a2 = model.inpaint(*args, seed=7, **opts)
    other = model.inpaint(*args, seed=8, **opts)
    assert torch.equal(a1, a2)
    hole = b["mask"].expand_as(a1) == 0
    assert (a1 - other).abs()[hole].mean() > 1e-3
    known = ~hole
    assert torch.equal(a1[known], b["image"][known])
    assert a1.shape == b["image"].shape and a1.min() >= -1 and a1.max() <= 1
    # Per-image generators: face 1 alone, with face 1's seed, gives the same result as inside the batch.
    alone = model.inpaint(*(t[1:2] for t in args), seed=[8], **opts)
    assert torch.allclose(alone[0], a1[1], atol=1e-4)


def test_cfg_scale_changes_result(tiny_teacher_run, fdf_dir):
    model = load_inpainter(tiny_teacher_run)
    b = _faces(fdf_dir, model.resolution, n=2)
    args = (b["image"], b["mask"], b["keypoints"], b["visible"])
    uncond = model.inpaint(*args, seed=1, steps=5, cfg_scale=0.0)
    guided = model.inpaint(*args, seed=1, steps=5, cfg_scale=3.0)
    assert (uncond - guided).abs().max() > 1e-3


def test_inpainter_input_and_artifact_errors(tiny_teacher_run, fdf_dir, tmp_path):
    model = load_inpainter(tiny_teacher_run)
    b = _faces(fdf_dir, model.resolution, n=1)
    with pytest.raises(ValueError, match="shape"):
        model.inpaint(b["image"][:, :, :16], b["mask"], b["keypoints"], b["visible"])
    with pytest.raises(ValueError, match="unknown sampling"):
        model.inpaint(b["image"], b["mask"], b["keypoints"], b["visible"], stepz=3)
    with pytest.raises(ValueError, match="unknown scheduler"):
        model.inpaint(b["image"], b["mask"], b["keypoints"], b["visible"], scheduler="euler-xyz")
    with pytest.raises(ArtifactError, match="no such artifact"):
        load_inpainter(tmp_path / "missing")
    with pytest.raises(ArtifactError, match="not a toolkit artifact"):
        load_inpainter(fdf_dir / "train")
    with pytest.raises(ArtifactError, match="'dataset'"):
        load_inpainter(fdf_dir)  # a dataset's toolkit.json, not a model
    broken = tmp_path / "broken"
    write_manifest(broken, "teacher", preset={"resolution": 32})
    with pytest.raises(ArtifactError, match="incomplete"):
        load_inpainter(broken)


def test_sample_cli(tiny_teacher_run, fdf_dir, tmp_path, capsys):
    out = tmp_path / "samples"
    argv = ["sample", "--model", str(tiny_teacher_run), "--data", str(fdf_dir), "--out", str(out),
            "--split", "train", "-n", "3", "--steps", "4", "--rg-weight", "1", "--seed", "5"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["num_faces"] == 3 and len(results["known_error"]["per_face"]) == 3
    assert results["sampling"]["rg_weight"] == 1.0
    assert sorted(p.name for p in (out / "images").iterdir()) == ["0.png", "1.png", "2.png"]
    from PIL import Image

    grid = Image.open(out / "grid.png")
    assert grid.size[0] > 4 * 32 and grid.size[1] > 3 * 32
    # Refuses to write into a non-empty folder, and a model that is not a model.
    assert main(argv) == 2 and "not empty" in capsys.readouterr().err
    assert main(["sample", "--model", str(fdf_dir), "--data", str(fdf_dir), "--out", str(tmp_path / "o2")]) == 2
    assert "'dataset' artifact" in capsys.readouterr().err


def test_sample_cli_refuses_teacher_options_for_a_student(tiny_student_run, fdf_dir, tmp_path, capsys):
    out = tmp_path / "s"
    argv = ["sample", "--model", str(tiny_student_run), "--data", str(fdf_dir), "--out", str(out), "--split", "train",
            "-n", "2"]
    assert main(argv + ["--batch-size", "1"]) == 2
    assert "teacher options" in capsys.readouterr().err and not out.exists()
    assert main(argv) == 0 and len(list((out / "images").iterdir())) == 2
