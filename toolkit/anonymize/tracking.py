"""One face per person across video frames: a face tracker with smoothed boxes.

Each detected face is matched to a track by the overlap (IoU) of its face box with the box the track
predicts for this frame (constant velocity), or, when the boxes do not overlap, by the distance of the
visible head keypoints relative to the face size. A track keeps its id (and so its generation seed) for
the whole video; a track not seen for `max_missed` frames ends, and a person who comes back later gets a
new id. Boxes are smoothed over time but never shrink below this frame's detection: the whole detected
face is always replaced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

HEAD_POINTS = 5  # nose, eyes, ears: the keypoints that move with the face


def _field(person, name):
    return person.get(name) if isinstance(person, dict) else getattr(person, name, None)


def _usable(box: np.ndarray) -> bool:
    return box.shape == (4,) and bool(np.isfinite(box).all()) and box[2] > box[0] and box[3] > box[1]


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def _head_distance(a_pts, a_vis, b_pts, b_vis, size: float) -> float:
    """Mean distance of the head keypoints both faces show, in face sizes (inf when none is shared)."""
    if a_pts is None or b_pts is None:
        return np.inf
    both = np.asarray(a_vis, bool)[:HEAD_POINTS] & np.asarray(b_vis, bool)[:HEAD_POINTS]
    if not both.any():
        return np.inf
    d = np.linalg.norm(np.asarray(a_pts, float)[:HEAD_POINTS][both] - np.asarray(b_pts, float)[:HEAD_POINTS][both],
                       axis=1)
    return float(d.mean() / max(size, 1.0))


@dataclass
class _Track:
    id: int
    box: np.ndarray  # smoothed (x0, y0, x1, y1)
    velocity: np.ndarray  # per-frame change of the smoothed box
    keypoints: np.ndarray | None
    visible: np.ndarray | None
    missed: int = 0

    def predicted(self) -> np.ndarray:
        return self.box + self.velocity * (self.missed + 1)


class FaceTracker:
    """Assigns a track id to every face of successive frames and smooths its face box.

    smoothing: weight of the past in the exponential smoothing of box centre and size (0 = none).
    """

    def __init__(self, *, min_iou: float = 0.1, max_keypoint_distance: float = 2.0, max_missed: int = 10,
                 smoothing: float = 0.5):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.min_iou = min_iou
        self.max_keypoint_distance = max_keypoint_distance
        self.max_missed = max_missed
        self.smoothing = smoothing
        self.tracks: list[_Track] = []
        self.next_id = 0

    def _cost(self, track: _Track, box: np.ndarray, person) -> float:
        """0 (same place) .. 1 (barely plausible); inf when the face cannot be this track's."""
        if not _usable(box):
            return np.inf
        iou = box_iou(track.predicted(), box)
        if iou >= self.min_iou:
            return 1.0 - iou
        size = max(box[2] - box[0], box[3] - box[1])
        dist = _head_distance(track.keypoints, track.visible, _field(person, "keypoints"), _field(person, "visible"),
                              size)
        return 1.0 + dist if dist <= self.max_keypoint_distance else np.inf

    def update(self, persons: list, image_shape) -> tuple[list[int], list[dict]]:
        """Track ids of this frame's faces, and the persons with their smoothed face boxes (as dicts)."""
        boxes = [np.asarray(_field(p, "face_box") if _field(p, "face_box") is not None else np.nan, dtype=np.float64)
                 for p in persons]
        cost = np.array([[self._cost(t, b, p) for b, p in zip(boxes, persons)] for t in self.tracks])
        ids: list[int | None] = [None] * len(persons)
        if cost.size:
            rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, 1e9))
            for r, c in zip(rows, cols):
                if np.isfinite(cost[r, c]):
                    ids[c] = r
        matched = {r for r in ids if r is not None}
        for t_index, track in enumerate(self.tracks):
            if t_index not in matched:
                track.missed += 1
        out = []
        for k, (person, box) in enumerate(zip(persons, boxes)):
            if not _usable(box):
                # Left as detected: the pipeline fails this face closed. It still gets an id of its own.
                ids[k], self.next_id = self.next_id, self.next_id + 1
                out.append(person)
                continue
            if ids[k] is None:
                track = _Track(self.next_id, box.copy(), np.zeros(4), None, None)
                self.next_id += 1
                self.tracks.append(track)
            else:
                track = self.tracks[ids[k]]
                smoothed = self.smoothing * track.predicted() + (1.0 - self.smoothing) * box
                track.velocity = (smoothed - track.box) / (track.missed + 1)
                track.box, track.missed = smoothed, 0
            track.keypoints, track.visible = _field(person, "keypoints"), _field(person, "visible")
            ids[k] = track.id
            out.append(self._with_box(person, box, track.box, image_shape))
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return ids, out

    @staticmethod
    def _with_box(person, detected: np.ndarray, smoothed: np.ndarray, image_shape) -> dict:
        """The person (as a dict) with the smoothed box, grown to cover the detected one: never less face."""
        record = dict(person) if isinstance(person, dict) else dict(vars(person))
        covering = np.concatenate([np.minimum(smoothed[:2], detected[:2]), np.maximum(smoothed[2:], detected[2:])])
        whole = _field(person, "face_box_unclipped")
        if whole is not None:
            whole = np.asarray(whole, dtype=np.float64)
            record["face_box_unclipped"] = np.concatenate([np.minimum(covering[:2], whole[:2]),
                                                           np.maximum(covering[2:], whole[2:])])
        H, W = image_shape[:2]
        record["face_box"] = np.clip(covering, 0.0, [W, H, W, H])  # face_box lies inside the image
        return record
