"""The 7 FDF keypoints, in COCO order, and what a horizontal flip does to them.

Left/right are the *person's* left/right (COCO convention): on a frontal photo the person's left eye
is on the image's right side.
"""

import numpy as np

NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
)
NUM_KEYPOINTS = len(NAMES)

# Index i of a flipped image holds the point that was at FLIP_PERMUTATION[i] before the flip.
FLIP_PERMUTATION = (0, 2, 1, 4, 3, 6, 5)

# Where the 7 FDF points sit among BlazePose's 33 landmarks and COCO's 17 keypoints.
BLAZEPOSE_INDICES = (0, 2, 5, 7, 8, 11, 12)
COCO17_INDICES = (0, 1, 2, 3, 4, 5, 6)


def flip_keypoints(points: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Mirror (..., 7, 2+) keypoints horizontally in an image `width` wide and swap left/right.

    With normalized coordinates use width=1.0. Extra columns (score, visibility) are carried along.
    """
    points = np.asarray(points)
    out = points[..., FLIP_PERMUTATION, :].copy()
    out[..., 0] = width - out[..., 0]
    return out


def visibility(points: np.ndarray, width: float = 1.0, height: float = 1.0) -> np.ndarray:
    """Boolean (..., 7): the point lies inside the image (points outside are marked invisible)."""
    points = np.asarray(points)
    x, y = points[..., 0], points[..., 1]
    return np.isfinite(x) & np.isfinite(y) & (x >= 0) & (x <= width) & (y >= 0) & (y <= height)
