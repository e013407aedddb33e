"""Multi-person keypoints for the frame pipeline: head centres + per-cell keypoint offsets (CenterNet-style).

One output tensor (B, 22, h, w) at the net's stride (4: 24x24 cells for a 96x96 frame), so the int8 chain
(quantize -> export -> firmware) stays the single-output one the heatmap net uses:

  channel 0        head centre: a Gaussian of peak 1 (sigma 1 cell) at each person's nose
  channels 1..7    keypoint k visible (1) or not (0), at the cells around each nose
  channels 8..21   keypoint k's offset from the cell centre, (dx_k, dy_k) in OFFSET_UNIT px, same cells

A person = a 3x3 local maximum of the centre map above a threshold; its keypoints are that cell's centre plus
its offsets. One per-tensor int8 scale covers centre, visibility (0..1) and offsets (about +-4 units): about
30 steps for the maps and 0.5 px for the offsets.

Training frames are composed from person regions (toolkit.pose.data.Regions, cut from the anonymized photos):
1-4 people side by side or in a 2x2 grid, each at its own scale, mirrored at random; some frames hold nobody.
The regions' ignore masks (crowds, people who are no target) travel with them: the centre map carries no loss
there, so an unlabelled head is never taught as background.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from toolkit.keypoints import FLIP_PERMUTATION, NUM_KEYPOINTS
from toolkit.pose.data import ignored_cells

OUT_CHANNELS = 1 + NUM_KEYPOINTS + 2 * NUM_KEYPOINTS
CENTER, VIS0, OFF0 = 0, 1, 1 + NUM_KEYPOINTS
OFFSET_UNIT = 16.0  # px per offset unit
OFFSET_CLAMP = 4.0  # units: targets beyond +-4 units (64 px) are clamped
CENTER_SIGMA = 1.0  # cells
MAX_PEOPLE = 4
EMPTY_SHARE = 0.1  # frames with nobody in them (background only)
# Person size as a fraction of its slot's shorter side: from head-and-shoulders to a small figure.
PERSON_FRACTION = (0.22, 0.5)


def _layout(n: int, size: int) -> list[tuple[int, int, int, int]]:
    """Slots (x0, y0, w, h) for n people: side by side in columns, or a 2x2 grid for 4."""
    if n == 4:
        h = size // 2
        return [(x, y, h, h) for y in (0, h) for x in (0, h)]
    w = size // n
    return [(i * w, 0, w if i < n - 1 else size - i * w, size) for i in range(n)]


def _warp_rect(image: np.ndarray, M: np.ndarray, w: int, h: int) -> np.ndarray:
    Mc = M.astype(np.float64).copy()  # corner-origin coordinates, as toolkit.pose.data.warp
    Mc[:, 2] += Mc[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return cv2.warpAffine(image, Mc, (w, h), flags=cv2.INTER_AREA if M[0, 0] ** 2 + M[0, 1] ** 2 < 1 else
                          cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # no mirrored copies of a head


def _warp_ignore(regions, i: int, M: np.ndarray, w: int, h: int) -> np.ndarray:
    if not regions.ignore[i].any():
        return np.zeros((h, w), bool)
    return _warp_rect(regions.ignore[i].astype(np.uint8) * 255, M, w, h) > 0


def compose_frame(regions, rng: np.random.Generator, size: int = 96, n: int | None = None, color: bool = True):
    """One training frame: (image uint8 (size, size, 3), people: list of (keypoints (7, 2) px, visible (7,)),
    ignore (size, size) bool)."""
    if n is None:
        n = 0 if rng.random() < EMPTY_SHARE else int(rng.integers(1, MAX_PEOPLE + 1))
    img = np.zeros((size, size, 3), np.uint8)
    ignore = np.zeros((size, size), bool)
    people = []
    if n == 0:  # background only: a far corner of a region, zoomed (walls, clothes, texture; no head)
        i = int(rng.integers(len(regions)))
        R = regions.images.shape[1]
        s = size / (R * 0.3)
        x0, y0 = rng.choice([0.0, R * 0.7]), rng.choice([0.0, R * 0.7])
        M = np.array([[s, 0, -s * x0], [0, s, -s * y0]])
        return _warp_rect(regions.images[i], M, size, size), people, _warp_ignore(regions, i, M, size, size)
    for (sx, sy, w, h) in _layout(n, size):
        i = int(rng.integers(len(regions)))
        kp, vis = regions.keypoints[i].copy(), regions.visible[i].copy()
        center = kp[vis].mean(axis=0)
        ref_out = float(rng.uniform(*PERSON_FRACTION)) * min(w, h)
        s = ref_out / float(regions.ref[i])
        flip = bool(rng.random() < 0.5)
        # the person's centre lands near the slot's centre (shifted up to 15 % of the slot)
        tx = sx + w / 2 + rng.uniform(-0.15, 0.15) * w
        ty = sy + h / 2 + rng.uniform(-0.15, 0.15) * h
        M = np.array([[s, 0.0, tx - sx - s * center[0]], [0.0, s, ty - sy - s * center[1]]])
        if flip:
            M[0] = -M[0]
            M[0, 2] += w
        patch = _warp_rect(regions.images[i], M, w, h)
        if color:
            v = patch.astype(np.float32)
            mean = v.mean()
            v = (v - mean) * rng.uniform(0.8, 1.2) + mean * rng.uniform(0.8, 1.2)
            patch = np.clip(v * rng.uniform(0.93, 1.07, 3).astype(np.float32) + 0.5, 0, 255).astype(np.uint8)
        img[sy:sy + h, sx:sx + w] = patch
        ignore[sy:sy + h, sx:sx + w] = _warp_ignore(regions, i, M, w, h)
        pk = kp @ M[:, :2].T + M[:, 2] + np.array([sx, sy])
        if flip:
            pk, vis = pk[list(FLIP_PERMUTATION)], vis[list(FLIP_PERMUTATION)]
        # a keypoint outside its own slot is not seen in this frame (another person's pixels are there)
        inside = (pk[:, 0] >= sx) & (pk[:, 0] < sx + w) & (pk[:, 1] >= sy) & (pk[:, 1] < sy + h)
        people.append((pk, vis & inside))
    return img, people, ignore


def compose_frames(regions, n: int, rng: np.random.Generator, size: int = 96, compose=None):
    """n frames of `compose` (default `compose_frame`): (images (n, size, size, 3) uint8, what each frame's
    compose returned about its people, ignore (n, size, size) bool)."""
    if len(regions) == 0:
        raise ValueError("no person regions to compose frames from")
    compose = compose or compose_frame
    imgs = np.zeros((n, size, size, 3), np.uint8)
    ignore = np.zeros((n, size, size), bool)
    people = []
    for j in range(n):
        imgs[j], p, ignore[j] = compose(regions, rng, size)
        people.append(p)
    return imgs, people, ignore


def targets(people_per_frame, cells: int, stride: int):
    """Training targets: centre (B, 1, c, c), visibility (B, 7, c, c), offsets (B, 14, c, c) and the mask
    (B, 1, c, c) of the cells that carry visibility / offset loss (3x3 around each visible nose), offset mask
    (B, 14, c, c) (keypoints the teacher saw)."""
    B = len(people_per_frame)
    center = np.zeros((B, 1, cells, cells), np.float32)
    vis_t = np.zeros((B, NUM_KEYPOINTS, cells, cells), np.float32)
    off_t = np.zeros((B, 2 * NUM_KEYPOINTS, cells, cells), np.float32)
    cell_m = np.zeros((B, 1, cells, cells), np.float32)
    off_m = np.zeros((B, 2 * NUM_KEYPOINTS, cells, cells), np.float32)
    c = (np.arange(cells) + 0.5) * stride
    for b, people in enumerate(people_per_frame):
        for kp, vis in people:
            if not vis[0]:  # no visible nose: no face to replace (the head's back, or out of frame)
                continue
            nx, ny = kp[0]
            g = np.exp(-(((c[None, :] - nx) / stride) ** 2 + ((c[:, None] - ny) / stride) ** 2) / (2 * CENTER_SIGMA ** 2))
            center[b, 0] = np.maximum(center[b, 0], g)
            ix, iy = int(nx // stride), int(ny // stride)
            for yy in range(max(iy - 1, 0), min(iy + 2, cells)):
                for xx in range(max(ix - 1, 0), min(ix + 2, cells)):
                    cell_m[b, 0, yy, xx] = 1.0
                    vis_t[b, :, yy, xx] = vis
                    d = (kp - np.array([c[xx], c[yy]])) / OFFSET_UNIT
                    off_t[b, :, yy, xx] = np.clip(d, -OFFSET_CLAMP, OFFSET_CLAMP).reshape(-1)
                    off_m[b, :, yy, xx] = np.repeat(vis, 2)
    return [torch.from_numpy(a) for a in (center, vis_t, off_t, cell_m, off_m)]


def loss(pred: torch.Tensor, people_per_frame, stride: int, ignore: np.ndarray | None = None) -> torch.Tensor:
    """Centre map: squared error summed per map (the heatmap net's loss), except on ignored cells (`ignore`
    (B, S, S) pixels, toolkit.pose.data.ignored_cells) away from a target's own centre. Visibility and offsets:
    squared error on the cells around each nose (offsets only for keypoints the labels have)."""
    center, vis_t, off_t, cell_m, off_m = targets(people_per_frame, pred.shape[-1], stride)
    B = pred.shape[0]
    weight = torch.ones_like(center)
    if ignore is not None and ignore.any():
        weight = 1.0 - torch.from_numpy(ignored_cells(ignore, stride)) * (center < 0.05).float()
    l_center = (((pred[:, CENTER:CENTER + 1] - center) ** 2) * weight).sum() / B
    n_cells = cell_m.sum().clamp(min=1.0)
    l_vis = (((pred[:, VIS0:OFF0] - vis_t) ** 2) * cell_m).sum() / n_cells
    l_off = (((pred[:, OFF0:] - off_t) ** 2) * off_m).sum() / n_cells
    return l_center + l_vis + l_off


def decode(out: np.ndarray, stride: int, center_min: float = 0.3, visible_min: float = 0.5):
    """Float decoding of one (22, h, w) output: list of (keypoints (7, 2) px, visible (7,), centre score),
    one per 3x3 local maximum of the centre map at or above center_min, in raster order."""
    out = np.asarray(out, np.float64)
    cm = out[CENTER]
    h, w = cm.shape
    pad = np.pad(cm, 1, constant_values=-np.inf)
    people = []
    for iy in range(h):
        for ix in range(w):
            v = cm[iy, ix]
            win = pad[iy:iy + 3, ix:ix + 3]
            if v < center_min or v < win.max():
                continue
            earlier = np.concatenate([win[0], win[1, :1]])
            if (earlier >= v).any():  # a plateau counts once, at its first cell in raster order
                continue
            cc = np.array([(ix + 0.5) * stride, (iy + 0.5) * stride])
            kp = cc + out[OFF0:, iy, ix].reshape(NUM_KEYPOINTS, 2) * OFFSET_UNIT
            people.append((kp, out[VIS0:OFF0, iy, ix] >= visible_min, float(v)))
    return people

