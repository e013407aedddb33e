"""The FDF256 file layout: where things are and how to read them (numpy only, no torch).

Shared by the Dataset (`fdf.py`) and the checker (`check.py`), so both read a directory the same way.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from toolkit.keypoints import NUM_KEYPOINTS

SPLITS = ("train", "val")


def split_dir(root, split: str) -> Path:
    """The directory of one split: ROOT/<split>, or ROOT itself when it is that split's folder (…/train)."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such dataset directory")
    if (root / split).is_dir():
        return root / split
    if root.name == split and (root / "images").is_dir():
        return root  # ROOT/train given directly
    found = sorted(p.name for p in root.iterdir() if p.is_dir())
    raise FileNotFoundError(
        f"{root}: no '{split}' split (expected {root / split}/images/<i>.png, landmarks.npy, bounding_box.npy; "
        f"found folders: {', '.join(found) or 'none'})"
    )


def image_paths(images_dir: Path) -> list[Path]:
    """PNG files of a split, ordered by the integer in their names; a non-integer name is an error."""
    paths = list(Path(images_dir).glob("*.png"))
    bad = [p.name for p in paths if not p.stem.isdigit()]
    if bad:
        raise ValueError(f"{images_dir}: image names must be integers (<i>.png); found {', '.join(sorted(bad)[:5])}")
    return sorted(paths, key=lambda p: int(p.stem))


def load_landmarks(path: Path) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)
    if arr.ndim == 2 and arr.shape[1] == 2 * NUM_KEYPOINTS:
        arr = arr.reshape(-1, NUM_KEYPOINTS, 2)
    if arr.ndim != 3 or arr.shape[1:] != (NUM_KEYPOINTS, 2):
        raise ValueError(f"{path}: landmarks must be (N, 7, 2) or (N, 14), got {arr.shape}")
    return arr.astype(np.float32)


def load_boxes(path: Path) -> np.ndarray:
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{path}: bounding boxes must be (N, 4), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{path}: bounding boxes must be integer pixels, got non-integer {arr.dtype} values")
        arr = arr.astype(np.int64)
    return arr.astype(np.int64)


def visible_points(landmarks: np.ndarray) -> np.ndarray:
    """Boolean (..., 7): the normalized point is finite and inside [0, 1]."""
    x, y = landmarks[..., 0], landmarks[..., 1]
    return np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x <= 1) & (y >= 0) & (y <= 1)


def scale_box(box, from_size: int, to_size: int) -> np.ndarray:
    """Scale an integer pixel box between crop sizes, rounding outwards so the face stays covered."""
    if from_size == to_size:
        return np.asarray(box, dtype=np.int64)
    s = to_size / from_size
    x0, y0, x1, y1 = (float(v) for v in box)
    out = [math.floor(x0 * s + 1e-6), math.floor(y0 * s + 1e-6), math.ceil(x1 * s - 1e-6), math.ceil(y1 * s - 1e-6)]
    return np.clip(np.array(out, dtype=np.int64), 0, to_size)
