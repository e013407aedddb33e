"""People in a photo: face box + the 7 FDF keypoints, from BlazeFace and BlazePose.

1. BlazePose's person detector proposes people on the whole image and, for small people, on
   overlapping tiles (a tile-only proposal must be found again in a view framed on it). Each
   proposal's region (hip-centred, rotated upright) goes through the landmark model, as mediapipe's
   single-image pipeline does; the mirrored crop is run too and both answers are averaged.
2. BlazeFace (short and full range) finds faces. A face matched to a person adds a second body region
   built from the face box; the two landmark answers are averaged (steadier shoulders on portraits,
   where the person detector must guess hips far outside the photo). A face that no person explains
   seeds a body region of its own (people the person detector missed). If the landmark model does not
   report a body there, the face's own keypoints (eyes, nose, ears) make the person, shoulders unknown.
   Either way such a person is a wide-search find (higher score bar), and the landmark model's body
   presence stays in its score: handed a region framed for a person, that model reports a body around
   almost any face-like blob, so it is no independent confirmation.
3. Duplicates are merged, and each person gets the face box of the face detector that matches it, or a
   head-sized box derived from its keypoints.

Face boxes (x0, y0, x1, y1), continuous pixel coordinates (toolkit.crop's convention):
- `Person.face_box` is clipped to the image: 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height. It is exactly
  the part of the face that is in the picture, so masking, blurring or generating it covers every visible
  face pixel, and it can be used to slice the image directly.
- `Person.face_box_unclipped` is the whole face as the detector sees it; for a face cut by the image border
  it runs past the border (equal to `face_box` otherwise). Use it where the face's true size and centre
  matter (e.g. framing a crop around the whole face), never to index pixels.
- A person whose face box has no area inside the image (a body whose head is out of frame) is not
  reported: there is no face to anonymize, and no box to give."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from toolkit.images import load_rgb
from toolkit.keypoints import BLAZEPOSE_INDICES, NAMES, visibility
from toolkit.detect import models as M

# A keypoint whose visibility score is below this is reported but marked invisible.
KEYPOINT_MIN_SCORE = 0.5
# The landmark model's "a body is in this region" probability needed to accept a region.
POSE_PRESENCE_MIN = 0.5
# Body region from a face, in face-box widths (body proportions as BlazePose frames them: hip centre
# ~4 face widths below the face centre, region side ~13 face widths).
FACE_TO_HIP = 4.2
# People found only by the wider searches (tiles; a face the person detector did not propose, with or
# without a body the landmark model reports for it) need a higher score.
EXTRA_MIN = 0.6
FACE_TO_ROI = 13.3


@dataclass
class Person:
    """One person: face box (x0, y0, x1, y1) and the 7 FDF keypoints (COCO order) in pixels.

    `face_box` lies inside the image (clipped); `face_box_unclipped` may run past its border (see the
    module docstring). Keypoints are not clipped: points outside the image are reported, marked invisible.
    """

    face_box: np.ndarray  # (4,) float, clipped to the image, non-empty
    keypoints: np.ndarray  # (7, 2) float pixels
    keypoint_scores: np.ndarray  # (7,) float in [0, 1]
    visible: np.ndarray  # (7,) bool: inside the image and confidently seen
    score: float
    source: str = "pose"  # "pose": landmark model; "face": face detector keypoints only (no shoulders)
    face_score: float = 0.0  # face detector score of the matched face (0 when none matched)
    face_box_unclipped: np.ndarray | None = None  # (4,) float; None (given) = same as face_box

    def __post_init__(self):
        if self.face_box_unclipped is None:
            self.face_box_unclipped = np.asarray(self.face_box, dtype=np.float64).copy()

    def to_dict(self) -> dict:
        return {
            "score": round(float(self.score), 4),
            "face_box": [round(float(v), 2) for v in self.face_box],
            "face_box_unclipped": [round(float(v), 2) for v in self.face_box_unclipped],
            "face_score": round(float(self.face_score), 4),
            "source": self.source,
            "keypoints": {
                name: {"x": round(float(p[0]), 2), "y": round(float(p[1]), 2),
                       "score": round(float(s), 4), "visible": bool(v)}
                for name, p, s, v in zip(NAMES, self.keypoints, self.keypoint_scores, self.visible)
            },
        }


@dataclass
class _Candidate:
    keypoints: np.ndarray
    scores: np.ndarray
    score: float
    source: str
    face: M.Detection | None = None
    extra: dict = field(default_factory=dict)


def detect(image, *, min_score: float = 0.5, multiscale: bool = True,
           min_extra_score: float = EXTRA_MIN) -> list[Person]:
    """Every person in `image` (path, PIL image or HxWx3 uint8 array), best first.

    `min_score` filters people by detector confidence. `multiscale` also runs the detectors on
    overlapping tiles: finds people down to ~100 px tall / faces of ~15 px, 3-5x slower than the
    whole-image pass alone. People found only by these wider searches (a tile, or a face that the person
    detector did not propose) must also score `min_extra_score`: such searches see more clutter (hands,
    lamps, prints, a model shuttle's nose) that fools the detectors near 0.5. Raises
    toolkit.images.ImageReadError (a ValueError) for unreadable input.
    """
    img = load_rgb(image)
    h, w = img.shape[:2]
    # Detectors run a little below the caller's threshold so a weak face can still confirm a strong body.
    det_floor = min(min_score, 0.5)
    faces = M.detect_faces(img, det_floor, tiles=multiscale)
    candidates: list[_Candidate] = []
    for det in M.detect_poses(img, det_floor, tiles=multiscale):
        roi = M.alignment_roi(det.keypoints[0], det.keypoints[1])
        score = det.score if det.origin == "full" else min(det.score, M.verify_pose(img, det))
        cand = _from_landmarks(img, roi, score)
        if cand is not None:
            cand.extra["wide_search"] = det.origin != "full"
            _fuse_face_region(img, cand, faces)
            candidates.append(cand)
    candidates = _dedupe(candidates)

    # Faces the person proposals do not explain get their own body region. Such a face must also be
    # found on a zoomed second look (models.verify_face): one full-image pass alone is too easily fooled.
    unmatched = [f for f in faces if not any(_face_matches(f, c) for c in candidates)]
    for face in unmatched:
        face_score = min(face.score, M.verify_face(img, face))
        if face_score < det_floor:
            continue
        # The landmark model, handed a region framed for a person around any face-like blob, readily
        # reports a body there (the shuttle model's nose on the mirrored astronaut photo: pose 0.69). So
        # its body presence stays in the score (as for person-detector proposals) instead of being
        # replaced by the face score, and a face-seeded person, body or not, is a wide-search find.
        cand = _from_landmarks(img, _roi_from_face(face), face_score)
        if cand is not None and _face_matches(face, cand):
            cand.face = face
            cand.extra["seeded_by_face"] = True
        else:
            cand = _from_face(face, face_score)
        cand.extra["wide_search"] = True
        candidates.append(cand)
    candidates = _dedupe(candidates)

    _assign_faces(candidates, faces)
    persons = []
    for c in candidates:
        score = c.score
        if c.source == "pose" and c.face is not None and not c.extra.get("seeded_by_face"):
            # A body whose face the face detector also found on the first look: take the surer of the two.
            score = max(score, c.face.score)
        if score < min_score or (c.extra.get("wide_search") and score < min_extra_score):
            continue
        full_box = (c.face.box if c.face is not None else _box_from_keypoints(c.keypoints, c.scores))
        full_box = np.asarray(full_box, dtype=np.float64).copy()
        box = clip_box(full_box, w, h)
        if box is None:  # head entirely out of frame: no face in the picture to report
            continue
        visible = visibility(c.keypoints, w, h) & (c.scores >= KEYPOINT_MIN_SCORE)
        persons.append(Person(box, c.keypoints.astype(np.float64), c.scores.astype(np.float64),
                              visible, float(score), c.source,
                              float(c.face.score) if c.face is not None else 0.0, full_box))
    persons.sort(key=lambda p: -p.score)
    return persons


# ----------------------------------------------------------------------------------------------------


def clip_box(box: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """`box` (x0, y0, x1, y1) intersected with the image [0, width] x [0, height]; None when that is empty
    (or the box is not finite)."""
    box = np.asarray(box, dtype=np.float64)
    if box.shape != (4,) or not np.isfinite(box).all():
        return None
    out = np.array([np.clip(box[0], 0, width), np.clip(box[1], 0, height),
                    np.clip(box[2], 0, width), np.clip(box[3], 0, height)])
    if not (out[2] > out[0] and out[3] > out[1]):
        return None
    return out


def _fuse_face_region(img: np.ndarray, cand: _Candidate, faces: list[M.Detection]) -> None:
    """Average with the landmarks of a body region built from the matched face.

    The person detector guesses the hip centre, far outside the photo on head-and-shoulder portraits;
    that guess sets the landmark region's scale and the shoulders move with it. A second region
    derived from the face box (body proportions) is an independent guess; averaging both keeps the
    shoulders where either alone would wander. Measured on the sample portraits padded, cropped and
    mirrored: the spread of face points halves and that of the shoulders drops by up to half.
    """
    matched = [f for f in faces if _face_matches(f, cand)]
    if not matched:
        return
    face = max(matched, key=lambda f: M.box_iou(f.box, _box_from_keypoints(cand.keypoints, cand.scores)))
    other = _from_landmarks(img, _roi_from_face(face), cand.score)
    if other is None or not _face_matches(face, other):
        return
    cand.keypoints = (cand.keypoints + other.keypoints) / 2.0
    cand.scores = (cand.scores + other.scores) / 2.0


def _from_landmarks(img: np.ndarray, roi: M.Roi, det_score: float) -> _Candidate | None:
    lm = M.pose_landmarks(img, roi)
    if lm.pose_score < POSE_PRESENCE_MIN:
        return None
    idx = list(BLAZEPOSE_INDICES)
    # Visibility is "seen, not occluded"; presence is "inside the region": a point needs both.
    scores = np.minimum(lm.visibility[idx], lm.presence[idx])
    return _Candidate(lm.points[idx].copy(), scores, float(det_score) * float(lm.pose_score) ** 0.5, "pose",
                      extra={"roi": roi})


def _face_frame(face: M.Detection) -> tuple[np.ndarray, np.ndarray, float]:
    """(centre, unit 'down' vector, face width) of a BlazeFace detection; down is perpendicular to the eyes."""
    k = face.keypoints
    eye_r, eye_l = k[M.FACE_KP["right_eye"]], k[M.FACE_KP["left_eye"]]
    across = eye_l - eye_r  # the person's right eye is on the image's left on a frontal face
    n = np.linalg.norm(across)
    across = across / n if n > 1e-6 else np.array([1.0, 0.0])
    down = np.array([-across[1], across[0]])
    centre = (face.box[:2] + face.box[2:]) / 2.0
    width = float(face.box[2] - face.box[0])
    return centre, down, width


def _roi_from_face(face: M.Detection) -> M.Roi:
    centre, down, width = _face_frame(face)
    hip = centre + down * FACE_TO_HIP * width
    # Same construction as from a person detection: the scale point is straight "up" from the hip centre.
    scale_point = hip - down * (FACE_TO_ROI * width / 2.5)
    return M.alignment_roi(hip, scale_point)


def _from_face(face: M.Detection, score: float) -> _Candidate:
    """A person from the face detector alone: nose, eyes, ears; shoulders unknown (score 0)."""
    k = face.keypoints
    fk = M.FACE_KP
    pts = np.array([k[fk["nose"]], k[fk["left_eye"]], k[fk["right_eye"]], k[fk["left_ear"]], k[fk["right_ear"]]])
    centre, down, width = _face_frame(face)
    # Shoulders are unknown; place them where a frontal body would have them but give them score 0.
    across = np.array([down[1], -down[0]])
    sh = centre + down * 1.6 * width
    pts = np.vstack([pts, sh - across * 1.0 * width, sh + across * 1.0 * width])
    scores = np.array([score] * 5 + [0.0, 0.0])
    return _Candidate(pts, scores, float(score), "face", face=face)


def _box_from_keypoints(kps: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """A face box from the keypoints when no face detection matched: square, centred on the nose.

    Its side is the largest of what ears, eyes and shoulders imply, so that heads seen from the side or
    the back (eyes close together) still get a head-sized box.
    """
    nose, l_eye, r_eye, l_ear, r_ear, l_sh, r_sh = kps[:7]
    eye_dist = float(np.linalg.norm(l_eye - r_eye))
    ear_dist = float(np.linalg.norm(l_ear - r_ear)) if min(scores[3], scores[4]) > 0.2 else 0.0
    sh_dist = float(np.linalg.norm(l_sh - r_sh)) if min(scores[5], scores[6]) > 0.2 else 0.0
    side = max(1.2 * ear_dist, 2.1 * eye_dist, 0.45 * sh_dist, 4.0)
    centre = nose
    return np.array([centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2])


def _face_matches(face: M.Detection, cand: _Candidate) -> bool:
    """The candidate's nose and eyes lie inside the (slightly enlarged) face box."""
    x0, y0, x1, y1 = face.box
    pad = 0.15 * (x1 - x0)
    pts = cand.keypoints[:3]
    inside = (pts[:, 0] >= x0 - pad) & (pts[:, 0] <= x1 + pad) & (pts[:, 1] >= y0 - pad) & (pts[:, 1] <= y1 + pad)
    return bool(inside.sum() >= 2)


def _head_box(c: _Candidate) -> np.ndarray:
    return c.face.box if c.face is not None else _box_from_keypoints(c.keypoints, c.scores)


def _dedupe(cands: list[_Candidate]) -> list[_Candidate]:
    """One candidate per head: the best-scoring one among those whose heads overlap."""
    out: list[_Candidate] = []
    for c in sorted(cands, key=lambda c: -c.score):
        box = _head_box(c)
        if all(M.box_iou(box, _head_box(o)) < 0.3 for o in out):
            out.append(c)
    return out


def _assign_faces(cands: list[_Candidate], faces: list[M.Detection]) -> None:
    """Greedy one-to-one matching of face detections to people (best score first)."""
    used = {id(c.face) for c in cands if c.face is not None}
    for c in sorted(cands, key=lambda c: -c.score):
        if c.face is not None:
            continue
        options = [f for f in faces if id(f) not in used and _face_matches(f, c)]
        if options:
            kb = _box_from_keypoints(c.keypoints, c.scores)
            best = max(options, key=lambda f: M.box_iou(f.box, kb))
            c.face = best
            used.add(id(best))


__all__ = ["Person", "detect"]
