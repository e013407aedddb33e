"""Guided distillation of the teacher into an N-step student (N = 1, 2 or 4).

Scheme (trajectory distillation with the guidance baked in, after Meng et al. "On distillation of guided
diffusion models" and Salimans & Ho "Progressive distillation"):

  1. Teacher targets. For real crops of the training split and seeded Gaussian noise z, the *guided* teacher
     (its own sampler and default options: classifier-free guidance + reconstruction guidance + RePaint
     replacement, DDIM eta=0 at its default steps; see teacher.py) samples from z. We keep its state x_t at the student's
     timesteps t_0 > ... > t_{N-1} (a subset of the teacher's DDIM timesteps, t_0 = the teacher's first,
     where x = z) and its final output. One guided sample costs 2 x steps UNet passes (+ a backward pass per
     step with reconstruction guidance), so the pairs are computed once and cached on disk
     (`teacher_targets.pt`, reused by every epoch and on --resume); `--pairs-per-image` draws more noise.
  2. Step targets. Student step k sees the teacher's x_{t_k} and predicts x0. For k < N-1 its target is the
     x0 whose DDIM update lands exactly on the teacher's x_{t_{k+1}} (`ddim_target_x0`) in the face region,
     and the clean image in the known region; for the last step it is the teacher's final output.
  3. Rollout. The student also runs all N steps from z on its own DDIM updates, and that final x0 is matched
     to the teacher's (so errors of early steps are corrected by later ones, as at inference).
  Loss = mean over steps of the teacher-forced x0 error + the rollout error (one term when N = 1); squared
  errors are weighted 1 in the face box and 0.1 on known pixels (which are pasted back at the end).

Guidance is therefore in the targets: at inference the student makes one pass per step, no double pass.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from toolkit.artifacts import write_json_atomic, write_manifest
from toolkit.diffusion.prior import copy_prior
from toolkit.distill.inpainter import STAGE, ddim_target_x0, sample_student, student_input
from toolkit.distill.student import Student, budget, get_preset

TARGETS_FILE = "teacher_targets.pt"
CHECKPOINT_FILE = "checkpoint.pt"


def pick_timesteps(teacher_timesteps, num_steps: int) -> list[int]:
    """N of the teacher's (descending) DDIM timesteps, evenly spaced along its schedule, starting at its first."""
    tt = [int(t) for t in teacher_timesteps]
    if num_steps < 1 or num_steps > len(tt):
        raise ValueError(f"a {num_steps}-step student needs 1..{len(tt)} steps (teacher samples with {len(tt)})")
    idx = [k * len(tt) // num_steps for k in range(num_steps)]
    return [tt[i] for i in idx]


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def load_faces(dataset, teacher, limit: int | None = None) -> dict:
    """The first `limit` (default all) faces of a split as tensors, with the teacher's keypoint heatmaps.

    Crops are small (32-64 px), so even tens of thousands fit in memory; this keeps the loop free of I/O.
    """
    n = len(dataset) if not limit else min(int(limit), len(dataset))
    items = [dataset.get(i) for i in range(n)]
    faces = {k: torch.stack([it[k] for it in items]) for k in ("image", "mask", "keypoints", "visible")}
    faces["maps"] = teacher.heatmaps(faces["keypoints"], faces["visible"])
    return faces


# --- teacher targets ---------------------------------------------------------------------------------


def compute_targets(teacher, faces: dict, student_timesteps, pairs_per_image: int, seed: int, batch_size: int,
                    progress: bool = True) -> dict:
    """Guided-teacher states at the student's timesteps for every (face, noise draw) pair."""
    from tqdm import tqdm

    from toolkit.distill.teacher import pair_seed

    n = len(faces["image"])
    S = teacher.resolution
    total = n * pairs_per_image
    order = [(r, i) for r in range(pairs_per_image) for i in range(n)]
    xs = torch.empty(total, len(student_timesteps), 3, S, S)
    x0 = torch.empty(total, 3, S, S)
    noise = torch.empty(total, 3, S, S)
    index = torch.tensor([i for _, i in order], dtype=torch.int64)
    with tqdm(total=total, desc="teacher targets", unit="face", disable=not progress) as bar:
        for start in range(0, total, batch_size):
            sl = slice(start, start + batch_size)
            idx = index[sl]
            seeds = [pair_seed(seed, r, i) for r, i in order[sl]]
            final, states, z = teacher.trajectory(faces["image"][idx], faces["mask"][idx], faces["keypoints"][idx],
                                                  faces["visible"][idx], seeds, student_timesteps)
            noise[sl], x0[sl] = z, final
            xs[sl] = torch.stack([states[t] for t in student_timesteps], dim=1)
            bar.update(len(idx))
    return {"x_t": xs, "x0": x0, "noise": noise, "index": index}


def load_or_compute_targets(out: Path, key: dict, teacher, faces, student_timesteps, pairs_per_image, seed,
                            batch_size, progress=True) -> dict:
    """Teacher targets from `out/teacher_targets.pt` when it was made with the same `key`, else computed."""
    path = out / TARGETS_FILE
    if path.exists():
        try:
            cached = torch.load(path, weights_only=False)
        except Exception as exc:  # a truncated cache is recomputed, not fatal
            print(f"{path.name}: unreadable ({exc}); recomputing")
            cached = {}
        if cached.get("key") == key:
            return cached
        print(f"{path.name}: made for other settings; recomputing")
    targets = compute_targets(teacher, faces, student_timesteps, pairs_per_image, seed, batch_size, progress)
    targets["key"] = key
    _atomic_torch_save(targets, path)
    return targets


# --- training ----------------------------------------------------------------------------------------


def step_targets(alphas, x_t, x0_teacher, images, masks):
    """Per-step x0 targets (list of N tensors) from teacher states x_t (B, N, 3, S, S).

    Step k < N-1: the x0 whose DDIM update lands on the teacher's state at t_{k+1} (face region); in the
    known region the clean image (the teacher's own known-region states carry re-noised context, not a
    trajectory, when RePaint is on). Last step: the teacher's final (pasted) x0.
    """
    N = x_t.shape[1]
    targets = []
    for k in range(N - 1):
        jump = ddim_target_x0(x_t[:, k], x_t[:, k + 1], alphas[k], alphas[k + 1])
        targets.append(masks * images + (1 - masks) * jump)
    targets.append(x0_teacher)
    return targets


KNOWN_WEIGHT = 0.1  # loss weight of known pixels (copying the context is easy and pasted over anyway)


def _weighted_mse(pred, target, weight):
    return ((pred - target) ** 2 * weight).sum() / (weight.sum() * pred.shape[1]).clamp_min(1e-8)


def distill_loss(student: Student, alphas, faces: dict, x_t, x0_teacher, noise):
    """(loss, dict of parts) for one batch; faces: image/mask/maps of the batch.

    Pixels are weighted 1 in the face box and KNOWN_WEIGHT elsewhere: the known region only has to be
    plausible enough to keep the intermediate DDIM states in distribution, the face is what gets kept.
    """
    images, masks, maps = faces["image"], faces["mask"], faces["maps"]
    weight = (1 - masks) + KNOWN_WEIGHT * masks
    N = student.num_steps
    parts, losses = {}, []
    for k, target in enumerate(step_targets(alphas, x_t, x0_teacher, images, masks)):
        pred = student(student_input(x_t[:, k], images, masks, maps), k)
        losses.append(_weighted_mse(pred, target, weight))
        parts[f"step{k}"] = float(losses[-1].detach())
    loss = torch.stack(losses).mean()
    if N > 1:
        # Own rollout from z: later steps learn to correct what earlier steps got wrong, as at inference.
        final, _ = sample_student(student, alphas, images, masks, maps, noise, grad=True)
        rollout = _weighted_mse(final, x0_teacher, weight)
        parts["rollout"] = float(rollout.detach())
        loss = loss + rollout
    parts["loss"] = float(loss.detach())
    return loss, parts


@torch.no_grad()
def rollout_error(student: Student, alphas, faces: dict, targets: dict, limit: int = 256) -> float:
    """Mean squared error, over the face box, of the student's own N-step sample vs the teacher's x0."""
    n = min(limit, len(targets["index"]))
    idx = targets["index"][:n]
    masks = faces["mask"][idx]
    final, _ = sample_student(student, alphas, faces["image"][idx], masks, faces["maps"][idx], targets["noise"][:n])
    hole = (1 - masks).expand_as(final)
    return float((((final - targets["x0"][:n]) ** 2) * hole).sum() / hole.sum().clamp_min(1))


def _rng_state():
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def distill(
    teacher_run,
    out,
    steps: int,
    preset: str = "mcu32",
    data=None,
    max_steps: int = 2000,
    batch_size: int = 16,
    lr: float = 2e-3,
    pairs_per_image: int = 1,
    max_images: int | None = None,
    teacher_steps: int | None = None,
    cfg_scale: float | None = None,
    rg_weight: float | None = None,
    teacher_repaint: bool | None = None,
    checkpoint_every: int = 200,
    eval_faces: int = 64,
    probe_iters: int | None = None,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict | None:
    """Train a `steps`-step student from the teacher run; returns the written manifest.

    stop_after: stop (checkpointed) once the run reaches this optimizer step, without writing the artifact;
    continue later with resume=True (time-sliced CPU jobs). Returns None then.
    eval_faces: held-out (val) faces for the final evaluation (0: none); probe_iters: training iterations of
    the keypoint probe behind the adherence figures (None: the probe's default; see toolkit.distill.probe).
    """
    from tqdm import tqdm

    from toolkit.data import FDFDataset
    from toolkit.distill.teacher import load_teacher

    if steps not in (1, 2, 4):
        raise ValueError(f"--steps must be 1, 2 or 4, got {steps}")
    teacher_run, out = Path(teacher_run), Path(out)
    preset_obj = get_preset(preset)
    # Refuses a non-teacher run (a student, a dataset, a random folder) with a clear message.
    teacher = load_teacher(teacher_run, cfg_scale=cfg_scale, rg_weight=rg_weight, repaint=teacher_repaint,
                           steps=teacher_steps)
    if out.resolve() == teacher_run.resolve():
        raise ValueError("--out must differ from --teacher (the teacher run is never overwritten)")
    if not resume and ((out / CHECKPOINT_FILE).exists() or (out / "toolkit.json").exists()):
        raise ValueError(f"{out}: already holds a distillation run; pass --resume to continue it or pick a new --out")
    if preset_obj.resolution != teacher.resolution and preset != "tiny":
        raise ValueError(
            f"student preset {preset} works at {preset_obj.resolution}x{preset_obj.resolution} but the teacher "
            f"at {teacher.resolution}x{teacher.resolution}; pick a preset of the teacher's resolution"
        )
    data = Path(data) if data else teacher.data_dir
    if data is None:
        raise ValueError(f"{teacher_run}: its toolkit.json names no training data; pass --data DIR")
    out.mkdir(parents=True, exist_ok=True)

    train_set = FDFDataset(data, "train", size=teacher.resolution)
    faces = load_faces(train_set, teacher, max_images)
    n_faces = len(faces["image"])

    teacher_ts = teacher.timesteps()
    student_ts = pick_timesteps(teacher_ts, steps)
    alphas = [teacher.alpha_bar(t) for t in student_ts]
    torch.manual_seed(seed)
    student = Student(preset_obj, student_ts, teacher.resolution, alphas,
                      {"kind": "gaussian", "sigma_px": teacher.keypoint_sigma})

    key = {
        "teacher": str(teacher_run.resolve()),
        "teacher_weights_sha256": teacher.weights_sha256,
        "sampling": teacher.sampling_options,
        "student_timesteps": student_ts,
        "data": str(data.resolve()),
        "images": n_faces,
        "pairs_per_image": pairs_per_image,
        "seed": seed,
    }
    targets = load_or_compute_targets(out, key, teacher, faces, student_ts, pairs_per_image, seed,
                                      batch_size, progress)
    n_pairs = len(targets["index"])
    error_before = rollout_error(student, alphas, faces, targets)

    opt = torch.optim.Adam(student.parameters(), lr=lr)
    # Short linear warm-up (unnormalized net), then cosine decay to zero at max_steps.
    warmup = max(1, min(50, max_steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, max_steps) / max_steps)))
    step, history, seconds_before = 0, [], 0.0
    ckpt_path = out / CHECKPOINT_FILE
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, weights_only=False)
        if ckpt["key"] != key or ckpt["preset"] != preset_obj.to_dict() or ckpt["max_steps"] != max_steps:
            raise ValueError(f"{ckpt_path}: checkpoint was made with other settings "
                             "(teacher, data, steps, preset or --max-steps); start a new --out")
        student.load_state_dict(ckpt["student"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        step, history, error_before = ckpt["step"], ckpt["history"], ckpt["error_before"]
        seconds_before = ckpt.get("seconds", 0.0)
        _set_rng_state(ckpt["rng"])
        print(f"resumed from {ckpt_path} at step {step}")
    elif resume:
        print(f"{out}: no checkpoint to resume; starting from scratch")

    def save_checkpoint():
        _atomic_torch_save({
            "student": student.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "step": step, "history": history, "key": key, "preset": preset_obj.to_dict(), "max_steps": max_steps,
            "error_before": error_before, "rng": _rng_state(), "seconds": seconds_before + time.time() - t0,
        }, ckpt_path)

    student.train()
    t0 = time.time()
    with tqdm(total=max_steps, initial=step, desc=f"distill {steps}-step", unit="it", disable=not progress) as bar:
        while step < max_steps:
            idx = torch.randint(0, n_pairs, (min(batch_size, n_pairs),))
            img_idx = targets["index"][idx]
            batch = {k: faces[k][img_idx] for k in ("image", "mask", "maps")}
            loss, parts = distill_loss(student, alphas, batch, targets["x_t"][idx], targets["x0"][idx],
                                       targets["noise"][idx])
            if not math.isfinite(parts["loss"]):
                raise RuntimeError(f"distillation diverged at step {step + 1} (loss {parts['loss']}); lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            history.append({"step": step, **{k: round(v, 6) for k, v in parts.items()}})
            bar.set_postfix(loss=f"{parts['loss']:.4f}")
            bar.update(1)
            if step % checkpoint_every == 0 or step == max_steps or step == stop_after:
                save_checkpoint()
            if stop_after is not None and step >= stop_after and step < max_steps:
                print(f"stopped at step {step}/{max_steps}; continue with --resume")
                return None
    train_seconds = seconds_before + time.time() - t0
    student.eval()
    error_after = rollout_error(student, alphas, faces, targets)
    student.save_pretrained(out)
    copy_prior(teacher_run, out)  # the student samples from the teacher's face prior too

    b = budget(preset_obj, steps, teacher.resolution)
    metrics = {
        "train_face_mse_before": round(error_before, 6),
        "train_face_mse_after": round(error_after, 6),
        "final_loss": history[-1]["loss"] if history else None,
    }
    fields = dict(
        preset=preset,
        steps=steps,
        timesteps=student_ts,
        alphas_cumprod=alphas,
        prediction="x0",
        resolution=teacher.resolution,
        teacher={"path": str(teacher_run.resolve()), "manifest": teacher.manifest,
                 "weights_sha256": teacher.weights_sha256, "timesteps": teacher_ts,
                 "sampling": teacher.sampling_options},
        data=str(data.resolve()),
        conditioning={
            "input": "one (1,14,S,S) tensor: x_t(3) + image*mask(3) + mask(1) + keypoint heatmaps(7)",
            "keypoint_heatmaps": {"kind": "gaussian", "sigma_px": teacher.keypoint_sigma},
            "timestep": "per-step bias table, folded into conv biases by step_module(k)",
        },
        sampler="x=z; step k: x0=student_k(x); k<N-1: DDIM(eta=0) to t_{k+1}; last: clamp(x0); paste known",
        budget=b.to_dict(),
        training={"max_steps": max_steps, "batch_size": batch_size, "lr": lr, "pairs": n_pairs,
                  "pairs_per_image": pairs_per_image, "seed": seed, "seconds": round(train_seconds, 1),
                  "scheme": "guided trajectory distillation: teacher-forced DDIM-jump x0 targets + own rollout"},
        metrics=metrics,
    )
    write_manifest(out, STAGE, **fields)
    write_json_atomic(out / "history.json", history)

    try:
        val_set = FDFDataset(data, "val", size=teacher.resolution)
    except FileNotFoundError:
        val_set = None
        print(f"{data}: no val split; skipping the held-out evaluation")
    if val_set is not None and eval_faces > 0:
        from toolkit.distill.evaluate import (
            PROBE_DIR,
            evaluate_with_probe,
            merge_metrics,
            save_sample_grid,
        )
        from toolkit.distill.inpainter import load_student_inpainter

        result = evaluate_with_probe(teacher, {steps: load_student_inpainter(out)}, val_set, data,
                                     [out / PROBE_DIR], n_faces=eval_faces, probe_iters=probe_iters,
                                     progress=progress)
        if result.get("warning"):
            print(f"warning: {result['warning']}")
        metrics = merge_metrics(metrics, result, steps)
        fields["metrics"] = metrics
        save_sample_grid(out / "samples.png", result["grid_rows"])
    return write_manifest(out, STAGE, **fields)
