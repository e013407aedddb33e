"""The face prior: what a generator trained on little data needs besides its weights.

A model trained on a few hundred faces has learnt too little to draw a face from pure noise in an unfamiliar
photo. Two facts about its training data carry it the rest of the way, and both are kept with the model:

* **structure** — the mean face of the training faces, aligned on their eyes and nose. At use it is warped
  onto the face's own keypoints and the sampler starts from it, noised part of the way (SDEdit, Meng et al.
  2022: `strength` 1 = pure noise, 0 = the prior unchanged). The model then draws a face of its own on that
  layout: the eyes, nose and mouth land where the keypoints say, and nobody's identity is in a mean face.
* **colour** — whether the training faces had any ("luma" when every training image is gray, as the offline
  LFW faces are). A gray-trained model is given the crop in gray (what it knows), draws a gray face, and the
  face gets its chroma from the skin in the context around it (neck, ears, hairline), never from the face it
  replaces. A colour-trained model (FDF256) works in RGB and only gets the structure prior.

`toolkit train` writes `face_prior.npz` beside the weights; distill and quantize carry it along. An artifact
without one samples from pure noise in RGB, as before.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FILE = "face_prior.npz"
# SDEdit start (1 = pure noise, i.e. no mean-face start): since the training faces sit on real scenes, sampling
# from noise with the colour split measures best for the teacher and the 2-step student (docs/anonymize.md).
DEFAULT_STRENGTH = 1.0
MAX_FACES = 5000  # the mean face settles long before this (FDF256 has 250 k)
# Keypoints the warp uses: nose and both eyes (COCO indices) — always inside the face box when visible.
ANCHORS = (0, 1, 2)
# YCrCb skin range (Chai & Ngan 1999): the context pixels whose colour can be a face's.
SKIN_CR, SKIN_CB = (133, 173), (77, 127)
MIN_SKIN_PIXELS = 12
DEFAULT_SKIN_CRCB = (150.0, 112.0)  # a mid skin tone, when the context shows no skin at all


@dataclass
class FacePrior:
    mean_face: np.ndarray  # (S, S, 3) float32 in [-1, 1]
    keypoints: np.ndarray  # (7, 2) mean normalized keypoints of the faces that built it
    face_box: np.ndarray  # (4,) mean face box, normalized (x0, y0, x1, y1)
    colour: str  # "rgb" | "luma"
    faces: int

    @property
    def resolution(self) -> int:
        return int(self.mean_face.shape[0])

    def save(self, run_dir) -> Path:
        path = Path(run_dir) / FILE
        np.savez(path, mean_face=self.mean_face, keypoints=self.keypoints, face_box=self.face_box,
                 colour=np.array(self.colour), faces=np.array(self.faces))
        return path

    def describe(self) -> dict:
        return {"file": FILE, "faces": self.faces, "colour": self.colour, "resolution": self.resolution,
                "default_strength": DEFAULT_STRENGTH}


def load_prior(run_dir) -> FacePrior | None:
    path = Path(run_dir) / FILE
    if not path.exists():
        return None
    with np.load(path) as z:
        return FacePrior(z["mean_face"].astype(np.float32), z["keypoints"].astype(np.float32),
                         z["face_box"].astype(np.float32), str(z["colour"]), int(z["faces"]))


def copy_prior(src_dir, dst_dir) -> bool:
    """Carry the prior from one artifact to the next (teacher -> student -> quantized)."""
    src = Path(src_dir) / FILE
    if src.exists():
        shutil.copy2(src, Path(dst_dir) / FILE)
    return src.exists()


START_OPTIONS = ("init_image", "strength")  # what both samplers' `inpaint` take for the SDEdit start


def start_index(timesteps, strength: float) -> int:
    """SDEdit start, the same rule for teacher and student: the first of the sampler's (descending) timesteps
    at or below strength x (its first timestep + 1); its last step at most."""
    limit = strength * (int(timesteps[0]) + 1)
    return next((k for k, t in enumerate(timesteps) if int(t) <= limit), len(timesteps) - 1)


def _anchor_transform(src_kp, src_vis, dst_kp, dst_vis, size: int):
    """2x3 affine taking src crop pixels to dst crop pixels, from the nose and eyes both sides see.

    Three anchors: the exact affine (a turned head shears, which an affine follows); two: a similarity;
    fewer: None (the caller falls back to the face box)."""
    both = [i for i in ANCHORS if src_vis[i] and dst_vis[i]]
    # normalized -> OpenCV pixel coordinates (pixel centres at integers)
    src = (np.asarray(src_kp, np.float64)[both] * size - 0.5).astype(np.float32)
    dst = (np.asarray(dst_kp, np.float64)[both] * size - 0.5).astype(np.float32)
    if len(both) == 3:
        (ax, ay), (bx, by) = dst[1] - dst[0], dst[2] - dst[0]
        area = abs(ax * by - ay * bx)
        if area > 0.5:  # a degenerate (collinear) triangle would blow up the warp
            return cv2.getAffineTransform(src, dst)
        both, src, dst = both[1:], src[1:], dst[1:]  # the eyes alone
    if len(both) == 2:
        m, _ = cv2.estimateAffinePartial2D(src, dst)
        return m
    return None


def _box_transform(src_box, dst_box, size: int):
    """2x3 affine taking the src face box onto the dst face box (boxes normalized x0, y0, x1, y1)."""
    s0, d0 = np.asarray(src_box, np.float64) * size, np.asarray(dst_box, np.float64) * size
    sx, sy = (d0[2] - d0[0]) / max(s0[2] - s0[0], 1e-6), (d0[3] - d0[1]) / max(s0[3] - s0[1], 1e-6)
    # corners map onto corners; the -0.5 terms move both to OpenCV's pixel-centre coordinates
    tx, ty = d0[0] - sx * s0[0] + 0.5 * sx - 0.5, d0[1] - sy * s0[1] + 0.5 * sy - 0.5
    return np.array([[sx, 0, tx], [0, sy, ty]], dtype=np.float64)


def _box_of(mask: np.ndarray) -> np.ndarray:
    """Normalized (x0, y0, x1, y1) of the mask's hole (mask 0 = to generate)."""
    ys, xs = np.nonzero(mask < 0.5)
    size = mask.shape[0]
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64) / size


