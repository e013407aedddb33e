"""Training the pose model by distillation from BlazePose, on anonymized images.

    images ──toolkit.detect (teacher, ORIGINAL pixels)──► labels (7 keypoints + visibility per person)
       └──toolkit.anonymize (method)──► processed pixels ──► person regions ──► augmented views
                                                                    └──► PoseNet (heatmap MSE vs labels)

The labels never come from the processed image: the question the product answers is whether a model that
only ever saw anonymized faces still finds real faces' keypoints (see benchmarks/pose_experiment.py).
Fail closed: an image whose faces could not all be anonymized is left out of training, never used as is.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from toolkit.pose import data as D
from toolkit.pose import multi
from toolkit.pose.model import PoseNet, budget, disallowed_modules, get_preset, render_heatmaps

STAGE = "pose"
METHODS = ("ddpm", "blur", "pixelate", "mask", "original")
REGIONS_FILE = "train_regions.npz"  # the (processed) training regions: calibration data for `toolkit quantize`


@dataclass
class TrainSettings:
    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-3
    sigma: float = 1.0  # target Gaussian width in heatmap cells
    seed: int = 0
    preset: str = "mcu96"
    size: int = 96
    threads: int | None = None  # torch CPU threads (None: torch's default)


# ---------------------------------------------------------------------------------------------- anonymization


def process_images(people: dict, method: str, inpainter=None, seed: int = 0, sampling: dict | None = None,
                   progress: bool = True):
    """path -> processed HxWx3 uint8 (only images whose every detected face was replaced), and a report.

    `people` (from `data.detect_people`) are the detections on the originals: the anonymizer replaces
    exactly those faces, so the labels and the anonymized pixels describe the same people.
    """
    from tqdm.auto import tqdm

    from toolkit.images import load_rgb

    if method not in METHODS:
        raise ValueError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "ddpm" and inpainter is None:
        raise ValueError("--method ddpm needs a teacher or student run (--model RUN); or pass --method "
                         "blur|pixelate|mask|original explicitly")
    out, skipped = {}, []
    for i, path in enumerate(tqdm(list(people), desc=f"anonymize ({method})", disable=not progress, leave=False)):
        img = load_rgb(path)
        if method == "original" or not people[path]:
            out[path] = img
            continue
        from toolkit.anonymize import FaceNotAnonymizedError, anonymize_image

        try:
            out[path], _ = anonymize_image(img, method=method, inpainter=inpainter, seed=seed + i,
                                           persons=people[path], on_miss="refuse", **(sampling or {}))
        except FaceNotAnonymizedError as exc:
            skipped.append({"image": path, "reason": str(exc)})
            print(f"toolkit pose: skipping {path}: {exc}", file=sys.stderr)
    return out, {"method": method, "images_used": len(out), "images_skipped": skipped}


# ---------------------------------------------------------------------------------------------- optimisation


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Squared error summed over each map, averaged over maps; `weight` (B, K) drops unknown keypoints."""
    per_map = ((pred - target) ** 2).sum(dim=(2, 3))
    return (per_map * weight).sum() / weight.sum().clamp(min=1.0)


def fit(regions: D.Regions, settings: TrainSettings, progress: bool = True, net: PoseNet | None = None):
    """Train a PoseNet on augmented views of `regions`; returns (net, losses per step)."""
    if len(regions) == 0:
        raise ValueError("no usable people to train on (none detected, too small, or every image skipped)")
    if settings.steps < 1 or settings.batch_size < 1:
        raise ValueError("--steps and --batch-size must be >= 1")
    threads_before = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    try:
        return _fit(regions, settings, progress, net)
    finally:
        torch.set_num_threads(threads_before)  # process-wide setting: leave it as the caller had it


