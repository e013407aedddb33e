"""PNG sample grids: one row per face, columns context | keypoints | generated (| original)."""

import numpy as np
import torch

from toolkit.diffusion.model import keypoint_heatmaps
from toolkit.images import save_rgb


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B,3,S,S) in [-1,1] -> (B,S,S,3) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def keypoint_overlay(images, masks, keypoints, visible, sigma: float) -> torch.Tensor:
    """Context image dimmed, with the keypoint heatmaps drawn in yellow: what the model was told."""
    s = images.shape[-1]
    heat = keypoint_heatmaps(keypoints, visible, s, max(sigma, 1.0)).amax(1, keepdim=True).cpu()
    base = (images.cpu() * masks.cpu()) * 0.5 - 0.25
    yellow = torch.tensor([1.0, 1.0, -1.0]).view(1, 3, 1, 1)
    return base * (1 - heat) + yellow * heat


def write_grid(path, columns: list[torch.Tensor], pad: int = 2) -> None:
    """Columns of (B,3,S,S) [-1,1] tensors side by side, one row per image, white padding."""
    cols = [to_uint8(c) for c in columns]
    b, s = cols[0].shape[0], cols[0].shape[1]
    h = b * s + (b + 1) * pad
    w = len(cols) * s + (len(cols) + 1) * pad
    canvas = np.full((h, w, 3), 255, np.uint8)
    for r in range(b):
        for c, col in enumerate(cols):
            y, x = pad + r * (s + pad), pad + c * (s + pad)
            canvas[y : y + s, x : x + s] = col[r]
    save_rgb(canvas, path)
