"""A small keypoint probe for judging generated faces at the students' sizes (32 and 64 px).

No landmark detector we can run offline finds faces on 32 px crops, so keypoint adherence is measured with a
probe trained for exactly this: a conv net that regresses the 7 FDF keypoints from a crop at the evaluation
resolution, trained on the REAL training-split crops of the teacher's FDF dataset.

  input   (B, 3, S, S) RGB in [-1, 1], S = 32 or 64 (any multiple of 4 works), + the (B, 1, S, S) face-box
          mask (0 in the box): known wherever the metric is used, since it is the inpainting mask
  output  (B, 7, S/2, S/2) heatmap logits, plus a Gaussian shape prior (each point's mean position relative
          to the face box, spread 1.5x its training spread); decoded by soft-argmax (spatial softmax, expected
          cell centre) into normalized (x, y) keypoints, which is also what the loss sees (integral
          regression: sub-pixel, no heatmap sigma to tune, and it trains from a few dozen faces). The prior
          makes weak evidence fall back to the mean face instead of noise; with it the probe beats the
          mean-keypoint baseline on held-out faces even on small, well-aligned datasets.

Training data: every training crop and its mirror image (left/right points swapped), each drawn with a random
affine jitter (shift up to 12% of the crop, scale 0.9-1.1, rotation up to 15 degrees; the box mask and the
prior move with the content), colour jitter, some grey crops and, half of the time, a slight blur (generated
faces are smoother than photographs). Points that leave the crop drop out of the loss.

Figures (all normalized by the face-box side sqrt(w*h), as NME is):
  nme         mean distance between probe keypoints and reference keypoints / box side, face points only
              (nose, eyes, ears: the points that lie in the generated region; shoulders are known pixels)
  pck@0.2     fraction of those points within 0.2 box sides
The probe's own error on the real held-out crops is the floor of the adherence figure: what real faces
score. A generator at that level is as adherent as the probe can tell; smooth, mean-like faces can read
slightly under it (the prior pulls toward the mean face), so differences below the floor mean nothing. The mean-keypoint baseline (the
training split's mean position relative to the box) is reported beside it; a probe that does not beat it
reads little from the pixels.

A trained probe is cached in a directory (model.safetensors + probe.json: the key it was trained for, i.e. the
training split's hash and the settings, its floor and the baseline); `load_or_train_probe` reuses a cached
probe whose key matches.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toolkit.assets import sha256_file
from toolkit.keypoints import NUM_KEYPOINTS

FACE_POINTS = (0, 1, 2, 3, 4)  # nose, eyes, ears: the points inside the generated face box
PCK_THRESHOLD = 0.2
PROBE_FORMAT = 2
MIN_PRIOR_SIGMA = 0.03  # box sides
PRIOR_INFLATION = 1.5  # the prior is wider than the training spread: it should yield to clear evidence
WEIGHTS_NAME = "model.safetensors"
INFO_NAME = "probe.json"


@dataclass(frozen=True)
class ProbeConfig:
    resolution: int = 32
    width: int = 8
    in_channels: int = 4  # RGB + the face-box mask (known at evaluation time: it is the inpainting mask)
    iters: int = 1000
    batch_size: int = 32
    lr: float = 3e-3
    max_shift: float = 0.12  # fraction of the crop side
    scale_jitter: float = 0.1
    max_rotation: float = 15.0  # degrees
    weight_decay: float = 1e-4
    prior: bool = True  # Gaussian shape prior around the box-relative mean keypoints (see KeypointProbe)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def _conv(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.ReLU())


class KeypointProbe(nn.Module):
    """Encoder to S/4 with a wide receptive field, decoder back to S/2, 7 heatmap logits there."""

    def __init__(self, resolution: int = 32, width: int = 8, in_channels: int = 4):
        super().__init__()
        if resolution % 4 or resolution < 16:
            raise ValueError(f"probe resolution must be a multiple of 4 and >= 16, got {resolution}")
        self.resolution, self.width, self.in_channels = int(resolution), int(width), int(in_channels)
        w = self.width
        self.stem = nn.Sequential(_conv(self.in_channels, w), _conv(w, w))
        self.down1 = nn.Sequential(_conv(w, 2 * w, 2), _conv(2 * w, 2 * w))
        # Dilated convs at S/4: at 32 px the receptive field then covers the whole face box.
        self.down2 = nn.Sequential(_conv(2 * w, 3 * w, 2), _conv(3 * w, 3 * w),
                                   nn.Sequential(nn.Conv2d(3 * w, 3 * w, 3, padding=2, dilation=2), nn.ReLU()),
                                   nn.Sequential(nn.Conv2d(3 * w, 3 * w, 3, padding=2, dilation=2), nn.ReLU()))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = nn.Sequential(_conv(5 * w, 2 * w), _conv(2 * w, 2 * w))
        self.head = nn.Conv2d(2 * w, NUM_KEYPOINTS, 1)
        # Shape prior (set by training): each point's mean position relative to the face box, as fractions of
        # the box width/height, and its spread in box sides. Flat until set.
        self.register_buffer("prior_mean", torch.full((NUM_KEYPOINTS, 2), 0.5))
        self.register_buffer("prior_sigma", torch.full((NUM_KEYPOINTS,), 1e3))

    def forward(self, x):
        s = self.stem(x)
        d1 = self.down1(s)
        d2 = self.down2(d1)
        return self.head(self.fuse(torch.cat([self.up(d2), d1], 1)))

    def prior_points(self, boxes) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior keypoints (B, 7, 2) and spreads (B, 7), normalized by the crop, for (B, 4) pixel boxes."""
        b = torch.as_tensor(np.asarray(boxes), dtype=torch.float32).reshape(-1, 4)
        wh = (b[:, 2:] - b[:, :2]).clamp(min=1.0)
        points = (b[:, None, :2] + self.prior_mean[None] * wh[:, None, :]) / self.resolution
        side = wh.prod(-1).sqrt()[:, None]
        return points, self.prior_sigma[None] * side / self.resolution

    def keypoints(self, images, masks, prior=None) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] + (B, 1, S, S) face mask (0 in the box) -> (B, 7, 2) normalized keypoints.

        prior: (points (B, 7, 2), sigma (B, 7)) in crop units, a Gaussian shape prior added to the heatmap
        logits (`prior_points`), so weak evidence falls back to the mean face, not to noise.
        """
        if images.shape[-1] != self.resolution or images.shape[-2] != self.resolution:
            raise ValueError(f"the probe reads {self.resolution}x{self.resolution} crops, got {tuple(images.shape[-2:])}")
        x = images if self.in_channels == 3 else torch.cat([images, masks.to(images.dtype)], 1)
        logits = self(x)
        if prior is not None:
            logits = logits + gaussian_log_prior(prior[0], prior[1], logits.shape[-1])
        return soft_argmax(logits)


def gaussian_log_prior(points, sigma, cells: int) -> torch.Tensor:
    """(B, K, cells, cells) log-density of isotropic Gaussians at normalized `points` (B, K, 2), `sigma` (B, K)."""
    c = (torch.arange(cells, dtype=points.dtype) + 0.5) / cells
    dx = (c[None, None, None, :] - points[..., 0, None, None]) ** 2
    dy = (c[None, None, :, None] - points[..., 1, None, None]) ** 2
    return -(dx + dy) / (2 * sigma[..., None, None] ** 2)


def soft_argmax(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, H, W) logits -> (B, K, 2) expected (x, y) of the cell centres, normalized to [0, 1]."""
    B, K, H, W = logits.shape
    p = logits.flatten(2).softmax(-1).view(B, K, H, W)
    xs = (torch.arange(W, dtype=p.dtype) + 0.5) / W
    ys = (torch.arange(H, dtype=p.dtype) + 0.5) / H
    return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], -1)


