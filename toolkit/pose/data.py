"""Training and evaluation data of the pose model: teacher labels, person regions and augmented views.

1. Labels: `toolkit.detect` (BlazePose + BlazeFace, the teacher) runs on the ORIGINAL images; its 7 keypoints
   and visibility per person are the targets, whatever the training pixels later become.
2. Regions: each usable person becomes a square region around its head and shoulders (REGION_SCALE person
   sizes wide, resampled to REGION_PX with area interpolation so big photos do not alias). The training
   regions are cut from the processed (e.g. anonymized) image, the labels stay those of the original.
   Ignore regions (COCO crowds and people who are no target, `toolkit.pose.coco`) are cut the same way:
   no loss applies there, so an unlabelled person is never taught as background.
3. Views: random crops of a region (scale, shift, small rotation, horizontal flip with left/right swap,
   colour jitter) resized to the model's input size. A handful of photos thus gives many samples.

"Person size" (`ref`) is the larger of the face box's longer side and the shoulder width: PCK thresholds
and crop scales are both in these units, so they mean the same on a portrait and on a pedestrian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from toolkit.keypoints import FLIP_PERMUTATION, NUM_KEYPOINTS

# Region side in person sizes: holds the largest shifted, rotated crop, so crops never leave it.
REGION_SCALE = 6.0
REGION_PX = 192  # 32 px per person size
# Training crop side in person sizes: from head and shoulders filling the frame to a half-body view. (Wider
# crops mostly add black padding on portraits, whose shoulder width is already most of the photo.)
CROP_SCALE_RANGE = (1.8, 3.6)
EVAL_CROP_SCALE = 2.5  # the canonical (centred) evaluation view
MAX_SHIFT = 0.18  # crop centre shift, fraction of the crop side
MAX_ROTATION_DEG = 15.0
MIN_PERSON_PX = 8.0  # smaller people are too blurry to learn from (and to be checked against)
MIN_VISIBLE = 3


@dataclass
class PersonLabel:
    keypoints: np.ndarray  # (7, 2) px in the original image
    visible: np.ndarray  # (7,) bool
    face_box: np.ndarray  # (4,)
    ref: float  # person size in px (see module doc)

    def to_dict(self) -> dict:
        return {"keypoints": self.keypoints.round(2).tolist(), "visible": self.visible.tolist(),
                "face_box": self.face_box.round(2).tolist(), "ref": round(float(self.ref), 2)}

    @classmethod
    def from_dict(cls, d: dict) -> "PersonLabel":
        return cls(np.asarray(d["keypoints"], np.float64), np.asarray(d["visible"], bool),
                   np.asarray(d["face_box"], np.float64), float(d["ref"]))


def person_size(keypoints, visible, face_box) -> float:
    fb = np.asarray(face_box, np.float64)
    size = max(fb[2] - fb[0], fb[3] - fb[1])
    if visible[5] and visible[6]:
        size = max(size, float(np.linalg.norm(keypoints[5] - keypoints[6])))
    return float(size)


def labels_from_persons(persons) -> list[PersonLabel]:
    """Usable teacher labels of one image: people large enough and with enough visible points."""
    out = []
    for p in persons:
        kp = np.asarray(p.keypoints, np.float64)
        vis = np.asarray(p.visible, bool)
        if vis.sum() < MIN_VISIBLE or not np.isfinite(kp).all():
            continue
        # The head's real size, also for a face cut by the image border (face_box is clipped to the image).
        whole = getattr(p, "face_box_unclipped", None)
        ref = person_size(kp, vis, p.face_box if whole is None else whole)
        if ref < MIN_PERSON_PX:
            continue
        out.append(PersonLabel(kp, vis, np.asarray(p.face_box, np.float64), ref))
    return out


def detect_people(paths, progress: bool = True) -> dict[str, list]:
    """path -> every person `toolkit.detect` (the teacher) finds on the ORIGINAL image.

    All of them are needed for anonymization (every face goes, not only the ones usable as labels);
    `labels_from_persons` picks the usable ones.
    """
    from tqdm.auto import tqdm

    from toolkit.detect import detect
    from toolkit.images import load_rgb

    out = {}
    for path in tqdm(list(paths), desc="teacher (BlazePose) labels", disable=not progress, leave=False):
        out[str(path)] = list(detect(load_rgb(path)))
    return out


def people_for(paths, people: dict | None, progress: bool = True) -> dict[str, list]:
    """Detections for exactly `paths`: reused from `people` where present, the rest detected now."""
    paths = [str(p) for p in paths]
    people = dict(people or {})
    missing = [p for p in paths if p not in people]
    if missing:
        people.update(detect_people(missing, progress=progress))
    return {p: people[p] for p in paths}


def teacher_labels(people: dict) -> dict[str, list[PersonLabel]]:
    """path -> usable labels, from the output of `detect_people`."""
    return {k: labels_from_persons(v) for k, v in people.items()}


def person_center(label: PersonLabel) -> np.ndarray:
    return label.keypoints[label.visible].mean(axis=0)


@dataclass
class Regions:
    """N person regions (N, R, R, 3) uint8 with their keypoints in region px, visibility and size (R px), and
    the pixels where no loss applies (ignore regions: crowds, people who are no training target)."""

    images: np.ndarray
    keypoints: np.ndarray  # (N, 7, 2)
    visible: np.ndarray  # (N, 7) bool
    ref: np.ndarray  # (N,) person size in region px
    source: list  # (N,) image path of each region
    ignore: np.ndarray | None = None  # (N, R, R) bool; None: nothing ignored

    def __post_init__(self):
        if self.ignore is None:
            self.ignore = np.zeros(self.images.shape[:3], bool)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def save(self, path) -> None:
        np.savez_compressed(path, images=self.images, keypoints=self.keypoints, visible=self.visible, ref=self.ref,
                            source=np.asarray(self.source), ignore=self.ignore)

    @classmethod
    def load(cls, path) -> "Regions":
        with np.load(path) as z:
            ignore = z["ignore"].astype(bool) if "ignore" in z.files else None
            return cls(z["images"], z["keypoints"], z["visible"].astype(bool), z["ref"], [str(s) for s in z["source"]],
                       ignore)


def warp(image: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    """cv2.warpAffine with M in the toolkit's corner-origin continuous coordinates (toolkit.crop).

    OpenCV puts pixel centres at integer coordinates; without this half-pixel correction a mirrored view
    would be shifted by a pixel against its mirrored keypoints.
    """
    Mc = M.astype(np.float64).copy()
    Mc[:, 2] += Mc[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return cv2.warpAffine(image, Mc, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def warp_mask(mask: np.ndarray, M: np.ndarray, size: int) -> np.ndarray:
    """A bool mask through `warp`: a target pixel is set where any set source pixel reaches it."""
    return warp(mask.astype(np.uint8) * 255, M, size) > 0


def region_transform(label: PersonLabel, size: int = REGION_PX) -> np.ndarray:
    """2x3 affine from image px to the person's region px (REGION_SCALE person sizes around its centre)."""
    s = size / (REGION_SCALE * label.ref)
    c = person_center(label)
    return np.array([[s, 0.0, size / 2 - s * c[0]], [0.0, s, size / 2 - s * c[1]]])


