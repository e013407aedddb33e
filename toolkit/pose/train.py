"""Training the pose model on anonymized images, from BlazePose pseudo-labels or human COCO labels.

    images ──toolkit.detect (teacher, ORIGINAL pixels)──► labels (7 keypoints + visibility per person)
       │     (or --coco: the annotation file's labels, toolkit.pose.coco, with its ignore regions)
       └──toolkit.anonymize (method)──► processed pixels ──► person regions ──► augmented views
                                                                    └──► PoseNet (heatmap MSE vs labels)

The labels never come from the processed image: the question the product answers is whether a model that
only ever saw anonymized faces still finds real faces' keypoints (see benchmarks/pose_experiment.py).
Fail closed: an image whose faces could not all be anonymized is left out of training, never used as is (with
COCO labels: also an image with a labelled face that the detector, hence the anonymizer, did not find).
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
from toolkit.pose import heads, multi
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
                   progress: bool = True, labelled_faces: dict | None = None):
    """path -> processed HxWx3 uint8 (only images whose every detected face was replaced), and a report.

    `people` (from `data.detect_people`) are the detections on the originals: the anonymizer replaces
    exactly those faces, so the labels and the anonymized pixels describe the same people. `labelled_faces`
    (path -> list of (k, 2) labelled face points, from human labels) are faces that must be among them: an
    image with one that no detected face box covers is skipped (that face would stay as it is).
    """
    from tqdm.auto import tqdm

    from toolkit.anonymize.runner import face_covered
    from toolkit.images import load_rgb

    if method not in METHODS:
        raise ValueError(f"unknown --method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "ddpm" and inpainter is None:
        raise ValueError("--method ddpm needs a teacher or student run (--model RUN); or pass --method "
                         "blur|pixelate|mask|original explicitly")
    out, skipped = {}, []
    for i, path in enumerate(tqdm(list(people), desc=f"anonymize ({method})", disable=not progress, leave=False)):
        img = load_rgb(path)
        if method == "original":
            out[path] = img
            continue
        boxes = [{"face_box": np.asarray(p.face_box).tolist()} for p in people[path]]
        missed = sum(not face_covered(pts, boxes) for pts in (labelled_faces or {}).get(path, []))
        if missed:
            reason = f"{missed} labelled face(s) not found by the face detector, so they cannot be anonymized"
            skipped.append({"image": path, "reason": reason})
            print(f"toolkit pose: skipping {path}: {reason}", file=sys.stderr)
            continue
        if not people[path]:
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


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                 ignore: torch.Tensor | None = None) -> torch.Tensor:
    """Squared error summed over each map, averaged over maps; `weight` (B, K) drops unknown keypoints, `ignore`
    (B, 1, h, w) drops ignored cells (toolkit.pose.data.ignored_cells) away from the map's own peak."""
    sq = (pred - target) ** 2
    if ignore is not None:
        sq = sq * (1.0 - ignore * (target < 0.05).float())
    per_map = sq.sum(dim=(2, 3))
    return (per_map * weight).sum() / weight.sum().clamp(min=1.0)


def fit(regions: D.Regions, settings: TrainSettings, progress: bool = True, net: PoseNet | None = None,
        replaced=None):
    """Train a PoseNet on augmented views of `regions`; returns (net, losses per step). `replaced` (verifier
    only): the frame pipeline's outputs on frames of these regions (toolkit.pose.heads.replaced_batch)."""
    if len(regions) == 0:
        raise ValueError("no usable people to train on (none detected, too small, or every image skipped)")
    if settings.steps < 1 or settings.batch_size < 1:
        raise ValueError("--steps and --batch-size must be >= 1")
    threads_before = torch.get_num_threads()
    if settings.threads:
        torch.set_num_threads(int(settings.threads))
    try:
        return _fit(regions, settings, progress, net, replaced)
    finally:
        torch.set_num_threads(threads_before)  # process-wide setting: leave it as the caller had it


def _fit(regions: D.Regions, settings: TrainSettings, progress: bool, net: PoseNet | None, replaced=None):
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
            imgs, people, ignore = multi.compose_frames(regions, settings.batch_size, rng, settings.size)
            loss = multi.loss(net(D.to_model_input(imgs)), people, net.stride, ignore)
        elif net.verifier:  # its own frames and augmentation (toolkit.pose.heads)
            imgs, faces, ignore = heads.compose_frames(regions, settings.batch_size, rng, settings.size)
            if replaced is not None:  # part of the batch: the frame pipeline's outputs, replaced faces negative
                k = settings.batch_size - max(1, round(settings.batch_size * heads.REPLACED_SHARE))
                imgs[k:], faces[k:] = heads.replaced_batch(replaced, settings.batch_size - k, rng)
                ignore[k:] = False
            loss = heads.loss(net(D.to_model_input(imgs)), faces, net.stride, ignore)
        else:
            imgs, kps, vis, _, ignore = D.random_views(regions, settings.batch_size, rng, settings.size)
            target = torch.from_numpy(render_heatmaps(kps, vis.astype(float), net.heatmap_size, net.stride,
                                                      settings.sigma))
            # Teacher-visible points are supervised wherever they are: outside the view the target is all zero
            # (the model learns to say "not in frame"). Points the teacher did not see carry no loss, nor do
            # ignore regions (an unlabelled person is not background).
            weight = torch.from_numpy(vis.astype(np.float32))
            ign = torch.from_numpy(D.ignored_cells(ignore, net.stride)) if ignore.any() else None
            loss = heatmap_loss(net(D.to_model_input(imgs)), target, weight, ign)
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