# --- figures -------------------------------------------------------------------------------------------


def box_side(box) -> float:
    """Face-box side in pixels: sqrt(w * h) of (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return math.sqrt(max(x1 - x0, 1.0) * max(y1 - y0, 1.0))


def point_errors(pred, ref, visible, box, size: int, points=FACE_POINTS) -> np.ndarray:
    """Per-point distances / box side for the reference points that are visible (an empty array if none).

    pred, ref: (7, 2) normalized keypoints; box in pixels of a `size` px crop.
    """
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    vis = np.asarray(visible, bool)
    idx = [j for j in points if vis[j] and np.all(np.isfinite(ref[j]))]
    if not idx:
        return np.zeros(0)
    d = np.hypot(*(pred[idx] - ref[idx]).T) * size
    return d / box_side(box)


def summarize_errors(errors) -> dict:
    """{"nme", "pck@0.2", "points"} over a list of per-face error arrays (None figures if no point)."""
    e = np.concatenate([np.asarray(x, np.float64) for x in errors]) if errors else np.zeros(0)
    if e.size == 0:
        return {"nme": None, f"pck@{PCK_THRESHOLD}": None, "points": 0}
    return {"nme": round(float(e.mean()), 4), f"pck@{PCK_THRESHOLD}": round(float((e < PCK_THRESHOLD).mean()), 4),
            "points": int(e.size)}


# --- data and augmentation -------------------------------------------------------------------------


def load_split(dataset, flips: bool = True, indices=None) -> dict:
    """Crops of an FDFDataset (all, or `indices`; and their mirror images) as tensors: image, keypoints,
    visible, box, mask."""
    indices = range(len(dataset)) if indices is None else indices
    items = [dataset.get(i, flipped=f) for i in indices for f in ((False, True) if flips else (False,))]
    if not items:
        raise ValueError(f"{getattr(dataset, 'dir', 'dataset')}: no faces to load")
    return {
        "image": torch.stack([it["image"] for it in items]),
        "keypoints": torch.stack([it["keypoints"] for it in items]),
        "visible": torch.stack([it["visible"] for it in items]),
        "box": torch.stack([it["box"] for it in items]),
        "mask": torch.stack([it["mask"] for it in items]),
    }


def box_masks(boxes, size: int) -> torch.Tensor:
    """(B, 1, S, S) masks, 0 inside each (x0, y0, x1, y1) pixel box and 1 outside: the dataset's own face mask."""
    from toolkit.crop import face_mask

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return torch.from_numpy(np.stack([face_mask(b, size) for b in boxes]))[:, None]


