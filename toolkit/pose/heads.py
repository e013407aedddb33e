"""The frame pipeline's independent verifier: a dense face-presence map, trained apart from the pose net.

The pose net re-run on its own output misses what it missed the first time (a box on the chest leaves the
face, and the re-run finds the chest again). This network answers one different question per cell of a
stride-4 grid (24x24 for a 96x96 frame): "is a nose or an eye of a face in this cell?". It has its own
architecture (`heads96`: no residual blocks in the first levels, other widths), its own objective (per-cell
binary cross-entropy, positives weighted; the pose net regresses a centre Gaussian and offsets), its own
seed, and its own training frames (`compose_frame`: any person size relative to its slot, people cut by the
slot border, brightness / contrast / white balance / sensor noise / blur).

On the device (toolkit.onboard.reference.verify_heads, tk_frame.c): a cell whose int8 output reaches the
calibrated threshold and whose 4x4 pixels are not all inside one replaced box is a face left: the frame
fails closed. A face half inside a box therefore still fails the frame (its eye's cell straddles the edge).

Trained on anonymized photos only, it would also see a face in every patch the student pastes; with the frame
pipeline's own outputs in its batches (`replaced_batch`, made by toolkit.onboard.frames.replaced_bank) a
replaced face is a negative and a face the pose net missed a positive.

The threshold is calibrated for recall on validation frames composed from the TRAINING regions (their own
seed), never on the frames the pipeline is measured on: the lowest per-face maximum over the validation
faces, as a probability divided by CALIBRATION_MARGIN: `calibrate` on the float net after training (the run's
manifest, `verifier`), `calibrate_int8` on the int8 net at `toolkit quantize` (the quantized manifest's
`verifier.min_value`, what the device compares against).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from toolkit.pose import multi
from toolkit.pose.multi import _layout, _warp_ignore, _warp_rect

FACE_POINTS = (0, 1, 2)  # nose, left eye, right eye: what a face left in a frame is judged by
EMPTY_SHARE = 0.15
MAX_PEOPLE = 4
# Person size (toolkit.pose.data: face box or shoulder width) as a fraction of its slot's LONGER side: from a
# head filling the slot to a small figure, so a narrow column slot may cut the person (as real frames do).
PERSON_FRACTION = (0.15, 0.55)
POS_WEIGHT = 8.0  # positives are ~1 % of the cells
REPLACED_SHARE = 0.25  # of each batch: the frame pipeline's own outputs (`replaced_batch`), when given
CALIBRATION_MARGIN = 2.0  # probability threshold = lowest validation face maximum / margin
CALIBRATION_FRAMES = 256
NOISE_SIGMA = (0.0, 8.0)  # sensor noise, uint8 levels


def compose_frame(regions, rng: np.random.Generator, size: int = 96, n: int | None = None):
    """One verifier training frame: (image uint8 (size, size, 3), face points [(xy (k, 2) px)] per person
    whose nose or an eye is seen in the frame, ignore (size, size) bool: the regions' ignore masks, where an
    unlabelled face may be)."""
    if n is None:
        n = 0 if rng.random() < EMPTY_SHARE else int(rng.integers(1, MAX_PEOPLE + 1))
    img = np.zeros((size, size, 3), np.uint8)
    ignore = np.zeros((size, size), bool)
    faces = []
    R = regions.images.shape[1]
    if n == 0:  # background only: a zoomed part of a region away from its person's head
        i = int(rng.integers(len(regions)))
        s = size / (R * float(rng.uniform(0.25, 0.4)))
        x0, y0 = rng.choice([0.0, R * 0.65]), rng.choice([0.0, R * 0.65])
        M = np.array([[s, 0, -s * x0], [0, s, -s * y0]])
        img, ignore = _warp_rect(regions.images[i], M, size, size), _warp_ignore(regions, i, M, size, size)
    else:
        for (sx, sy, w, h) in _layout(n, size):
            i = int(rng.integers(len(regions)))
            kp, vis = regions.keypoints[i], regions.visible[i]
            center = kp[vis].mean(axis=0)
            s = float(rng.uniform(*PERSON_FRACTION)) * max(w, h) / float(regions.ref[i])
            tx = w / 2 + rng.uniform(-0.2, 0.2) * w
            ty = h / 2 + rng.uniform(-0.2, 0.2) * h
            M = np.array([[s, 0.0, tx - s * center[0]], [0.0, s, ty - s * center[1]]])
            if rng.random() < 0.5:  # mirrored (nose and eyes need no left/right swap here)
                M[0] = -M[0]
                M[0, 2] += w
            img[sy:sy + h, sx:sx + w] = _warp_rect(regions.images[i], M, w, h)
            ignore[sy:sy + h, sx:sx + w] = _warp_ignore(regions, i, M, w, h)
            pts = kp[list(FACE_POINTS)] @ M[:, :2].T + M[:, 2]
            seen = vis[list(FACE_POINTS)] & (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
            if seen.any():
                faces.append(pts[seen] + np.array([sx, sy]))
    return _photometric(img, rng), faces, ignore


def _photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, white balance, sensor noise and (sometimes) a slight blur."""
    v = img.astype(np.float32)
    mean = v.mean()
    v = (v - mean) * rng.uniform(0.6, 1.4) + mean * rng.uniform(0.6, 1.4)
    v = v * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    v = v + rng.normal(0.0, rng.uniform(*NOISE_SIGMA), v.shape).astype(np.float32)
    out = np.clip(v + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.25:
        out = cv2.GaussianBlur(out, (3, 3), float(rng.uniform(0.3, 0.9)))
    return out


def compose_frames(regions, n: int, rng: np.random.Generator, size: int = 96):
    """n frames of `compose_frame`: (images (n, size, size, 3), faces per frame, ignore (n, size, size))."""
    return multi.compose_frames(regions, n, rng, size, compose=compose_frame)


def replaced_batch(bank, n: int, rng: np.random.Generator):
    """n frames from a bank of the frame pipeline's own outputs (images (N, s, s, 3) uint8, faces: per frame
    the face points it left outside its replaced boxes): mirrored at random, photometric augmentation. What
    the pipeline pasted is a negative here: the verifier must pass a replaced face and see a real one."""
    images, faces = bank
    size = images.shape[2]
    out = np.zeros((n,) + images.shape[1:], np.uint8)
    pts = []
    for j in range(n):
        i = int(rng.integers(len(images)))
        img, f = images[i], [np.asarray(p, np.float64).reshape(-1, 2) for p in faces[i]]
        if rng.random() < 0.5:
            img = img[:, ::-1]
            f = [np.stack([size - p[:, 0], p[:, 1]], 1) for p in f]
        out[j] = _photometric(np.ascontiguousarray(img), rng)
        pts.append(f)
    return out, pts


def target_cells(faces, cells: int, stride: int) -> np.ndarray:
    """(cells, cells) float: 1 in each cell holding a face point of `faces` (one frame's list)."""
    t = np.zeros((cells, cells), np.float32)
    for pts in faces:
        for x, y in pts:
            ix, iy = int(x // stride), int(y // stride)
            if 0 <= ix < cells and 0 <= iy < cells:
                t[iy, ix] = 1.0
    return t


def loss(pred: torch.Tensor, faces_per_frame, stride: int, ignore: np.ndarray | None = None) -> torch.Tensor:
    """Per-cell binary cross-entropy on the logits, positives weighted POS_WEIGHT; the 8 cells around a
    positive carry no loss (a face point near a cell border may light either), nor do ignored cells
    (toolkit.pose.data.ignored_cells of `ignore` (B, S, S): an unlabelled person is not background)."""
    import torch.nn.functional as Fn

    from toolkit.pose.data import ignored_cells

    cells = pred.shape[-1]
    t = np.stack([target_cells(f, cells, stride) for f in faces_per_frame])[:, None]
    near = _dilate3(t) - t  # neighbours of positives
    if ignore is not None and ignore.any():
        near = np.maximum(near, ignored_cells(ignore, stride) * (1 - t))
    target = torch.from_numpy(t)
    weight = torch.from_numpy(np.where(t > 0, POS_WEIGHT, np.where(near > 0, 0.0, 1.0)).astype(np.float32))
    return (Fn.binary_cross_entropy_with_logits(pred, target, reduction="none") * weight).sum() / pred.shape[0]


def _dilate3(t: np.ndarray) -> np.ndarray:
    """3x3 maximum filter of (B, 1, h, w) maps."""
    k = np.ones((3, 3), np.uint8)
    return np.stack([cv2.dilate(m[0], k)[None] for m in t])


def face_scores(prob: np.ndarray, faces, stride: int) -> list[float]:
    """Per face (one frame): the largest value (probability, or int8 output) over the cells holding its points
    and their 8 neighbours (what the verifier must exceed to see it)."""
    out = []
    for pts in faces:
        best = -math.inf
        for x, y in pts:
            ix, iy = int(x // stride), int(y // stride)
            win = prob[max(iy - 1, 0):iy + 2, max(ix - 1, 0):ix + 2]
            if win.size:
                best = max(best, float(win.max()))
        out.append(best)
    return out


@torch.no_grad()
def calibrate(net, regions, seed: int, frames: int = CALIBRATION_FRAMES, size: int = 96) -> dict:
    """Threshold for recall: the lowest face score over `frames` validation frames composed from the training
    regions with their own seed, divided by CALIBRATION_MARGIN; plus the share of face-free frames that would
    light a cell (a hint of the false refusals to expect)."""
    from toolkit.pose.data import to_model_input

    imgs, faces, _ = compose_frames(regions, frames, np.random.default_rng(seed), size)
    prob = torch.sigmoid(net.eval()(to_model_input(imgs))).numpy()[:, 0]
    scores = [s for p, f in zip(prob, faces) for s in face_scores(p, f, net.stride)]
    if not scores:
        raise ValueError("calibration frames hold no face: too few usable people in the training regions")
    lowest = float(min(scores))
    threshold = lowest / CALIBRATION_MARGIN
    empty = [p.max() >= threshold for p, f in zip(prob, faces) if not f]
    return {"threshold": threshold, "threshold_logit": math.log(threshold / (1 - threshold)),
            "lowest_face_score": lowest, "faces": len(scores), "frames": frames, "seed": seed,
            "margin": CALIBRATION_MARGIN, "empty_frames_lit": float(np.mean(empty)) if empty else None,
            "data": "frames composed from the training regions (other seed), never the measurement frames"}


def calibrate_int8(graph, regions, seed: int, frames: int = CALIBRATION_FRAMES, size: int = 96) -> dict:
    """The int8 threshold of a quantized verifier (toolkit.deploy IntGraph), calibrated as `calibrate` does
    on the same frames (same seed) but on the int8 outputs: quantization shifts logits by whole units, so
    the float threshold does not carry over. min_value: the int8 output at or above which a cell holds a
    face, = the lowest face's output taken to a probability, divided by CALIBRATION_MARGIN, back to the grid
    (rounded down)."""
    from toolkit.deploy import int8ref
    from toolkit.pose.data import to_model_input

    imgs, faces, _ = compose_frames(regions, frames, np.random.default_rng(seed), size)
    t = graph.tensors[graph.output]
    stride = size // int(t.shape[1])
    scores, empty = [], []
    for img, f in zip(imgs, faces):
        q = int8ref.run(graph, int8ref.quantize_input(graph, to_model_input(img[None]).numpy()))[0][..., 0]
        q = q.astype(np.int64)
        scores += face_scores(q, f, stride)
        if not f:
            empty.append(int(q.max()))
    if not scores:
        raise ValueError("calibration frames hold no face: too few usable people in the training regions")
    lowest = int(min(scores))
    p = 1.0 / (1.0 + math.exp(-(lowest - t.zero_point) * float(t.scale))) / CALIBRATION_MARGIN
    min_value = int(min(max(math.floor(math.log(p / (1 - p)) / float(t.scale)) + t.zero_point, -127), 127))
    return {"min_value": min_value, "threshold": p, "lowest_face_output": lowest, "faces": len(scores),
            "frames": frames, "seed": seed, "margin": CALIBRATION_MARGIN,
            "empty_frames_lit": float(np.mean([m >= min_value for m in empty])) if empty else None,
            "data": "frames composed from the training regions (the float calibration's seed), int8 reference"}


def cells_left(prob_or_q: np.ndarray, min_value, boxes, stride: int) -> list[tuple[int, int]]:
    """Cells (ix, iy) at or above min_value whose stride x stride pixels are not all inside one box."""
    H, W = prob_or_q.shape
    left = []
    for iy in range(H):
        for ix in range(W):
            if prob_or_q[iy, ix] < min_value:
                continue
            x0, y0 = ix * stride, iy * stride
            if not any(b[0] <= x0 and x0 + stride <= b[2] and b[1] <= y0 and y0 + stride <= b[3] for b in boxes):
                left.append((ix, iy))
    return left
