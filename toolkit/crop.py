"""FDF-like face crop geometry: the one place that decides how a face is framed.

`toolkit data build` (training data) and `toolkit anonymize` (use) both call these functions, so the model
sees faces framed the same way at training time and at use.

Coordinate convention (everywhere in the toolkit): continuous pixel coordinates whose origin is the top-left
*corner* of the top-left pixel; pixel (i, j) covers [j, j+1) x [i, i+1). A normalized coordinate u in [0, 1]
is u * size in a crop `size` pixels wide, and a horizontal flip maps x to width - x.
Boxes are (x0, y0, x1, y1) with x1/y1 exclusive, i.e. `mask[y0:y1, x0:x1]` is the box.
"""

import math

import cv2
import numpy as np

# Side of the square crop relative to the face box's longer side. FDF frames a face so that its box is
# roughly the centre half of the crop, with some hair, neck and the top of the shoulders as context.
CROP_SCALE = 2.0
# Shift the crop centre down (in face-box sides) so the crop shows a little more neck/shoulders than sky.
CROP_SHIFT_DOWN = 0.1


def expanded_crop_box(face_box, image_shape=None) -> tuple[int, int, int, int]:
    """Square (x0, y0, x1, y1) int crop box around `face_box` (x0, y0, x1, y1 px), FDF-like.

    The box may extend beyond the image (`crop_and_resize` pads and reports which pixels are real);
    `image_shape` is accepted for the callers' convenience and to validate the face box against it.
    """
    fx0, fy0, fx1, fy1 = (float(v) for v in face_box)
    if not all(math.isfinite(v) for v in (fx0, fy0, fx1, fy1)):
        raise ValueError(f"face box {face_box} has non-finite coordinates")
    w, h = fx1 - fx0, fy1 - fy0
    if w <= 0 or h <= 0:
        raise ValueError(f"face box {face_box} is empty (x1 <= x0 or y1 <= y0)")
    if image_shape is not None:
        H, W = int(image_shape[0]), int(image_shape[1])
        if fx1 <= 0 or fy1 <= 0 or fx0 >= W or fy0 >= H:
            raise ValueError(f"face box {face_box} lies outside the {W}x{H} image")
    s = max(w, h)
    side = max(2, int(round(CROP_SCALE * s)))
    cx = (fx0 + fx1) / 2.0
    cy = (fy0 + fy1) / 2.0 + CROP_SHIFT_DOWN * s
    x0 = int(math.floor(cx - side / 2.0 + 0.5))
    y0 = int(math.floor(cy - side / 2.0 + 0.5))
    return (x0, y0, x0 + side, y0 + side)


def crop_and_resize(image, crop_box, size: int):
    """Cut `crop_box` out of an HxWx3 uint8 image and resize it to (size, size, 3).

    Parts of the box outside the image are filled by edge replication (the nearest real pixel), which
    gives the model plausible context instead of a hard black border; `valid_mask` (size, size) bool says
    which output pixels come from inside the image (True) and which are padding (False). Callers that paste
    results back must only use valid pixels.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 image, got {image.shape} {image.dtype}")
    size = int(size)
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"crop box {crop_box} is empty")
    H, W = image.shape[:2]
    # Index arrays clipped to the image = edge replication without materialising a padded copy.
    ys = np.clip(np.arange(y0, y1), 0, H - 1)
    xs = np.clip(np.arange(x0, x1), 0, W - 1)
    region = image[ys[:, None], xs[None, :]]
    bw, bh = x1 - x0, y1 - y0
    # INTER_AREA averages when shrinking (no aliasing); cubic keeps detail when enlarging.
    interp = cv2.INTER_AREA if (bw >= size and bh >= size) else cv2.INTER_CUBIC
    crop = cv2.resize(region, (size, size), interpolation=interp)
    crop = np.ascontiguousarray(crop, dtype=np.uint8)

    # An output pixel is real when its centre maps inside the image.
    centres = (np.arange(size) + 0.5) / size
    src_x = x0 + centres * bw
    src_y = y0 + centres * bh
    valid_x = (src_x >= 0) & (src_x < W)
    valid_y = (src_y >= 0) & (src_y < H)
    valid = valid_y[:, None] & valid_x[None, :]
    return crop, valid


def to_crop_coords(points, crop_box, size: int) -> np.ndarray:
    """Image pixel coordinates (..., 2) -> pixel coordinates in the (size x size) crop of `crop_box`."""
    points = np.asarray(points, dtype=np.float64)
    x0, y0, x1, y1 = (float(v) for v in crop_box)
    scale = np.array([size / (x1 - x0), size / (y1 - y0)])
    return (points[..., :2] - np.array([x0, y0])) * scale


def from_crop_coords(points, crop_box, size: int) -> np.ndarray:
    """Inverse of `to_crop_coords`: crop pixel coordinates (..., 2) -> image pixel coordinates."""
    points = np.asarray(points, dtype=np.float64)
    x0, y0, x1, y1 = (float(v) for v in crop_box)
    scale = np.array([(x1 - x0) / size, (y1 - y0) / size])
    return points[..., :2] * scale + np.array([x0, y0])


def face_box_in_crop(face_box, crop_box, size: int) -> tuple[int, int, int, int]:
    """The face box in crop pixels as ints (x0, y0, x1, y1), as stored in FDF's `bounding_box.npy`.

    Rounded outwards (floor/ceil) so the box, and therefore the face mask, never misses a face pixel;
    clipped to the crop.
    """
    corners = to_crop_coords(np.array([[face_box[0], face_box[1]], [face_box[2], face_box[3]]]), crop_box, size)
    x0 = int(np.clip(math.floor(corners[0, 0] + 1e-6), 0, size))
    y0 = int(np.clip(math.floor(corners[0, 1] + 1e-6), 0, size))
    x1 = int(np.clip(math.ceil(corners[1, 0] - 1e-6), 0, size))
    y1 = int(np.clip(math.ceil(corners[1, 1] - 1e-6), 0, size))
    return (x0, y0, x1, y1)


def face_mask(face_box_in_crop_px, size: int) -> np.ndarray:
    """(size, size) float32 mask: 1 = known pixel (kept), 0 = face box (to generate), as in FDF/RePaint.

    The box may be float; it is rounded outwards so that every pixel the face touches is generated.
    """
    bx0, by0, bx1, by1 = (float(v) for v in face_box_in_crop_px)
    x0 = int(np.clip(math.floor(bx0), 0, size))
    y0 = int(np.clip(math.floor(by0), 0, size))
    x1 = int(np.clip(math.ceil(bx1), 0, size))
    y1 = int(np.clip(math.ceil(by1), 0, size))
    mask = np.ones((size, size), dtype=np.float32)
    mask[y0:y1, x0:x1] = 0.0
    return mask