def jitter(images, keypoints, visible, generator, max_shift=0.12, scale_jitter=0.1, max_rotation=15.0,
           photometric=True):
    """Random affine (shift, isotropic scale, rotation) with border padding, colour jitter and blur; keypoints
    follow. Returns (images, keypoints, visible): a point pushed out of the crop becomes invisible.
    """
    B, C = images.shape[:2]
    g = generator
    s = 1 + (torch.rand(B, generator=g) * 2 - 1) * scale_jitter  # >1 zooms out
    a = (torch.rand(B, generator=g) * 2 - 1) * math.radians(max_rotation)
    t = (torch.rand(B, 2, generator=g) * 2 - 1) * (2 * max_shift)  # grid units: [-1, 1] spans the crop
    A = torch.stack([torch.stack([a.cos(), -a.sin()], -1), torch.stack([a.sin(), a.cos()], -1)], -2) * s[:, None, None]
    grid = F.affine_grid(torch.cat([A, t[:, :, None]], -1), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # Output grid point p samples the input at A p + t, so an input point u lands at A^-1 (u - t).
    u = keypoints * 2 - 1
    kp = (torch.linalg.solve(A[:, None], (u - t[:, None, :])[..., None])[..., 0] + 1) / 2
    vis = visible & (kp >= 0).all(-1) & (kp <= 1).all(-1)
    if C > 3:  # the mask channel moves with the content but stays binary
        out = torch.cat([out[:, :3], (out[:, 3:] > 0.5).to(out.dtype)], 1)
    if photometric:
        rgb, rest = out[:, :3], out[:, 3:]
        out = rgb
        gain = 1 + (torch.rand(B, 1, 1, 1, generator=g) * 2 - 1) * 0.25
        bias = (torch.rand(B, 1, 1, 1, generator=g) * 2 - 1) * 0.15
        tint = 1 + (torch.rand(B, 3, 1, 1, generator=g) * 2 - 1) * 0.1
        out = out * gain * tint + bias
        # Some grey crops: the probe should read geometry, not skin or shirt colour.
        grey = (torch.rand(B, generator=g) < 0.2)[:, None, None, None]
        out = torch.where(grey, out.mean(1, keepdim=True).expand_as(out), out)
        blur = torch.rand(B, generator=g) < 0.5
        if blur.any():
            k = torch.tensor([0.25, 0.5, 0.25])
            k2 = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
            out[blur] = F.conv2d(F.pad(out[blur], (1, 1, 1, 1), mode="replicate"), k2, groups=3)
        out = torch.cat([out.clamp(-1, 1), rest], 1)
    return out, kp, vis


# --- training, evaluation, cache -------------------------------------------------------------------


def train_probe(train_set, config: ProbeConfig = ProbeConfig(), progress: bool = True,
                indices=None) -> KeypointProbe:
    """Train a probe on the real crops of `train_set` (an FDFDataset at config.resolution; only the faces
    `indices` when given, e.g. to hold some out for a cross-check)."""
    from tqdm import tqdm

    if getattr(train_set, "size", None) != config.resolution:
        raise ValueError(f"train_set gives {train_set.size} px crops, the probe is for {config.resolution} px")
    data = load_split(train_set, flips=True, indices=indices)
    n = len(data["image"])
    g = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    probe = KeypointProbe(config.resolution, config.width, config.in_channels)
    if config.prior:
        mean, spread = shape_prior(train_set, indices)
        probe.prior_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        probe.prior_sigma.copy_(torch.as_tensor(spread * PRIOR_INFLATION, dtype=torch.float32))
    prior_pts, prior_sig = probe.prior_points(data["box"])
    opt = torch.optim.AdamW(probe.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warm = max(1, config.iters // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, config.iters) / config.iters)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small net: one thread is as fast and leaves the other cores alone
    probe.train()
    try:
        with tqdm(total=config.iters, desc="keypoint probe", unit="it", disable=not progress) as bar:
            for _ in range(config.iters):
                idx = torch.randint(0, n, (config.batch_size,), generator=g)
                # The prior points ride along with the true ones, so they follow the same jitter.
                x, kp, vis = jitter(torch.cat([data["image"][idx], data["mask"][idx]], 1),
                                    torch.cat([data["keypoints"][idx], prior_pts[idx]], 1),
                                    torch.cat([data["visible"][idx], torch.ones_like(data["visible"][idx])], 1),
                                    g, config.max_shift, config.scale_jitter, config.max_rotation)
                kp, vis, prior = kp[:, :NUM_KEYPOINTS], vis[:, :NUM_KEYPOINTS], kp[:, NUM_KEYPOINTS:]
                pred = probe.keypoints(x[:, :3], x[:, 3:], (prior, prior_sig[idx]) if config.prior else None)
                w = vis.float()
                # L1 in pixels of the crop, visible points only.
                loss = ((pred - kp).abs().sum(-1) * w).sum() / w.sum().clamp(min=1) * config.resolution
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.set_postfix(px=f"{loss.item():.2f}")
                bar.update(1)
    finally:
        torch.set_num_threads(threads)
    return probe.eval()


@torch.no_grad()
def predict(probe: KeypointProbe, images: torch.Tensor, boxes, batch: int = 256) -> torch.Tensor:
    """(B, 3, S, S) crops + (B, 4) face boxes in pixels -> (B, 7, 2) normalized keypoints."""
    probe.eval()
    masks = box_masks(boxes, images.shape[-1])
    points, sigma = probe.prior_points(boxes)
    return torch.cat([probe.keypoints(images[i:i + batch].float(), masks[i:i + batch],
                                      (points[i:i + batch], sigma[i:i + batch]))
                      for i in range(0, len(images), batch)])


def adherence(probe, images, keypoints, visible, boxes) -> dict:
    """Keypoint adherence of (generated) crops to the keypoints they were conditioned on: nme, pck@0.2.

    images (B, 3, S, S) in [-1, 1]; keypoints (B, 7, 2) normalized; visible (B, 7); boxes (B, 4) pixels.
    Also returns the per-face errors ("per_face": mean over that face's points, None if it has none).
    """
    S = images.shape[-1]
    pred = predict(probe, images, boxes).numpy()
    errs = [point_errors(pred[i], keypoints[i], visible[i], boxes[i], S) for i in range(len(images))]
    out = summarize_errors(errs)
    out["per_face"] = [round(float(e.mean()), 4) if e.size else None for e in errs]
    return out


def mean_keypoints(train_set, indices=None) -> np.ndarray:
    """The trivial baseline: each keypoint's mean position relative to the face box over the training crops
    (visible points), as (7, 2) fractions of the box width/height. It is given the box, like the probe."""
    idx = np.arange(len(train_set)) if indices is None else np.asarray(list(indices), int)
    lm = train_set.landmarks[idx].astype(np.float64)
    kp = lm * train_set.stored_size
    boxes = train_set.boxes[idx].astype(np.float64)
    wh = np.maximum(boxes[:, 2:] - boxes[:, :2], 1.0)
    rel = (kp - boxes[:, None, :2]) / wh[:, None, :]
    vis = np.all((lm >= 0) & (lm <= 1) & np.isfinite(lm), -1)
    mean = np.full((NUM_KEYPOINTS, 2), 0.5)
    for j in range(NUM_KEYPOINTS):
        if vis[:, j].any():
            mean[j] = rel[vis[:, j], j].mean(0)
    return mean


def shape_prior(train_set, indices=None) -> tuple[np.ndarray, np.ndarray]:
    """(mean (7, 2) box-relative, spread (7,) in box sides): the box-relative mean keypoints and each point's
    RMS distance from its mean per axis (at least MIN_PRIOR_SIGMA)."""
    idx = np.arange(len(train_set)) if indices is None else np.asarray(list(indices), int)
    mean = mean_keypoints(train_set, idx)
    lm = train_set.landmarks[idx].astype(np.float64)
    boxes = train_set.boxes[idx].astype(np.float64)
    wh = np.maximum(boxes[:, 2:] - boxes[:, :2], 1.0)
    rel = (lm * train_set.stored_size - boxes[:, None, :2]) / wh[:, None, :]
    vis = np.all((lm >= 0) & (lm <= 1) & np.isfinite(lm), -1)
    spread = np.full(NUM_KEYPOINTS, 0.25)
    for j in range(NUM_KEYPOINTS):
        if vis[:, j].sum() >= 2:
            spread[j] = math.sqrt(float(np.mean(np.sum((rel[vis[:, j], j] - mean[j]) ** 2, -1))) / 2)
    return mean, np.maximum(spread, MIN_PRIOR_SIGMA)


def baseline_keypoints(baseline: np.ndarray, box, size: int) -> np.ndarray:
    """The box-relative mean keypoints placed in `box` of a `size` px crop, normalized by the crop."""
    x0, y0, x1, y1 = (float(v) for v in box)
    return (np.array([x0, y0]) + baseline * np.array([x1 - x0, y1 - y0])) / size


def probe_floor(probe, heldout_set, baseline: np.ndarray, indices=None, flips: bool = False) -> dict:
    """The probe's error on real held-out crops (as stored; with `flips` their mirror images too) and the
    mean-keypoint baseline's on the same crops."""
    data = load_split(heldout_set, flips=flips, indices=indices)
    S = heldout_set.size
    got = adherence(probe, data["image"], data["keypoints"], data["visible"], data["box"])
    base = [point_errors(baseline_keypoints(baseline, data["box"][i], S), data["keypoints"][i],
                         data["visible"][i], data["box"][i], S) for i in range(len(data["image"]))]
    b = summarize_errors(base)
    return {"faces": len(data["image"]), "nme": got["nme"], f"pck@{PCK_THRESHOLD}": got[f"pck@{PCK_THRESHOLD}"],
            "points": got["points"], "baseline_nme": b["nme"], f"baseline_pck@{PCK_THRESHOLD}": b[f"pck@{PCK_THRESHOLD}"]}


def probe_key(train_set, config: ProbeConfig) -> dict:
    """What a cached probe must have been trained on: the training split's contents and the config."""
    h = hashlib.sha256()
    for name in ("landmarks.npy", "bounding_box.npy"):
        h.update(sha256_file(train_set.dir / name).encode())
    for p in train_set.paths:  # file names and sizes: cheap, and catches swapped or re-encoded crops
        h.update(f"{p.name}:{p.stat().st_size};".encode())
    return {"format": PROBE_FORMAT, "train_split_sha256": h.hexdigest(), "train_faces": len(train_set),
            "config": config.to_dict()}


def save_probe(directory, probe: KeypointProbe, key: dict, floor: dict, baseline: np.ndarray) -> None:
    from safetensors.torch import save_file

    from toolkit.artifacts import write_json_atomic

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in probe.state_dict().items()}, str(d / WEIGHTS_NAME))
    write_json_atomic(d / INFO_NAME, {"key": key, "floor": floor, "baseline_keypoints": np.round(baseline, 5).tolist(),
                                      "points": list(FACE_POINTS), "pck_threshold": PCK_THRESHOLD,
                                      "normalizer": "sqrt(face box width * height)"})


def _same_data(a: dict, b: dict) -> bool:
    """Trained on the same split at the same resolution (training settings may differ)."""
    return (a.get("format") == b.get("format") and a.get("train_split_sha256") == b.get("train_split_sha256")
            and a.get("config", {}).get("resolution") == b.get("config", {}).get("resolution"))


def load_probe(directory, key: dict | None = None, any_config: bool = False):
    """(probe, info) from a cache directory, or None when absent, unreadable or trained for another key.

    any_config: accept a probe trained on the same data and resolution with other training settings.
    """
    from safetensors.torch import load_file

    d = Path(directory)
    try:
        info = json.loads((d / INFO_NAME).read_text())
        if key is not None and not (_same_data(info.get("key", {}), key) if any_config else info.get("key") == key):
            return None
        cfg = info["key"]["config"]
        probe = KeypointProbe(cfg["resolution"], cfg["width"], cfg.get("in_channels", 4))
        probe.load_state_dict(load_file(str(d / WEIGHTS_NAME)))
    except (OSError, ValueError, KeyError, RuntimeError):
        return None
    return probe.eval(), info


def load_or_train_probe(data, resolution: int, cache_dirs=(), config: ProbeConfig | None = None,
                        progress: bool = True, any_iters: bool = False):
    """A probe for `resolution` px crops of the FDF dataset `data`: from the first cache dir whose key matches,
    else trained on data's train split (floor measured on its val split, when there is one) and saved into
    every cache dir. Returns (probe, info) with info["floor"] and info["cached"] (where it was found, or None).
    any_iters: a cached probe of the same data and resolution is good enough whatever its training settings
    (so a quick probe made at distillation time is reused by `distill eval` unless asked otherwise).
    """
    from toolkit.data import FDFDataset

    config = config or ProbeConfig(resolution=resolution)
    if config.resolution != resolution:
        raise ValueError(f"probe config is for {config.resolution} px, asked for {resolution} px")
    train_set = FDFDataset(data, "train", size=resolution)
    key = probe_key(train_set, config)
    cache_dirs = [Path(c) for c in cache_dirs]
    for c in cache_dirs:
        found = load_probe(c, key, any_config=any_iters)
        if found is not None:
            probe, info = found
            for other in cache_dirs:  # copy it to the runs that lack it, so each run carries its probe
                if other != c and load_probe(other, info["key"]) is None:
                    save_probe(other, probe, info["key"], info["floor"], np.asarray(info["baseline_keypoints"]))
            info["cached"] = str(c)
            return probe, info
    probe = train_probe(train_set, config, progress=progress)
    baseline = mean_keypoints(train_set)
    try:
        heldout = FDFDataset(data, "val", size=resolution)
        floor = probe_floor(probe, heldout, baseline)
    except FileNotFoundError:
        floor = {"faces": 0, "nme": None, "note": "no val split: the probe's floor is unknown"}
    for c in cache_dirs:
        save_probe(c, probe, key, floor, baseline)
    info = {"key": key, "floor": floor, "baseline_keypoints": baseline.tolist(), "cached": None}
    return probe, info
