"""Teacher training loop (HF Accelerate): EMA, classifier-free-guidance dropout, exact resume.

Run directory layout (RUN = --out):
    RUN/train_config.json        the resolved configuration; `--resume` refuses a different one
    RUN/checkpoints/step-NNNNNNN/ state.pt (model, EMA, optimizer, LR schedule, RNG, step) + meta.json
    RUN/log.csv                  step, loss, lr, time (seconds since the run started, summed over restarts)
    RUN/samples/step-NNNNNNN.png sample grids: context | keypoints | generated | original
    RUN/unet/ RUN/scheduler/ RUN/toolkit.json   the final artifact (EMA weights), written at the end

Exact resume: every random draw of step s (which faces, flips, noise, timesteps, CFG dropout) comes from a
generator seeded by (seed, s, process), and the data order is a per-epoch permutation seeded by (seed, epoch),
so a resumed run replays exactly the draws an uninterrupted run would have made. Checkpoints are written to a
temporary folder, fsynced and renamed, so a SIGKILL leaves either the old or the new checkpoint, never half.
The learning-rate schedule (linear warm-up, then constant) does not depend on --max-steps, so a run stopped at
N and resumed to M equals a run to M.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from toolkit.artifacts import read_manifest, write_json_atomic, write_manifest
from toolkit.diffusion.model import build_unet, condition_channels, conditioning_spec
from toolkit.diffusion.presets import get_preset
from toolkit.keypoints import FLIP_PERMUTATION

CONFIG_FILE = "train_config.json"
LOG_FILE = "log.csv"
KEEP_CHECKPOINTS = 2
# Fields of the config that change the trained weights: --resume refuses a run where any of them differ.
RESULT_FIELDS = ("data", "preset", "batch_size", "lr", "seed", "cfg_dropout", "ema_decay", "warmup_steps",
                 "flip", "mixed_precision", "grad_clip", "known_weight", "weight_decay", "world_size")


@dataclass
class TrainConfig:
    data: str
    out: str
    preset: dict
    max_steps: int
    batch_size: int
    lr: float
    seed: int = 0
    cfg_dropout: float = 0.1
    ema_decay: float = 0.999
    warmup_steps: int = 0
    flip: bool = True
    mixed_precision: str = "no"
    grad_clip: float = 1.0
    known_weight: float = 0.1
    weight_decay: float = 0.0
    world_size: int = 1
    sample_every: int = 0
    checkpoint_every: int = 0
    num_workers: int = 0
    sample_count: int = 8
    progress: bool = True
    extra: dict = field(default_factory=dict)


def make_config(data, out, preset_name: str, *, max_steps=None, batch_size=None, lr=None, seed=0,
                cfg_dropout=None, ema_decay=None, sample_every=None, checkpoint_every=None, num_workers=None,
                mixed_precision="no", world_size=1, flip=None, augment=None, progress=True) -> TrainConfig:
    """A TrainConfig from a preset plus overrides (None keeps the preset's value)."""
    preset = get_preset(preset_name)
    t = preset["train"]
    if augment is not None:
        t["augment"] = dict(augment)  # part of the preset, so --resume refuses a change

    def pick(value, key):
        return t[key] if value is None else value

    cfg = TrainConfig(
        data=str(Path(data).resolve()), out=str(Path(out).resolve()), preset=preset,
        max_steps=int(pick(max_steps, "max_steps")), batch_size=int(pick(batch_size, "batch_size")),
        lr=float(pick(lr, "lr")), seed=int(seed), cfg_dropout=float(pick(cfg_dropout, "cfg_dropout")),
        ema_decay=float(pick(ema_decay, "ema_decay")), warmup_steps=int(t["warmup_steps"]),
        flip=bool(pick(flip, "flip")), mixed_precision=mixed_precision, world_size=int(world_size),
        sample_every=int(pick(sample_every, "sample_every")),
        checkpoint_every=int(pick(checkpoint_every, "checkpoint_every")),
        num_workers=int(pick(num_workers, "num_workers")), progress=progress,
    )
    if cfg.max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {cfg.max_steps}")
    if cfg.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {cfg.batch_size}")
    if not cfg.lr > 0:
        raise ValueError(f"--lr must be > 0, got {cfg.lr}")
    if not 0.0 <= cfg.cfg_dropout < 1.0:
        raise ValueError(f"--cfg-dropout must be in [0, 1), got {cfg.cfg_dropout}")
    return cfg


# ----------------------------------------------------------------------------------------------- data


def check_data(data) -> dict:
    """Refuse a dataset directory that is missing or broken, with the reasons; returns the check report."""
    from toolkit.data.check import check_dataset

    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"--data {path}: no such directory")
    if not path.is_dir():
        raise ValueError(f"--data {path}: not a directory")
    report = check_dataset(path, sample=32)
    if not report["ok"]:
        problems = "\n  ".join(report["problems"])
        raise ValueError(f"--data {path} is not a usable FDF-format dataset "
                         f"({report['num_problems']} problem(s); see `toolkit data check {path}`):\n  {problems}")
    if report["splits"].get("train", {}).get("count", 0) < 1:
        raise ValueError(f"--data {path}: the train split has no faces")
    return report


