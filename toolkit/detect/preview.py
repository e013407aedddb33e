"""Overlay people (face boxes + keypoints) on an image, for previews and reports."""

from __future__ import annotations

import cv2
import numpy as np

from toolkit.images import load_rgb

# Colours per keypoint (RGB): nose, person's left side warm, right side cool, so a left/right swap shows.
_COLOURS = ((255, 255, 255), (255, 80, 0), (0, 160, 255), (255, 160, 0), (0, 80, 255), (255, 0, 120), (0, 220, 120))
_BONES = ((0, 1), (0, 2), (1, 3), (2, 4), (5, 6))


def draw(image, persons, *, thickness: int | None = None) -> np.ndarray:
    """A copy of `image` (anything load_rgb reads) with each person's face box, score and keypoints.

    Invisible keypoints are drawn hollow; the input is never modified.
    """
    out = load_rgb(image).copy()
    h, w = out.shape[:2]
    t = thickness or max(1, round(max(h, w) / 400))
    for p in persons:
        x0, y0, x1, y1 = (int(round(v)) for v in p.face_box)
        # face_box is clipped to [0, w] x [0, h]; the last drawable pixel row/column is w-1 / h-1.
        x1, y1 = min(x1, w - 1), min(y1, h - 1)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 255, 0), t)
        cv2.putText(out, f"{p.score:.2f}", (x0, max(0, y0 - 3 * t)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * t,
                    (0, 255, 0), t, cv2.LINE_AA)
        pts = np.asarray(p.keypoints)
        for a, b in _BONES:
            if p.visible[a] and p.visible[b]:
                cv2.line(out, _pt(pts[a]), _pt(pts[b]), (200, 200, 200), t, cv2.LINE_AA)
        for i, (pt, vis) in enumerate(zip(pts, p.visible)):
            if not np.all(np.isfinite(pt)):
                continue
            cv2.circle(out, _pt(pt), 2 * t + 1, _COLOURS[i], -1 if vis else t, cv2.LINE_AA)
    return out


def _pt(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))