def cut_region(image: np.ndarray, label: PersonLabel, size: int = REGION_PX):
    """(region uint8 (size, size, 3), keypoints (7, 2) in region px, ref in region px); an HxW uint8 `image`
    (a mask) gives an HxW region."""
    M = region_transform(label, size)
    s, c = M[0, 0], person_center(label)
    if s < 1.0:
        # Downscaling: area-average first so thin structures (eyes) do not alias away.
        small = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        M2 = np.array([[s / sx, 0.0, size / 2 - s * c[0]], [0.0, s / sy, size / 2 - s * c[1]]])
        region = warp(small, M2, size)
    else:
        region = warp(image, M, size)
    kp = label.keypoints * s + M[:, 2]
    return region, kp, label.ref * s


def build_regions(images: dict, labels: dict, ignore: dict | None = None) -> Regions:
    """Regions of every labelled person; `images` maps the same keys as `labels` to HxWx3 uint8 arrays, `ignore`
    (optional) some of them to HxW bool masks of the pixels where no loss applies."""
    ims, kps, vis, refs, src, ign = [], [], [], [], [], []
    empty = np.zeros((REGION_PX, REGION_PX), bool)
    for key, people in labels.items():
        if key not in images:
            continue
        mask = (ignore or {}).get(key)
        mask = None if mask is None or not mask.any() else mask.astype(np.uint8) * 255
        for lab in people:
            r, kp, ref = cut_region(images[key], lab)
            ims.append(r), kps.append(kp), vis.append(lab.visible), refs.append(ref), src.append(key)
            # a region pixel is ignored where any ignored image pixel falls (area resampling keeps thin parts)
            ign.append(empty if mask is None else cut_region(mask, lab)[0] > 0)
    if not ims:
        return Regions(np.zeros((0, REGION_PX, REGION_PX, 3), np.uint8), np.zeros((0, NUM_KEYPOINTS, 2)),
                       np.zeros((0, NUM_KEYPOINTS), bool), np.zeros((0,)), [])
    return Regions(np.stack(ims), np.stack(kps), np.stack(vis), np.asarray(refs, np.float64), src, np.stack(ign))


def view_transform(region_size: int, center, ref: float, out: int, scale: float, shift=(0.0, 0.0),
                   angle_deg: float = 0.0, flip: bool = False) -> np.ndarray:
    """2x3 affine from region px to view px: a square of `scale * ref` around center(+shift) -> out x out."""
    side = scale * ref
    cx, cy = center[0] + shift[0] * side, center[1] + shift[1] * side
    s = out / side
    a = math.radians(angle_deg)
    cos, sin = math.cos(a) * s, math.sin(a) * s
    M = np.array([[cos, -sin, 0.0], [sin, cos, 0.0]])
    M[:, 2] = np.array([out / 2, out / 2]) - M[:, :2] @ np.array([cx, cy])
    if flip:
        M[0] = -M[0]
        M[0, 2] += out
    return M