def train_pose(images, out, *, coco=None, images_root=None, method: str | None = None, model_run=None,
               settings: TrainSettings | None = None, people: dict | None = None, inpainter=None,
               sampling: dict | None = None, progress: bool = True, replaced_from=None) -> dict:
    """`toolkit pose train`: returns the written manifest. Labels come from the BlazePose teacher on `images`
    (a folder or file), or from a COCO person-keypoints file `coco` whose images are under `images_root` (then
    `images` is None). `people` / `inpainter` may be passed in to reuse detections and a loaded generator
    across runs (the experiment script does). `replaced_from` (verifier presets only): regions -> (bank,
    description), the frame pipeline's outputs on frames of the training regions
    (toolkit.onboard.frames.replaced_bank), so that the verifier learns to pass a replaced face."""
    from toolkit.artifacts import write_manifest

    if (images is None) == (coco is None):
        raise ValueError("give --images DIR (BlazePose pseudo-labels) or --coco ANN.json --images-root DIR "
                         "(human labels), not both")
    if images_root is not None and coco is None:
        raise ValueError("--images-root is only used with --coco")
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
    if get_preset(settings.preset).outputs != "heads" and replaced_from is not None:
        raise ValueError("--replaced-by applies to the verifier presets (heads96, heads_tiny) only")
    coco_set = None
    if coco is not None:
        from toolkit.pose.coco import load_coco

        coco_set = load_coco(coco, images_root)
        paths = coco_set.paths()
    else:
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
    if coco_set is None:
        people = D.people_for(paths, people, progress)
        labels, ignore, labelled_faces = D.teacher_labels(people), None, None
    else:
        # The faces the anonymizer replaces are the detector's (raw pixels need none); every labelled face must
        # be among them.
        people = {p: [] for p in paths} if method == "original" else D.people_for(paths, people, progress)
        labels, ignore, labelled_faces = coco_set.labels(), coco_set.ignore_masks(), coco_set.face_points()
    processed, report = process_images(people, method, inpainter, settings.seed, sampling, progress,
                                       labelled_faces)
    regions = D.build_regions(processed, labels, ignore)
    if len(regions) == 0:
        source = f"--images {images}" if coco_set is None else f"--coco {coco}"
        raise ValueError(f"{source}: no usable person found for training ({len(paths)} image(s), "
                         f"{len(report['images_skipped'])} skipped; people need >= {D.MIN_VISIBLE} visible "
                         f"keypoints and >= {D.MIN_PERSON_PX:.0f} px)")
    replaced, replaced_note = replaced_from(regions) if replaced_from is not None else (None, None)
    net, losses = fit(regions, settings, progress, replaced=replaced)
    # the verifier's threshold: calibrated for recall on frames of the training regions (another seed)
    calibration = heads.calibrate(net, regions, seed=settings.seed + 1_000_003) if net.verifier else None
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
        teacher=None if coco_set else {"name": "BlazePose full + BlazeFace (toolkit.detect) on the ORIGINAL images",
                                       "keypoints": "7 FDF keypoints, COCO order (toolkit.keypoints.NAMES)"},
        labels="coco" if coco_set else "teacher",
        coco=coco_set.counts() if coco_set else None,
        data={"images": str(Path(images if coco_set is None else images_root).resolve()), "num_images": len(paths),
              "images_with_people": sum(1 for v in labels.values() if v), "people": len(regions),
              "regions_file": REGIONS_FILE, **report},
        model={"class": "PoseNet", "preset": settings.preset, "input": [1, 3, settings.size, settings.size],
               "input_range": [-1.0, 1.0], "output": [1, net.out_channels, net.heatmap_size, net.heatmap_size], "stride": net.stride,
               "outputs": net.preset.outputs},
        params=b.params,
        macs=b.macs,
        verifier={**calibration, "replaced_faces": replaced_note} if calibration else None,
        budget=b.to_dict(),
        training={**asdict(settings), "loss_first": losses[0], "loss_last": float(np.mean(losses[-20:])),
                  "augmentation": {"crop_scale": list(D.CROP_SCALE_RANGE), "max_shift": D.MAX_SHIFT,
                                   "max_rotation_deg": D.MAX_ROTATION_DEG, "flip": "with left/right swap",
                                   "color": "brightness/contrast/white balance"}},
        seconds=round(time.time() - t0, 1),
    )
