"""A video with known people for checking the tracker: bundled photos walking across a grey stage.

Three real head-and-shoulders photos (astronaut, obama, biden from `toolkit assets fetch`) move across
the frame: the first walks right and leaves, the second walks left and crosses the first, the third
enters from the right half-way through. The true face centre of every person in every frame is known,
which is what tests and `benchmarks/anonymize_tracking.py` compare the tracker's ids against.
"""

from __future__ import annotations

import cv2
import numpy as np

PEOPLE = ("astronaut", "obama", "biden")
SIZE = (720, 420)  # width, height
PERSON_HEIGHT = 170


def _cut_person(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The photo cropped around its detected face to head and shoulders, PERSON_HEIGHT tall; and its face centre."""
    from toolkit.assets import sample_photo
    from toolkit.detect import detect
    from toolkit.images import load_rgb

    img = load_rgb(sample_photo(name))
    found = detect(img)
    if len(found) != 1:
        raise RuntimeError(f"{name}: expected one person in the photo, the detector found {len(found)}")
    x0, y0, x1, y1 = (float(v) for v in found[0].face_box)
    cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
    left, top = int(max(0, cx - 1.6 * side)), int(max(0, cy - 1.3 * side))
    right, bottom = int(min(img.shape[1], cx + 1.6 * side)), int(min(img.shape[0], cy + 2.2 * side))
    scale = PERSON_HEIGHT / (bottom - top)
    crop = cv2.resize(img[top:bottom, left:right], (round((right - left) * scale), PERSON_HEIGHT),
                      interpolation=cv2.INTER_AREA)
    return crop, np.array([(cx - left) * scale, (cy - top) * scale])


def crossing_frames(n_frames: int = 12, still: int | None = None
                    ) -> tuple[list[np.ndarray], list[dict[int, tuple[float, float]]]]:
    """RGB frames, and per frame {person index: true face centre (x, y)} of everyone fully in view.

    still: person 0 or 1 stands where they start (the others still walk past), for measuring flicker.
    """
    if still not in (None, 0, 1):
        raise ValueError(f"still must be None, 0 or 1 (person 2 enters the frame), got {still}")
    W, H = SIZE
    people = [_cut_person(name) for name in PEOPLE]
    frames, truth = [], []
    for t in range(n_frames):
        frame = np.full((H, W, 3), 128, np.uint8)
        walked = [t if k != still else 0 for k in range(len(PEOPLE))]
        placements = [(0, 20 + 60 * walked[0], 10),  # walks right, leaves at the right edge
                      (1, W - 20 - people[1][0].shape[1] - 45 * walked[1], 120)]  # walks left, crosses person 0
        if t >= n_frames // 3:
            placements.append((2, W - 50 * (walked[2] - n_frames // 3 + 1), 240))  # enters from the right
        centres = {}
        for k, x, y in placements:
            crop, face = people[k]
            x0, x1 = max(0, x), min(W, x + crop.shape[1])
            if x1 > x0:
                frame[y : y + crop.shape[0], x0:x1] = crop[:, x0 - x : x1 - x]
            if 0 <= x and x + crop.shape[1] <= W:
                centres[k] = (float(x + face[0]), float(y + face[1]))
        frames.append(frame)
        truth.append(centres)
    return frames, truth


def write_video(path, frames, fps: float = 5.0) -> None:
    """Lossless (FFV1) video of RGB frames."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path} with FFV1")
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