def _fit(regions: D.Regions, settings: TrainSettings, progress: bool, net: PoseNet | None):
    from tqdm.auto import tqdm

    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    net = net or PoseNet(get_preset(settings.preset), settings.size)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    warmup = max(1, min(100, settings.steps // 10))

    def lr_factor(k: int) -> float:  # linear warm-up, then cosine decay to zero
        return min(1.0, (k + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(k, settings.steps) / settings.steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    losses = []
    bar = tqdm(range(settings.steps), desc="train pose", disable=not progress, leave=False)
    for _ in bar:
        if net.multi_person:  # frames of 0-4 people composed from the regions (toolkit.pose.multi)
            imgs, people = multi.compose_frames(regions, settings.batch_size, rng, settings.size)
            loss = multi.loss(net(D.to_model_input(imgs)), people, net.stride)
        else:
            imgs, kps, vis, _ = D.random_views(regions, settings.batch_size, rng, settings.size)
            target = torch.from_numpy(render_heatmaps(kps, vis.astype(float), net.heatmap_size, net.stride,
                                                      settings.sigma))
            # Teacher-visible points are supervised wherever they are: outside the view the target is all zero
            # (the model learns to say "not in frame"). Points the teacher did not see carry no loss.
            weight = torch.from_numpy(vis.astype(np.float32))
            loss = heatmap_loss(net(D.to_model_input(imgs)), target, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return net.eval(), losses


# ---------------------------------------------------------------------------------------------- the command's work


def load_generator(model_run):
    """The teacher or student inpainter of `model_run` (what `toolkit anonymize --model` loads)."""
    from toolkit.anonymize.runner import load_model

    return load_model(model_run, "cpu")


def train_pose(images, out, *, method: str | None = None, model_run=None, settings: TrainSettings | None = None,
               people: dict | None = None, inpainter=None, sampling: dict | None = None, progress: bool = True) -> dict:
    """`toolkit pose train`: returns the written manifest. `people` / `inpainter` may be passed in to reuse
    detections and a loaded generator across runs (the experiment script does)."""
    from toolkit.artifacts import write_manifest

    settings = settings or TrainSettings()
    out = Path(out)
    if method is None:
        if model_run is None and inpainter is None:
            raise ValueError("training on anonymized images is the default and needs a generator: pass --model RUN "
                             "(a teacher or student run) for --method ddpm, or choose --method "
                             "blur|pixelate|mask|original explicitly")
        method = "ddpm"
    if method not in METHODS:
        raise ValueError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if model_run is not None and method != "ddpm":
        raise ValueError(f"--model generates faces for --method ddpm only; drop it or drop --method {method}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out}: exists and is not empty; pick a new run directory")
    get_preset(settings.preset)
    paths = D.list_image_files(images)
    generator = {}
    if method == "ddpm" and inpainter is None:
        if model_run is None:
            raise ValueError("--method ddpm needs --model RUN (a teacher or student run)")
        inpainter = load_generator(model_run)
    if method == "ddpm":
        generator = {"run": str(Path(model_run).resolve()) if model_run else None,
                     "stage": (getattr(inpainter, "manifest", None) or {}).get("stage")}

    t0 = time.time()
    people = D.people_for(paths, people, progress)
    labels = D.teacher_labels(people)
    processed, report = process_images(people, method, inpainter, settings.seed, sampling, progress)
    regions = D.build_regions(processed, labels)
    if len(regions) == 0:
        raise ValueError(f"--images {images}: no usable person found for training ({len(paths)} image(s); people "
                         f"need >= {D.MIN_VISIBLE} visible keypoints and >= {D.MIN_PERSON_PX:.0f} px)")
    net, losses = fit(regions, settings, progress)
    bad = disallowed_modules(net)
    if bad:  # never expected: the architecture only builds allowed modules
        raise RuntimeError(f"pose model contains non-MCU modules: {bad}")
    b = budget(net)

    out.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(out)
    regions.save(out / REGIONS_FILE)
    return write_manifest(
        out, STAGE,
        method=method,
        generator=generator or None,
        sampling=sampling or {},
        teacher={"name": "BlazePose full + BlazeFace (toolkit.detect) on the ORIGINAL images",
                 "keypoints": "7 FDF keypoints, COCO order (toolkit.keypoints.NAMES)"},
        data={"images": str(Path(images).resolve()), "num_images": len(paths),
              "images_with_people": sum(1 for v in labels.values() if v), "people": len(regions),
              "regions_file": REGIONS_FILE, **report},
        model={"class": "PoseNet", "preset": settings.preset, "input": [1, 3, settings.size, settings.size],
               "input_range": [-1.0, 1.0], "output": [1, net.out_channels, net.heatmap_size, net.heatmap_size], "stride": net.stride,
               "outputs": net.preset.outputs},
        params=b.params,
        macs=b.macs,
        budget=b.to_dict(),
        training={**asdict(settings), "loss_first": losses[0], "loss_last": float(np.mean(losses[-20:])),
                  "augmentation": {"crop_scale": list(D.CROP_SCALE_RANGE), "max_shift": D.MAX_SHIFT,
                                   "max_rotation_deg": D.MAX_ROTATION_DEG, "flip": "with left/right swap",
                                   "color": "brightness/contrast/white balance"}},
        seconds=round(time.time() - t0, 1),
    )