def render_view(regions: Regions, i: int, M: np.ndarray, out: int, flip: bool):
    """(view uint8 (out, out, 3), keypoints (7, 2) view px, visible (7,), ref in view px)."""
    view = warp(regions.images[i], M, out)
    kp = regions.keypoints[i] @ M[:, :2].T + M[:, 2]
    vis = regions.visible[i].copy()
    if flip:
        kp, vis = kp[list(FLIP_PERMUTATION)], vis[list(FLIP_PERMUTATION)]
    ref = regions.ref[i] * float(np.hypot(M[0, 0], M[0, 1]))
    return view, kp, vis, ref


def random_views(regions: Regions, n: int, rng: np.random.Generator, out: int = 96, color: bool = True):
    """n augmented views: (images uint8 (n, out, out, 3), keypoints (n, 7, 2), visible (n, 7), ref (n,),
    ignore (n, out, out) bool)."""
    if len(regions) == 0:
        raise ValueError("no person regions to sample views from")
    imgs = np.zeros((n, out, out, 3), np.uint8)
    kps = np.zeros((n, NUM_KEYPOINTS, 2))
    vis = np.zeros((n, NUM_KEYPOINTS), bool)
    refs = np.zeros(n)
    ignore = np.zeros((n, out, out), bool)
    for j in range(n):
        i = int(rng.integers(len(regions)))
        center = regions.keypoints[i][regions.visible[i]].mean(axis=0)
        flip = bool(rng.random() < 0.5)
        M = view_transform(regions.images.shape[1], center, regions.ref[i], out,
                           scale=float(rng.uniform(*CROP_SCALE_RANGE)),
                           shift=tuple(rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)),
                           angle_deg=float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)), flip=flip)
        view, kps[j], vis[j], refs[j] = render_view(regions, i, M, out, flip)
        if regions.ignore[i].any():
            ignore[j] = warp_mask(regions.ignore[i], M, out)
        if color:
            # Brightness / contrast / white-balance jitter: the photos come from very different cameras.
            v = view.astype(np.float32)
            mean = v.mean()
            v = (v - mean) * rng.uniform(0.75, 1.25) + mean * rng.uniform(0.75, 1.25)
            v = v * rng.uniform(0.92, 1.08, 3).astype(np.float32)
            view = np.clip(v + 0.5, 0, 255).astype(np.uint8)
        imgs[j] = view
    return imgs, kps, vis, refs, ignore


def ignored_cells(ignore: np.ndarray, stride: int) -> np.ndarray:
    """(B, S, S) bool pixel masks -> (B, 1, S/stride, S/stride) float: 1 where any pixel of the cell is ignored."""
    B, S, _ = ignore.shape
    c = S // stride
    return ignore[:, :c * stride, :c * stride].reshape(B, c, stride, c, stride).any(axis=(2, 4))[:, None].astype(
        np.float32)


def eval_views(regions: Regions, views_per_person: int = 4, seed: int = 0, out: int = 96):
    """Deterministic evaluation views: the centred canonical view of each person, then seeded random ones."""
    rng = np.random.default_rng(seed)
    imgs, kps, vis, refs, owner = [], [], [], [], []
    for i in range(len(regions)):
        center = regions.keypoints[i][regions.visible[i]].mean(axis=0)
        for v in range(views_per_person):
            if v == 0:
                M, flip = view_transform(REGION_PX, center, regions.ref[i], out, EVAL_CROP_SCALE), False
            else:
                flip = bool(rng.random() < 0.5)
                M = view_transform(REGION_PX, center, regions.ref[i], out, float(rng.uniform(*CROP_SCALE_RANGE)),
                                   tuple(rng.uniform(-MAX_SHIFT, MAX_SHIFT, 2)),
                                   float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)), flip)
            im, kp, vi, ref = render_view(regions, i, M, out, flip)
            imgs.append(im), kps.append(kp), vis.append(vi), refs.append(ref), owner.append(i)
    return np.stack(imgs), np.stack(kps), np.stack(vis), np.asarray(refs), np.asarray(owner)


def to_model_input(images_uint8: np.ndarray):
    """(n, H, W, 3) uint8 -> (n, 3, H, W) float tensor in [-1, 1] (the model's input convention)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def list_image_files(folder) -> list[Path]:
    """Images of a folder (recursive); clear errors for a missing or empty folder."""
    from toolkit.images import list_images

    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"--images {folder}: no such folder")
    files = list_images([folder]) if folder.is_dir() else [folder]
    if not files:
        raise ValueError(f"--images {folder}: no images found (looked for .jpg, .png, ... recursively)")
    return files