def data_manifest(data) -> dict | None:
    """The dataset's own toolkit.json (what built it), if it has one."""
    try:
        return read_manifest(data)
    except ValueError:
        return None


class StepBatchSampler(torch.utils.data.Sampler):
    """Index lists for steps start..stop-1 of one process: a fixed function of (seed, step), so resumable.

    Position p in the stream of faces is epoch p // N, slot p % N of that epoch's permutation (seeded by
    seed and epoch). Step s of process r reads positions (s * world + r) * batch ... + batch.
    """

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed = n, batch, seed
        self.start, self.stop, self.rank, self.world = start, stop, rank, world
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, step: int) -> list[int]:
        first = (step * self.world + self.rank) * self.batch
        return [int(self._perm(p // self.n)[p % self.n]) for p in range(first, first + self.batch)]

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003) + step) * 64 + rank)


def flip_batch(batch: dict, flips: torch.Tensor) -> dict:
    """Mirror the faces where `flips` is True: image, mask, x coordinates, and swap left/right points."""
    if not bool(flips.any()):
        return batch
    out = dict(batch)
    f4 = flips[:, None, None, None]
    out["image"] = torch.where(f4, batch["image"].flip(-1), batch["image"])
    out["mask"] = torch.where(f4, batch["mask"].flip(-1), batch["mask"])
    perm = list(FLIP_PERMUTATION)
    kp_f = batch["keypoints"][:, perm].clone()
    kp_f[..., 0] = 1.0 - kp_f[..., 0]
    out["keypoints"] = torch.where(flips[:, None, None], kp_f, batch["keypoints"])
    out["visible"] = torch.where(flips[:, None], batch["visible"][:, perm], batch["visible"])
    return out


AUGMENTS = ("scale", "shift", "brightness", "contrast")


def augment_batch(batch: dict, g: torch.Generator, augment: dict) -> dict:
    """Jitter a batch the way a small face set needs (the preset's `train.augment`; empty = nothing drawn):
    `scale` and `shift` (fractions of the crop) zoom and move the whole crop, keypoints and face box with
    it; `brightness` and `contrast` (fractions of the [-1, 1] range) change its tone. Every draw comes from
    the step's generator `g`, so resumed runs repeat them exactly."""
    if not augment:
        return batch
    import torch.nn.functional as F

    out = dict(batch)
    b = batch["image"].shape[0]

    def draw(amount):  # one uniform draw in [-amount, amount] per face
        return (torch.rand(b, generator=g) * 2 - 1) * float(amount)

    if augment.get("scale") or augment.get("shift"):
        shift = float(augment.get("shift", 0)) * 2  # normalized coordinates span 2
        zoom, tx, ty = 1 + draw(augment.get("scale", 0)), draw(shift), draw(shift)
        # Output point p (normalized to [-1, 1]) shows input point (p - t) / zoom.
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
        theta[:, 0, 2], theta[:, 1, 2] = -tx / zoom, -ty / zoom
        grid = F.affine_grid(theta, list(batch["image"].shape), align_corners=False)
        out["image"] = F.grid_sample(batch["image"], grid, mode="bilinear", padding_mode="reflection",
                                     align_corners=False)
        # A pixel touched by the face box is generated: the box only ever grows under resampling.
        mask = F.grid_sample(batch["mask"], grid, mode="bilinear", padding_mode="border", align_corners=False)
        out["mask"] = (mask > 0.999).to(batch["mask"].dtype)
        kp = batch["keypoints"].clone()
        kp[..., 0] = (zoom[:, None] * (2 * kp[..., 0] - 1) + tx[:, None] + 1) / 2
        kp[..., 1] = (zoom[:, None] * (2 * kp[..., 1] - 1) + ty[:, None] + 1) / 2
        out["visible"] = batch["visible"] & ((kp >= 0) & (kp <= 1)).all(-1)
        out["keypoints"] = torch.where(out["visible"][..., None], kp, torch.full_like(kp, -1.0))
    if augment.get("brightness") or augment.get("contrast"):
        gain, offset = 1 + draw(augment.get("contrast", 0)), draw(augment.get("brightness", 0)) * 2
        mean = out["image"].mean(dim=(1, 2, 3), keepdim=True)
        out["image"] = ((out["image"] - mean) * gain.view(b, 1, 1, 1) + mean + offset.view(b, 1, 1, 1)).clamp(-1, 1)
    return out


