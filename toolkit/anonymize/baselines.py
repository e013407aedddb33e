"""Classical face obfuscation baselines: Gaussian blur, pixelation and a solid mask, on the face box.

They are what the diffusion method is compared against (and `mask` is also the fallback of
`--on-miss mask`). Each one changes only the pixels of the face box, rounded outwards to whole pixels,
and reads nothing but the pixels it replaces plus (for blur) their neighbours.
"""

import math

import cv2
import numpy as np

BASELINES = ("blur", "pixelate", "mask")

DEFAULT_MASK_COLOR = (0, 0, 0)
DEFAULT_PIXEL_BLOCKS = 8
# Blur sigma relative to the face box's longer side when none is given. A face blurred with a sigma of
# a few pixels is still recognisable to a face matcher; an eighth of the face removes eyes/mouth detail.
DEFAULT_BLUR_SIGMA_FRACTION = 0.125


def box_pixels(box, image_shape) -> tuple[int, int, int, int]:
    """Float (x0, y0, x1, y1) box -> the int pixel box that covers it (floor/ceil), clipped to the image.

    Raises ValueError for a non-finite or empty box, or one that does not overlap the image.
    """
    H, W = int(image_shape[0]), int(image_shape[1])
    vals = [float(v) for v in box]
    if len(vals) != 4 or not all(math.isfinite(v) for v in vals):
        raise ValueError(f"face box {box} has non-finite coordinates")
    x0 = max(0, int(math.floor(vals[0])))
    y0 = max(0, int(math.floor(vals[1])))
    x1 = min(W, int(math.ceil(vals[2])))
    y1 = min(H, int(math.ceil(vals[3])))
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box {box} is empty or outside the {W}x{H} image")
    return x0, y0, x1, y1


def blur_box(image: np.ndarray, box, sigma: float | None = None) -> np.ndarray:
    """Gaussian-blur the face box in place and return the image. `sigma` in pixels; None = auto."""
    x0, y0, x1, y1 = box_pixels(box, image.shape)
    side = max(x1 - x0, y1 - y0)
    if sigma is None:
        sigma = DEFAULT_BLUR_SIGMA_FRACTION * side
    sigma = float(sigma)
    if not sigma > 0:
        raise ValueError(f"blur sigma must be positive, got {sigma}")
    # Blur a padded window so that the box edges are smoothed with their real neighbours, not a border
    # rule; only the box itself is written back.
    pad = int(math.ceil(3 * sigma))
    H, W = image.shape[:2]
    wx0, wy0 = max(0, x0 - pad), max(0, y0 - pad)
    wx1, wy1 = min(W, x1 + pad), min(H, y1 + pad)
    window = image[wy0:wy1, wx0:wx1].astype(np.float32)
    blurred = cv2.GaussianBlur(window, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)
    inner = blurred[y0 - wy0 : y1 - wy0, x0 - wx0 : x1 - wx0]
    image[y0:y1, x0:x1] = np.clip(np.rint(inner), 0, 255).astype(np.uint8)
    return image


def pixelate_box(image: np.ndarray, box, blocks: int = DEFAULT_PIXEL_BLOCKS) -> np.ndarray:
    """Replace the face box by `blocks` x `blocks` cells (along its longer side), each its mean colour."""
    x0, y0, x1, y1 = box_pixels(box, image.shape)
    blocks = int(blocks)
    if blocks < 1:
        raise ValueError(f"pixelate blocks must be >= 1, got {blocks}")
    w, h = x1 - x0, y1 - y0
    cell = max(1.0, max(w, h) / blocks)
    bw, bh = max(1, int(round(w / cell))), max(1, int(round(h / cell)))
    region = image[y0:y1, x0:x1]
    # INTER_AREA = exact cell means when shrinking; NEAREST blows the cells back up without mixing them.
    small = cv2.resize(region, (bw, bh), interpolation=cv2.INTER_AREA)
    image[y0:y1, x0:x1] = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    return image


def mask_box(image: np.ndarray, box, color=DEFAULT_MASK_COLOR) -> np.ndarray:
    """Fill the face box with a solid colour (default black)."""
    x0, y0, x1, y1 = box_pixels(box, image.shape)
    color = np.asarray(color, dtype=np.int64).reshape(-1)
    if color.size != 3 or (color < 0).any() or (color > 255).any():
        raise ValueError(f"mask colour must be three values in 0..255, got {color.tolist()}")
    image[y0:y1, x0:x1] = color.astype(np.uint8)
    return image


def apply_baseline(image: np.ndarray, box, method: str, *, blur_sigma=None, pixel_blocks=DEFAULT_PIXEL_BLOCKS,
                   mask_color=DEFAULT_MASK_COLOR) -> np.ndarray:
    if method == "blur":
        return blur_box(image, box, blur_sigma)
    if method == "pixelate":
        return pixelate_box(image, box, pixel_blocks)
    if method == "mask":
        return mask_box(image, box, mask_color)
    raise ValueError(f"unknown baseline method {method!r}; choose one of {', '.join(BASELINES)}")