def build_face_prior(dataset_root, size: int, split: str = "train", max_faces: int = MAX_FACES) -> FacePrior:
    """The mean face of a dataset's faces, each aligned on its nose and eyes to their mean position.

    One image in memory at a time (FDF256 at 256 px would not fit otherwise)."""
    from toolkit.data.fdf import FDFDataset, visible_points

    data = FDFDataset(dataset_root, split, size=size)
    n = min(len(data), max_faces)
    kps = data.landmarks[:n].astype(np.float64)
    vis = np.stack([visible_points(kp) for kp in kps])
    full = vis[:, list(ANCHORS)].all(axis=1)
    if not full.any():
        raise ValueError(f"{dataset_root}: no training face shows its nose and both eyes; cannot build a face prior")
    seen = vis.any(0)  # shoulders, say, may never be in a training crop
    mean_kp = np.full((7, 2), -1.0)
    mean_kp[seen] = (kps * vis[..., None]).sum(0)[seen] / vis.sum(0)[seen][:, None]
    all_vis = np.ones(7, bool)
    acc, boxes, gray = np.zeros((size, size, 3), np.float64), np.zeros(4), True
    for i in range(n):
        item = data.get(i)
        img = (item["image"].permute(1, 2, 0).numpy() + 1) / 2
        gray = gray and bool(np.allclose(img[..., 0], img[..., 1], atol=2 / 255)
                             and np.allclose(img[..., 1], img[..., 2], atol=2 / 255))
        boxes += item["box"].numpy() / size
        if full[i]:
            m = _anchor_transform(kps[i], all_vis, mean_kp, all_vis, size)
            acc += cv2.warpAffine(img.astype(np.float32), m, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
    mean_face = (acc / full.sum()).astype(np.float32) * 2 - 1
    return FacePrior(mean_face, mean_kp.astype(np.float32), (boxes / n).astype(np.float32),
                     "luma" if gray else "rgb", int(full.sum()))


def luma(images: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> (..., 3) gray (BT.601 luma in all three channels), same range as the input."""
    y = images[..., 0] * 0.299 + images[..., 1] * 0.587 + images[..., 2] * 0.114
    return np.repeat(y[..., None], 3, axis=-1).astype(images.dtype)


def skin_tone(crop_uint8: np.ndarray, mask: np.ndarray) -> tuple[float, float, float, bool]:
    """(Y, Cr, Cb, found) of the skin among the known pixels of a crop (median of the skin-coloured ones).

    Only known pixels (mask 1) are looked at: the face being replaced never gives its colour away."""
    ycc = cv2.cvtColor(crop_uint8, cv2.COLOR_RGB2YCrCb).reshape(-1, 3).astype(np.float32)
    known = mask.reshape(-1) > 0.5
    cr, cb = ycc[:, 1], ycc[:, 2]
    skin = known & (cr >= SKIN_CR[0]) & (cr <= SKIN_CR[1]) & (cb >= SKIN_CB[0]) & (cb <= SKIN_CB[1])
    if skin.sum() >= MIN_SKIN_PIXELS:
        y, cr_m, cb_m = np.median(ycc[skin], axis=0)
        return float(y), float(cr_m), float(cb_m), True
    y = float(np.median(ycc[known, 0])) if known.any() else 128.0
    return y, *DEFAULT_SKIN_CRCB, False


def structure_init(prior: FacePrior, crop_uint8: np.ndarray, mask: np.ndarray, keypoints, visible) -> np.ndarray:
    """The sampler's start image for one face: the mean face warped onto its keypoints (or its box), its
    brightness set to the context's skin, and the known pixels of the crop around it. (S,S,3) in [-1, 1]."""
    size = mask.shape[0]
    prior_face = prior.mean_face
    if prior.resolution != size:
        prior_face = cv2.resize(prior_face, (size, size), interpolation=cv2.INTER_AREA)
    m = _anchor_transform(prior.keypoints, np.ones(7, bool), keypoints, np.asarray(visible, bool), size)
    if m is None:
        m = _box_transform(prior.face_box, _box_of(mask), size)
    face = cv2.warpAffine(prior_face, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    hole = mask < 0.5
    crop = crop_uint8.astype(np.float32) / 127.5 - 1
    if prior.colour == "luma":
        crop = luma(crop)
        face = luma(face)
    # Same mean brightness in the hole as the skin around it: the model refines a face, not a lighting error.
    y, *_ = skin_tone(crop_uint8, mask)
    face = face + (y / 127.5 - 1) - luma(face)[hole][:, 0].mean()
    return np.where(hole[..., None], np.clip(face, -1, 1), crop).astype(np.float32)


def face_weight(mask: np.ndarray, keypoints, visible) -> np.ndarray:
    """(S,S) soft oval, 1 at the face centre (nose/eyes, else the hole's centre) falling to ~0 at the face
    box's edge: where a generated face is skin, as opposed to the hair and background in the box's corners."""
    x0, y0, x1, y1 = _box_of(mask) * mask.shape[0]
    anchors = [i for i in ANCHORS if visible[i]]
    if anchors:
        cx, cy = (np.asarray(keypoints, np.float64)[anchors].mean(0) * mask.shape[0])
    else:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ys, xs = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]] + 0.5
    r = ((xs - cx) / (0.42 * (x1 - x0))) ** 2 + ((ys - cy) / (0.55 * (y1 - y0))) ** 2
    return np.clip(1.5 - r, 0.0, 1.0) * (mask < 0.5)


def colour_from_context(generated: np.ndarray, crop_uint8: np.ndarray, mask: np.ndarray, keypoints,
                        visible) -> np.ndarray:
    """A gray-drawn face in the colours of its context: its own luma; chroma of the context's skin on the face
    (`face_weight`) and of the nearest context (hair, background) towards the box's edge.

    generated: (S,S,3) float 0..255 from a gray ("luma") model. Returns (S,S,3) float 0..255 where the hole
    holds the coloured face and the known pixels are the original crop's (in colour)."""
    _, cr, cb, _ = skin_tone(crop_uint8, mask)
    hole = mask < 0.5
    context = cv2.cvtColor(crop_uint8, cv2.COLOR_RGB2YCrCb)
    # the context's chroma carried into the hole from its edge (never from the face being replaced)
    fill = [cv2.inpaint(context[..., c], hole.astype(np.uint8), 3, cv2.INPAINT_TELEA).astype(np.float32)
            for c in (1, 2)]
    w = face_weight(mask, keypoints, visible)
    y = luma(np.clip(generated, 0, 255).astype(np.float32))[..., 0]
    ycc = np.stack([y, w * cr + (1 - w) * fill[0], w * cb + (1 - w) * fill[1]], axis=-1) / 255.0  # float: 0..1
    coloured = np.clip(cv2.cvtColor(ycc.astype(np.float32), cv2.COLOR_YCrCb2RGB), 0, 1) * 255.0
    return np.where(hole[..., None], coloured, crop_uint8.astype(np.float32))