# ------------------------------------------------------------------------------------------ checkpoints


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


def latest_checkpoint(run: Path) -> Path | None:
    """The newest complete checkpoint (only complete ones carry the final name: they are renamed into place)."""
    d = checkpoint_dir(run)
    if not d.is_dir():
        return None
    done = sorted((p for p in d.glob("step-*") if (p / "state.pt").exists()), key=lambda p: int(p.name[5:]))
    return done[-1] if done else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run: Path, step: int, state: dict, meta: dict) -> Path:
    """Atomically write checkpoints/step-N: temp folder, fsync every file, rename, fsync the parent."""
    d = checkpoint_dir(run)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"step-{step:07d}"
    tmp = d / f".tmp-step-{step:07d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    with open(tmp / "state.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    write_json_atomic(tmp / "meta.json", meta)
    _fsync_dir(tmp)
    if final.exists():  # same step saved before a crash: replace it
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync_dir(d)
    # Keep the newest few; older ones only cost disk.
    done = sorted((p for p in d.glob("step-*")), key=lambda p: int(p.name[5:]))
    for old in done[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _clean_temp_checkpoints(run: Path) -> None:
    for p in checkpoint_dir(run).glob(".tmp-step-*"):
        shutil.rmtree(p, ignore_errors=True)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -------------------------------------------------------------------------------------------- run dir


def _comparable(cfg: dict) -> dict:
    return {k: cfg.get(k) for k in RESULT_FIELDS}


def prepare_run_dir(cfg: TrainConfig, resume: bool) -> Path | None:
    """Create or validate RUN; returns the checkpoint to resume from (None = start at step 0)."""
    run = Path(cfg.out)
    saved_cfg = run / CONFIG_FILE
    if not resume:
        if run.exists() and any(run.iterdir()):
            raise ValueError(f"--out {run} already exists and is not empty; use --resume to continue that run, "
                             "or choose a new --out")
        run.mkdir(parents=True, exist_ok=True)
        write_json_atomic(saved_cfg, asdict(cfg))
        return None
    if not run.is_dir():
        raise FileNotFoundError(f"--resume: {run} does not exist (nothing to resume)")
    if not saved_cfg.exists():
        raise ValueError(f"--resume: {run} is not a training run (no {CONFIG_FILE})")
    old = json.loads(saved_cfg.read_text())
    a, b = _comparable(old), _comparable(asdict(cfg))
    diff = [k for k in RESULT_FIELDS if a[k] != b[k]]
    if diff:
        lines = "\n  ".join(f"{k}: run has {a[k]!r}, now {b[k]!r}" for k in diff)
        raise ValueError(f"--resume: the configuration differs from the one {run} was started with, so the run "
                         f"could not continue identically:\n  {lines}")
    _clean_temp_checkpoints(run)
    write_json_atomic(saved_cfg, asdict(cfg))  # max_steps / sample_every may change on resume
    return latest_checkpoint(run)


def _trim_log(run: Path, step: int) -> float:
    """Drop log rows after `step` (they are redone after a resume); returns the elapsed time at `step`."""
    path = run / LOG_FILE
    if not path.exists():
        return 0.0
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "loss", "lr", "time"])
        w.writeheader()
        w.writerows(rows)
    return float(rows[-1]["time"]) if rows else 0.0


