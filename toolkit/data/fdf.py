"""A torch Dataset for the FDF256 layout (Hukkelås et al., DeepPrivacy), and keypoint maps.

Layout, exactly as the authors' FDF256 release and `toolkit data build` write it:

    ROOT/
      train/  images/0.png 1.png ...   landmarks.npy   bounding_box.npy
      val/    images/0.png 1.png ...   landmarks.npy   bounding_box.npy

- `images/<i>.png`: square RGB face crops (256x256 in FDF256), ordered by the integer in the file name
  (zero-padded names such as 000012.png work too); image k goes with row k of the .npy files.
- `landmarks.npy`: float32 (N, 7, 2) or (N, 14), x/y normalized to [0, 1] by the crop size, in COCO order
  (see `toolkit.keypoints.NAMES`). FDF has no visibility flag: a point outside [0, 1] (or NaN) is invisible.
  `data build` writes invisible points as (-1, -1).
- `bounding_box.npy`: integer (N, 4) face box x0, y0, x1, y1 in crop pixels (x1/y1 exclusive); the face mask
  is 0 inside it and 1 elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from toolkit.data.layout import (  # noqa: F401  (re-exported: the layout helpers belong with the Dataset)
    SPLITS,
    image_paths,
    load_boxes,
    load_landmarks,
    scale_box,
    split_dir,
    visible_points,
)
from toolkit.keypoints import FLIP_PERMUTATION

INVISIBLE = -1.0  # coordinate given to invisible keypoints in Dataset items
DEFAULT_SIGMA_FRACTION = 0.02  # default heatmap sigma as a fraction of the map size


def default_sigma(size: int) -> float:
    """Heatmap sigma in pixels for a map `size` wide: 2% of the size, at least one pixel."""
    return max(1.0, DEFAULT_SIGMA_FRACTION * size)


def keypoint_maps(keypoints, visible=None, size: int = 64, mode: str = "heatmap", sigma: float | None = None):
    """(..., 7, size, size) float32 maps from normalized keypoints (..., 7, 2).

    mode "heatmap": a Gaussian of `sigma` pixels (default `default_sigma(size)`) with peak 1 at the point;
    mode "onehot": 1 at the pixel that contains the point, 0 elsewhere.
    Invisible points (visible False, or outside [0, 1], or NaN) give an all-zero map.
    Accepts numpy arrays or tensors; returns a torch tensor.
    """
    kp = torch.as_tensor(np.asarray(keypoints) if not torch.is_tensor(keypoints) else keypoints)
    kp = kp.to(torch.float32)
    if kp.shape[-1] != 2:
        raise ValueError(f"keypoints must be (..., K, 2), got {tuple(kp.shape)}")
    inside = torch.isfinite(kp).all(-1) & (kp >= 0).all(-1) & (kp <= 1).all(-1)
    if visible is not None:
        vis = torch.as_tensor(np.asarray(visible) if not torch.is_tensor(visible) else visible).to(torch.bool)
        inside = inside & vis
    kp = torch.nan_to_num(kp, nan=0.0, posinf=0.0, neginf=0.0)
    size = int(size)
    if mode == "heatmap":
        sigma = default_sigma(size) if sigma is None else float(sigma)
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        centres = (torch.arange(size, dtype=torch.float32) + 0.5)  # pixel centres
        px = kp[..., 0:1] * size  # (..., K, 1)
        py = kp[..., 1:2] * size
        gx = torch.exp(-((centres - px) ** 2) / (2 * sigma**2))  # (..., K, S)
        gy = torch.exp(-((centres - py) ** 2) / (2 * sigma**2))
        maps = gy.unsqueeze(-1) * gx.unsqueeze(-2)  # separable Gaussian: (..., K, S, S)
    elif mode == "onehot":
        ix = torch.clamp(torch.floor(kp[..., 0] * size), 0, size - 1).long()
        iy = torch.clamp(torch.floor(kp[..., 1] * size), 0, size - 1).long()
        maps = torch.zeros(*kp.shape[:-1], size * size, dtype=torch.float32)
        maps.scatter_(-1, (iy * size + ix).unsqueeze(-1), 1.0)
        maps = maps.view(*kp.shape[:-1], size, size)
    else:
        raise ValueError(f"keypoint map mode must be 'heatmap' or 'onehot', got {mode!r}")
    return maps * inside.to(torch.float32)[..., None, None]


class FDFDataset(torch.utils.data.Dataset):
    """FDF256-layout faces as dicts of tensors, ready for a keypoint-conditioned inpainting model.

    Item keys: "image" float32 (3, S, S) in [-1, 1]; "mask" float32 (1, S, S) 1 = known, 0 = face box;
    "keypoints" float32 (7, 2) normalized (invisible points are (-1, -1)); "visible" bool (7,);
    "keypoint_maps" float32 (7, S, S) (all zero for invisible points); "box" int64 (4,)
    face box in output pixels; "flipped" bool; "index" int64.

    size: output side S (None = the stored size). The image is resized with area averaging (or bicubic when
    enlarging); the box is scaled outwards; keypoints are normalized so they need no change.
    flip: with True each item is mirrored with probability 0.5. The draw is deterministic: it comes from
    `generator` when one is given, otherwise from (seed, epoch, index), so DataLoader workers agree and
    `set_epoch` gives a new draw per epoch. A flip mirrors image, mask, box and x, and swaps left/right points.
    """

    def __init__(
        self,
        root,
        split: str = "train",
        size: int | None = None,
        flip: bool = False,
        keypoint_maps: str = "heatmap",
        sigma: float | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
    ):
        if keypoint_maps not in ("heatmap", "onehot"):
            raise ValueError(f"keypoint_maps must be 'heatmap' or 'onehot', got {keypoint_maps!r}")
        if size is not None and int(size) < 4:
            raise ValueError(f"size must be at least 4 pixels, got {size}")
        self.root = Path(root)
        self.split = split
        self.dir = split_dir(root, split)
        images_dir = self.dir / "images"
        if not images_dir.is_dir():
            raise FileNotFoundError(f"{self.dir}: no images/ folder")
        self.paths = image_paths(images_dir)
        if not self.paths:
            raise FileNotFoundError(f"{images_dir}: no <i>.png images")
        for name in ("landmarks.npy", "bounding_box.npy"):
            if not (self.dir / name).exists():
                raise FileNotFoundError(f"{self.dir}: missing {name}")
        self.landmarks = load_landmarks(self.dir / "landmarks.npy")
        self.boxes = load_boxes(self.dir / "bounding_box.npy")
        n = len(self.paths)
        if len(self.landmarks) != n or len(self.boxes) != n:
            raise ValueError(
                f"{self.dir}: counts differ: {n} images, {len(self.landmarks)} landmarks, {len(self.boxes)} boxes "
                "(run `toolkit data check` for details)"
            )
        try:
            with Image.open(self.paths[0]) as im:
                self.stored_size = int(im.size[0])
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"{self.paths[0]}: not a readable PNG ({exc}); run `toolkit data check`") from exc
        self.size = int(size) if size is not None else self.stored_size
        self.flip = bool(flip)
        self.map_mode = keypoint_maps
        self.sigma = default_sigma(self.size) if sigma is None else float(sigma)
        self.seed = int(seed)
        self.generator = generator
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Give every item a fresh flip draw for a new epoch (when no generator is used)."""
        self.epoch = int(epoch)

    def _draw_flip(self, index: int) -> bool:
        if not self.flip:
            return False
        if self.generator is not None:
            return bool(torch.rand((), generator=self.generator) < 0.5)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 2_147_483 + index)
        return bool(torch.rand((), generator=g) < 0.5)

    def _load_image(self, path: Path) -> np.ndarray:
        try:
            with Image.open(path) as im:
                im.load()
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable PNG ({exc})") from exc
        if arr.shape[0] != arr.shape[1]:
            raise ValueError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, FDF crops must be square")
        return arr

    def get(self, index: int, flipped: bool = False) -> dict:
        """Item `index`, mirrored when `flipped` (no randomness)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        img = self._load_image(self.paths[index])
        native = img.shape[0]
        S = self.size
        if native != S:
            import cv2  # resize only when needed

            interp = cv2.INTER_AREA if S < native else cv2.INTER_CUBIC
            img = cv2.resize(img, (S, S), interpolation=interp)
        box = scale_box(self.boxes[index], native, S)
        kp = self.landmarks[index].astype(np.float32).copy()
        if flipped:
            img = img[:, ::-1]
            x0, y0, x1, y1 = box
            box = np.array([S - x1, y0, S - x0, y1], dtype=np.int64)
            kp = kp[list(FLIP_PERMUTATION)]
            kp[:, 0] = 1.0 - kp[:, 0]
        vis = visible_points(kp)
        kp[~vis] = INVISIBLE
        mask = np.ones((S, S), dtype=np.float32)
        mask[box[1] : box[3], box[0] : box[2]] = 0.0
        image = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).to(torch.float32) / 127.5 - 1.0
        kp_t = torch.from_numpy(kp)
        vis_t = torch.from_numpy(vis)
        return {
            "image": image,
            "mask": torch.from_numpy(mask)[None],
            "keypoints": kp_t,
            "visible": vis_t,
            "keypoint_maps": keypoint_maps(kp_t, vis_t, S, self.map_mode, self.sigma),
            "box": torch.from_numpy(box),
            "flipped": torch.tensor(bool(flipped)),
            "index": torch.tensor(index, dtype=torch.int64),
        }

    def __getitem__(self, index: int) -> dict:
        return self.get(int(index), flipped=self._draw_flip(int(index)))
