"""Reading user images robustly: EXIF orientation, grayscale, palette, RGBA and 16-bit all become RGB uint8.

Every stage that reads a user's photo goes through `load_rgb`, so that odd files fail the same clear way.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm"}


class ImageReadError(ValueError):
    """A file that is not a readable image; the message names the file and the reason."""


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        arr = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo)
        arr = (arr * 255.0 + 0.5).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white: transparent pixels have no colour of their own.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def load_rgb(source) -> np.ndarray:
    """HxWx3 uint8 RGB from a path, a PIL image or an array; raises ImageReadError with the reason."""
    if isinstance(source, np.ndarray):
        arr = source
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ImageReadError(f"array of shape {arr.shape} is not an HxWx3 image")
        if arr.dtype == np.uint16:
            arr = (arr.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
        elif arr.dtype != np.uint8:
            raise ImageReadError(f"array of dtype {arr.dtype} is not a uint8/uint16 image")
        return np.ascontiguousarray(arr[..., :3])
    if isinstance(source, Image.Image):
        return _to_uint8_rgb(ImageOps.exif_transpose(source))
    path = Path(source)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            arr = _to_uint8_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc})") from exc
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise ImageReadError(f"{path}: image too small ({arr.shape[1]}x{arr.shape[0]} px)")
    return arr


def save_rgb(arr: np.ndarray, path, *, quality: int = 95) -> None:
    """Write an RGB uint8 array; atomically (temp file + rename), so a crash never leaves half an image."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    img = Image.fromarray(np.asarray(arr, dtype=np.uint8))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(tmp, quality=quality)
    else:
        img.save(tmp)
    tmp.replace(path)


def list_images(inputs) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image paths; unknown files are kept so they error."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def letterbox(image: np.ndarray, size: int):
    """Any H x W x 3 image scaled to fit size x size (area resampling when shrinking), centred on black:
    (frame, scale, offset), where frame px = image px * scale + offset."""
    import cv2

    h, w = image.shape[:2]
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    frame = np.zeros((size, size, 3), np.uint8)
    ox, oy = (size - nw) // 2, (size - nh) // 2
    frame[oy:oy + nh, ox:ox + nw] = small
    return frame, scale, np.array([ox, oy], np.float64)
