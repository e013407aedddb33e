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


# Left/right pairs whose image order tells which way a person faces: eyes, ears, shoulders.
LEFT_RIGHT_PAIRS = ((1, 2), (3, 4), (5, 6))


def faces_away(points: np.ndarray, visible=None) -> bool:
    """True when the person turns their back to the camera: on at least two visible left/right pairs, and on
    every one of them, the person's left point lies on the image's left (frontal: on the image's right).

    A pose detector still places eyes on the back of a head; only the order of the pairs says where the
    face is. A side view (pairs that disagree) is not "away".
    """
    points = np.asarray(points, dtype=np.float64).reshape(NUM_KEYPOINTS, -1)
    visible = np.ones(NUM_KEYPOINTS, bool) if visible is None else np.asarray(visible, bool).reshape(-1)
    signs = [np.sign(points[l, 0] - points[r, 0]) for l, r in LEFT_RIGHT_PAIRS
             if visible[l] and visible[r] and np.isfinite(points[[l, r], 0]).all()]
    signs = [s for s in signs if s != 0]
    return len(signs) >= 2 and all(s < 0 for s in signs)