def read_log(run) -> list[dict]:
    """log.csv rows as dicts of numbers."""
    with open(Path(run) / LOG_FILE, newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


# ------------------------------------------------------------------------------------------------ train


def lr_lambda(warmup: int):
    return lambda step: min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def train(cfg: TrainConfig, resume: bool = False, accelerator=None) -> Path:
    """Train (or continue) the teacher described by `cfg`; returns the run directory (the final artifact)."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from toolkit.data.fdf import FDFDataset

    accelerator = accelerator or Accelerator(mixed_precision=cfg.mixed_precision)
    cfg.world_size = accelerator.num_processes
    check_report = check_data(cfg.data)
    run = Path(cfg.out)
    resume_from = None
    if accelerator.is_main_process:
        resume_from = prepare_run_dir(cfg, resume)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        resume_from = latest_checkpoint(run) if resume else None

    preset = cfg.preset
    size = preset["resolution"]
    dataset = FDFDataset(cfg.data, "train", size=size, flip=False)  # flips are drawn per step below
    val = None
    try:
        val = FDFDataset(cfg.data, "val", size=size, flip=False)
    except FileNotFoundError:
        pass
    preview = val if val is not None else dataset

    torch.manual_seed(cfg.seed)  # initial weights
    unet = build_unet(preset)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay, model_cls=type(unet), model_config=unet.config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg.warmup_steps))
    noise_sched = DDPMScheduler(**preset["noise"])
    predict_v = noise_sched.config.prediction_type == "v_prediction"

    start = 0
    elapsed0 = 0.0
    if resume_from is not None:
        # Our own file (it holds numpy/python RNG states, which weights_only=True refuses).
        state = torch.load(resume_from / "state.pt", map_location="cpu", weights_only=False)
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        lr_sched.load_state_dict(state["lr_scheduler"])
        _set_rng_state(state["rng"])
        start = int(state["step"])
        elapsed0 = float(state.get("elapsed", 0.0))
        if accelerator.is_main_process:
            accelerator.print(f"resuming {run} from {resume_from.name} (step {start})")
    if accelerator.is_main_process:
        elapsed0 = _trim_log(run, start) if resume_from is not None else 0.0
        if resume_from is None and (run / LOG_FILE).exists():
            (run / LOG_FILE).unlink()

    unet, optimizer = accelerator.prepare(unet, optimizer)
    ema.to(accelerator.device)
    if resume_from is not None and state.get("scaler") is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(state["scaler"])

    sampler = StepBatchSampler(len(dataset), cfg.batch_size, cfg.seed, start, cfg.max_steps,
                               accelerator.process_index, accelerator.num_processes)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                                         persistent_workers=False)
    abar = noise_sched.alphas_cumprod
    sigma = float(preset["keypoint_sigma"])
    t_run = time.time()

    def elapsed():
        return elapsed0 + time.time() - t_run

    def snapshot(step: int) -> dict:
        model = accelerator.unwrap_model(unet)
        return {
            "step": step,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_sched.state_dict(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "rng": _rng_state(),
            "elapsed": elapsed(),
        }

    log_f = None
    if accelerator.is_main_process:
        new = not (run / LOG_FILE).exists()
        log_f = open(run / LOG_FILE, "a", newline="", buffering=1)  # line-buffered: readable while training
        log_w = csv.writer(log_f)
        if new:
            log_w.writerow(["step", "loss", "lr", "time"])
    bar = tqdm(total=cfg.max_steps, initial=start, desc=f"train {preset['name']}", unit="step",
               disable=not (cfg.progress and accelerator.is_main_process), dynamic_ncols=True)
    unet.train()
    step = start
    try:
        for batch in loader:
            g = step_generator(cfg.seed, step, accelerator.process_index)
            b = batch["image"].shape[0]
            # All draws of this step, in a fixed order, on the CPU (identical on every device type).
            flips = (torch.rand(b, generator=g) < 0.5) if cfg.flip else torch.zeros(b, dtype=torch.bool)
            noise = torch.randn(batch["image"].shape, generator=g)
            t = torch.randint(0, noise_sched.config.num_train_timesteps, (b,), generator=g)
            keep_kp = torch.rand(b, generator=g) >= cfg.cfg_dropout
            batch = augment_batch(flip_batch(batch, flips), g, preset["train"].get("augment", {}))

            dev = accelerator.device
            x0 = batch["image"].to(dev)
            mask = batch["mask"].to(dev)
            noise, t = noise.to(dev), t.to(dev)
            a = abar.to(dev)[t].view(b, 1, 1, 1)
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
            target = a.sqrt() * noise - (1 - a).sqrt() * x0 if predict_v else noise
            cond = condition_channels(x0, mask, batch["keypoints"].to(dev), batch["visible"].to(dev), sigma,
                                      keep_kp.to(dev))
            with accelerator.autocast():
                pred = unet(torch.cat([x_t, cond], 1), t).sample
            # Known pixels' noise follows from x_t and the context, so they are easy; down-weight them so the
            # loss (and capacity) goes to the face box. They keep some weight: reconstruction guidance needs
            # a sensible clean-image prediction there.
            w = (1 - mask) + cfg.known_weight * mask
            loss = (((pred.float() - target) ** 2) * w).sum() / (w.sum() * pred.shape[1])
            accelerator.backward(loss)
            if cfg.grad_clip > 0 and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(unet.parameters(), cfg.grad_clip)
            optimizer.step()
            lr_sched.step()
            optimizer.zero_grad(set_to_none=True)
            ema.step(accelerator.unwrap_model(unet).parameters())
            step += 1

            loss_v = accelerator.gather(loss.detach()[None]).mean().item()
            if not math.isfinite(loss_v):
                raise RuntimeError(f"training diverged at step {step} (loss {loss_v}); try a lower --lr")
            if accelerator.is_main_process:
                log_w.writerow([step, f"{loss_v:.6f}", f"{lr_sched.get_last_lr()[0]:.6g}", f"{elapsed():.3f}"])
                bar.update(1)
                bar.set_postfix(loss=f"{loss_v:.4f}")
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.max_steps:
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    log_f.flush()
                    os.fsync(log_f.fileno())
                    save_checkpoint(run, step, snapshot(step), {"step": step, "time": elapsed()})
            if cfg.sample_every and step % cfg.sample_every == 0 and accelerator.is_main_process:
                write_samples(accelerator.unwrap_model(unet), ema, noise_sched, preview, sigma,
                              run / "samples" / f"step-{step:07d}.png", cfg.sample_count)
    finally:
        bar.close()
        if log_f is not None:
            log_f.close()

    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final_model = accelerator.unwrap_model(unet)
        save_checkpoint(run, step, snapshot(step), {"step": step, "time": elapsed()})
        write_artifact(run, cfg, final_model, ema, noise_sched, check_report, step, elapsed())
        write_samples(final_model, ema, noise_sched, preview, sigma, run / "samples" / f"step-{step:07d}.png",
                      cfg.sample_count)
    accelerator.wait_for_everyone()
    return run


def _ema_unet(model, ema):
    """A CPU float32 copy of `model` carrying the EMA weights (the training model is left untouched)."""
    import copy

    m = copy.deepcopy(model).float().cpu()
    ema_cpu = copy.deepcopy(ema)
    ema_cpu.to("cpu")
    ema_cpu.copy_to(m.parameters())
    return m.eval()


def write_artifact(run: Path, cfg: TrainConfig, model, ema, noise_sched, check_report, step, elapsed) -> None:
    """Final diffusers-style artifact: unet/ (EMA weights), scheduler/, toolkit.json."""
    from toolkit.diffusion.sampling import SAMPLING_DEFAULTS

    from toolkit.diffusion.prior import build_face_prior

    _ema_unet(model, ema).save_pretrained(run / "unet")
    noise_sched.save_pretrained(run / "scheduler")
    prior = build_face_prior(cfg.data, cfg.preset["resolution"])
    prior.save(run)
    losses = [r["loss"] for r in read_log(run)]
    tail = losses[-min(len(losses), 50):]
    write_manifest(
        run, "teacher",
        preset=cfg.preset,
        data={"path": cfg.data, "manifest": data_manifest(cfg.data),
              "num_faces": {k: v.get("count", 0) for k, v in check_report["splits"].items()}},
        steps=step,
        train={k: v for k, v in asdict(cfg).items() if k not in ("preset", "data", "out", "progress", "extra")},
        weights="EMA (unet/), decay %g" % cfg.ema_decay,
        conditioning=conditioning_spec(cfg.preset),
        loss={"kind": f"weighted mse({noise_sched.config.prediction_type}): weight 1 in the face box, "
                      "known_weight on known pixels",
              "known_weight": cfg.known_weight, "final_mean_last_50": float(np.mean(tail)) if tail else None},
        cfg_dropout=cfg.cfg_dropout,
        lr_schedule=f"linear warm-up over {cfg.warmup_steps} steps, then constant {cfg.lr:g}",
        sampling_defaults=SAMPLING_DEFAULTS,
        face_prior=prior.describe(),
        train_time_s=round(elapsed, 1),
    )


@torch.no_grad()
def write_samples(model, ema, noise_sched, dataset, sigma, path, count: int, steps: int = 25) -> None:
    """Sample grid with the EMA weights on the first faces of `dataset` (fixed seed, DDIM)."""
    from toolkit.diffusion.grids import keypoint_overlay, write_grid
    from toolkit.diffusion.sampling import guided_inpaint, make_scheduler

    items = [dataset.get(i) for i in range(min(count, len(dataset)))]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("image", "mask", "keypoints", "visible")}
    unet = _ema_unet(model, ema)
    sched = make_scheduler("ddim", noise_sched.config)
    out, _ = guided_inpaint(unet, sched, batch["image"], batch["mask"], batch["keypoints"], batch["visible"],
                            keypoint_sigma=sigma, seed=0, steps=steps, cfg_scale=1.0)
    context = batch["image"] * batch["mask"]
    kp = keypoint_overlay(batch["image"], batch["mask"], batch["keypoints"], batch["visible"], sigma)
    write_grid(path, [context, kp, out, batch["image"]])
