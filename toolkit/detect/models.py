"""The BlazeFace / BlazePose .tflite models run with ai-edge-litert, and the geometry around them.

What mediapipe's graphs do in C++ is redone here in numpy: SSD anchor generation, box/keypoint decoding,
weighted non-maximum suppression, rotated region-of-interest crops and the landmark projection back to
the image. All coordinates are continuous pixel coordinates (pixel i covers [i, i+1)).
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from toolkit import assets

# ----------------------------------------------------------------------------------------------------
# interpreters (one per model per process; fork-safe by keying on the pid)

_INTERPRETERS: dict[tuple[str, int], "_Model"] = {}
_LOCK = threading.Lock()


class _Model:
    def __init__(self, name: str):
        from ai_edge_litert.interpreter import Interpreter

        self.name = name
        self.interpreter = Interpreter(model_path=str(assets.model_path(name)),
                                       num_threads=min(4, os.cpu_count() or 1))
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.outputs = self.interpreter.get_output_details()
        self.lock = threading.Lock()  # an Interpreter is not re-entrant

    @property
    def input_size(self) -> tuple[int, int]:
        _, h, w, _ = self.input["shape"]
        return int(w), int(h)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        with self.lock:
            self.interpreter.set_tensor(self.input["index"], x[None].astype(np.float32))
            self.interpreter.invoke()
            # In the model's output order; callers pick outputs by shape (names differ between models).
            return [self.interpreter.get_tensor(d["index"])[0].copy() for d in self.outputs]

    def output_by_shape(self, outs: list[np.ndarray], last_dim: int) -> np.ndarray:
        for o in outs:
            if o.shape[-1] == last_dim:
                return o
        raise RuntimeError(f"{self.name}: no output with last dimension {last_dim}")


def get_model(name: str) -> _Model:
    key = (name, os.getpid())
    with _LOCK:
        if key not in _INTERPRETERS:
            _INTERPRETERS[key] = _Model(name)
        return _INTERPRETERS[key]


# ----------------------------------------------------------------------------------------------------
# crops: an oriented square region of the image resampled to the model's input


@dataclass
class Roi:
    """A square region: centre (cx, cy) and side `size` in pixels, rotated by `angle` radians."""

    cx: float
    cy: float
    size: float
    angle: float = 0.0

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """Map (..., 2) points normalized to the crop ([0,1]^2) back to image pixel coordinates."""
        uv = np.asarray(uv, dtype=np.float64)
        d = (uv - 0.5) * self.size
        c, s = math.cos(self.angle), math.sin(self.angle)
        x = c * d[..., 0] - s * d[..., 1] + self.cx
        y = s * d[..., 0] + c * d[..., 1] + self.cy
        return np.stack([x, y], axis=-1)

    def crop(self, image: np.ndarray, out_w: int, out_h: int, border=cv2.BORDER_CONSTANT) -> np.ndarray:
        """Resample the region to out_w x out_h (RGB uint8); outside the image is black (or replicated).

        Plain bilinear sampling like mediapipe's ImageToTensor: the models were trained on such inputs.
        """
        # Affine from output pixel index (u, v) to input pixel index, through continuous coordinates.
        c, s = math.cos(self.angle), math.sin(self.angle)
        ax, ay = self.size / out_w, self.size / out_h
        m = np.array([[c * ax, -s * ay, 0.0], [s * ax, c * ay, 0.0]])
        u0 = (0.5 / out_w - 0.5) * self.size
        v0 = (0.5 / out_h - 0.5) * self.size
        m[0, 2] = self.cx + c * u0 - s * v0 - 0.5
        m[1, 2] = self.cy + s * u0 + c * v0 - 0.5
        return cv2.warpAffine(image, m, (out_w, out_h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=border, borderValue=(0, 0, 0))


def full_image_roi(width: int, height: int) -> Roi:
    """The letterbox of the whole image: a square of the long side, centred (pads the short side)."""
    return Roi(width / 2.0, height / 2.0, float(max(width, height)))


# ----------------------------------------------------------------------------------------------------
# SSD anchors + decoding + weighted NMS (mediapipe SsdAnchorsCalculator / TensorsToDetections semantics)


def ssd_anchors(input_size: int, strides: tuple[int, ...], interpolated: bool) -> np.ndarray:
    """(N, 2) anchor centres, normalized; fixed-size anchors, one or two per layer, layers of equal stride merged."""
    centres = []
    i = 0
    while i < len(strides):
        j = i
        per_cell = 0
        while j < len(strides) and strides[j] == strides[i]:
            per_cell += 2 if interpolated else 1
            j += 1
        fm = math.ceil(input_size / strides[i])
        ys, xs = np.meshgrid((np.arange(fm) + 0.5) / fm, (np.arange(fm) + 0.5) / fm, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
        i = j
    return np.concatenate(centres, axis=0)


@dataclass
class Detection:
    box: np.ndarray  # (4,) x0, y0, x1, y1 in pixels
    keypoints: np.ndarray  # (K, 2) pixels
    score: float
    origin: str = "full"  # "full": whole-image pass; "tile": only found by the tiled search


def decode_ssd(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, input_size: int,
               roi: Roi, min_score: float) -> list[Detection]:
    """Decode [cx, cy, w, h, kx0, ky0, ...] offsets (in input pixels) around anchors, map through `roi`."""
    scores = _sigmoid(raw_scores.reshape(-1).astype(np.float64))
    keep = np.nonzero(scores >= min_score)[0]
    dets = []
    for k in keep:
        r = raw_boxes[k] / input_size
        a = anchors[k]
        cx, cy = r[0] + a[0], r[1] + a[1]
        w, h = r[2], r[3]
        kps = r[4:].reshape(-1, 2) + a
        corners = roi.to_image(np.array([[cx - w / 2, cy - h / 2], [cx + w / 2, cy + h / 2]]))
        # A rotated roi is never used for detection, so the corners stay ordered.
        dets.append(Detection(np.concatenate([corners.min(0), corners.max(0)]), roi.to_image(kps), float(scores[k])))
    return dets


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def weighted_nms(dets: list[Detection], iou_threshold: float = 0.3) -> list[Detection]:
    """Blend overlapping detections by score (mediapipe's WEIGHTED NMS): steadier boxes than plain NMS."""
    rest = sorted(dets, key=lambda d: -d.score)
    out = []
    while rest:
        top = rest[0]
        group = [d for d in rest if box_iou(top.box, d.box) > iou_threshold]
        rest = [d for d in rest if box_iou(top.box, d.box) <= iou_threshold]
        if top not in group:
            group.append(top)
        w = np.array([d.score for d in group])
        box = np.sum([d.box * s for d, s in zip(group, w)], axis=0) / w.sum()
        kps = np.sum([d.keypoints * s for d, s in zip(group, w)], axis=0) / w.sum()
        out.append(Detection(box, kps, top.score))
    return out


# ----------------------------------------------------------------------------------------------------
# the three detectors

FACE_SHORT = dict(model="face_detection_short_range", strides=(8, 16, 16, 16), interpolated=True)
FACE_FULL = dict(model="face_detection_full_range", strides=(4,), interpolated=False)
POSE_DET = dict(model="pose_detection", strides=(8, 16, 32, 32, 32), interpolated=True)
_ANCHORS: dict[str, np.ndarray] = {}


def run_ssd(spec: dict, image: np.ndarray, roi: Roi, min_score: float, coords: int) -> list[Detection]:
    """Run an SSD detector (input in [-1, 1]) on the square `roi` of the image; decoded, before NMS."""
    model = get_model(spec["model"])
    size, _ = model.input_size
    if spec["model"] not in _ANCHORS:
        _ANCHORS[spec["model"]] = ssd_anchors(size, spec["strides"], spec["interpolated"])
    anchors = _ANCHORS[spec["model"]]
    x = roi.crop(image, size, size).astype(np.float32) / 127.5 - 1.0
    outs = model(x)
    raw_boxes = model.output_by_shape(outs, coords)
    raw_scores = model.output_by_shape(outs, 1)
    if raw_boxes.shape[0] != anchors.shape[0]:
        raise RuntimeError(f"{spec['model']}: {raw_boxes.shape[0]} boxes but {anchors.shape[0]} anchors")
    return decode_ssd(raw_boxes, raw_scores, anchors, size, roi, min_score)


# BlazeFace keypoints: right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion
# (the person's right/left).
FACE_KP = dict(right_eye=0, left_eye=1, nose=2, mouth=3, right_ear=4, left_ear=5)


def _tiles(width: int, height: int, min_tile: int) -> list[Roi]:
    """Overlapping square views at 1/2 and 1/3 of the long side, and at the short side for wide or tall
    images (panoramas), never smaller than the model input: small people and faces get enough pixels."""
    long_side, short_side = max(width, height), min(width, height)
    sizes = {long_side / 2, long_side / 3}
    if long_side >= 1.5 * short_side:
        sizes.add(float(short_side))
    rois = []
    for tile in sorted(sizes, reverse=True):
        if tile < min_tile:
            continue
        step = tile * 0.75
        for cy in _tile_centres(height, tile, step):
            for cx in _tile_centres(width, tile, step):
                rois.append(Roi(cx, cy, tile))
    return rois


def detect_faces(image: np.ndarray, min_score: float = 0.5, tiles: bool = True) -> list[Detection]:
    """Faces from both BlazeFace models (short range: big faces; full range: small ones), merged."""
    h, w = image.shape[:2]
    roi = full_image_roi(w, h)
    dets = run_ssd(FACE_SHORT, image, roi, min_score, 16)
    dets += run_ssd(FACE_FULL, image, roi, min_score, 16)
    if tiles:
        for r in _tiles(w, h, 192):
            dets += run_ssd(FACE_FULL, image, r, min_score, 16)
    return weighted_nms(dets, 0.3)


def verify_face(image: np.ndarray, face: Detection) -> float:
    """A second look at a face: the best score either BlazeFace model gives it when zoomed to 2x and 3x
    its box. Hands, fabric folds and patterns that fool one full-image pass rarely survive this."""
    centre = (face.box[:2] + face.box[2:]) / 2.0
    side = float(max(face.box[2] - face.box[0], face.box[3] - face.box[1]))
    best = 0.0
    for zoom in (2.0, 3.0):
        roi = Roi(float(centre[0]), float(centre[1]), side * zoom)
        for spec in (FACE_SHORT, FACE_FULL):
            for d in run_ssd(spec, image, roi, 0.1, 16):
                if box_iou(d.box, face.box) > 0.3:
                    best = max(best, d.score)
    return best


def _tile_centres(length: float, tile: float, step: float) -> list[float]:
    if length <= tile:
        return [length / 2.0]
    n = math.ceil((length - tile) / step) + 1
    return list(np.linspace(tile / 2.0, length - tile / 2.0, n))


def detect_poses(image: np.ndarray, min_score: float = 0.5, tiles: bool = True) -> list[Detection]:
    """BlazePose person detections; keypoints: hip centre, full-body scale point, shoulder centre, head top.

    Tiles only add people the whole-image pass missed: blending a tile's (differently framed) estimate
    into a whole-image detection would move its body region.
    """
    h, w = image.shape[:2]
    dets = weighted_nms(run_ssd(POSE_DET, image, full_image_roi(w, h), min_score, 12), 0.3)
    if tiles:
        extra = []
        for r in _tiles(w, h, 224):
            extra += run_ssd(POSE_DET, image, r, min_score, 12)
        extra = weighted_nms(extra, 0.3)
        for d in extra:
            if all(box_iou(d.box, o.box) < 0.1 and not _inside(d.box, o.box) for o in dets):
                d.origin = "tile"
                dets.append(d)
    return dets


def verify_pose(image: np.ndarray, det: Detection) -> float:
    """A second look at a person: the best score the pose detector gives it in views centred on the
    body and framed at its own scale (0.8x and 1.2x the body region). Street lights, folds and clutter
    that a small tile mistook for a person rarely survive this; real people score like before."""
    roi = alignment_roi(det.keypoints[0], det.keypoints[1])
    best = 0.0
    for zoom in (0.8, 1.2):
        for d in run_ssd(POSE_DET, image, Roi(roi.cx, roi.cy, roi.size * zoom), 0.1, 12):
            same_hip = np.hypot(*(d.keypoints[0] - det.keypoints[0])) < 0.15 * roi.size
            if _inside(d.box, det.box) or (same_hip and box_iou(d.box, det.box) > 0.2):
                best = max(best, d.score)
    return best


def _inside(a: np.ndarray, b: np.ndarray) -> bool:
    """The centre of box a lies in box b."""
    cx, cy = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    return bool(b[0] <= cx <= b[2] and b[1] <= cy <= b[3])


def alignment_roi(p_centre: np.ndarray, p_scale: np.ndarray, scale: float = 1.25) -> Roi:
    """BlazePose's region from two alignment points: centred on the first, rotated so that the second
    is straight above it, side = 2 * their distance * 1.25 (pose_detection_to_roi)."""
    dx, dy = float(p_scale[0] - p_centre[0]), float(p_scale[1] - p_centre[1])
    size = 2.0 * math.hypot(dx, dy) * scale
    angle = math.pi / 2 - math.atan2(-dy, dx)
    angle = (angle + math.pi) % (2 * math.pi) - math.pi
    return Roi(float(p_centre[0]), float(p_centre[1]), size, angle)


@dataclass
class PoseLandmarks:
    points: np.ndarray  # (33, 2) pixels
    visibility: np.ndarray  # (33,) in [0, 1]
    presence: np.ndarray  # (33,) in [0, 1]
    aux: np.ndarray  # (2, 2) pixels: alignment points for the next region
    pose_score: float
    roi: Roi


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80, 80)))


# BlazePose landmark i of a mirrored image is landmark _BLAZEPOSE_MIRROR[i] of the original (left <-> right;
# the 6 extra outputs after the 33 body points, incl. the 2 alignment points, are on the body's axis).
_BLAZEPOSE_MIRROR = np.array([0, 4, 5, 6, 1, 2, 3, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15, 18, 17, 20, 19, 22, 21,
                              24, 23, 26, 25, 28, 27, 30, 29, 32, 31, 33, 34, 35, 36, 37, 38])


def pose_landmarks(image: np.ndarray, roi: Roi, refine: bool = True, mirror_average: bool = True) -> PoseLandmarks:
    """BlazePose full landmarks (33 + 2 auxiliary) inside `roi`, projected back to image pixels.

    mirror_average: also run the mirrored crop and average both answers (left/right swapped back).
    The region spans the whole body, so a face is only ~20 px of the 256 px input and single answers
    jitter by several pixels; the mirrored second opinion roughly halves the jitter of the shoulders
    (measured over re-encoded variants of the sample portraits).
    """
    model = get_model("pose_landmark_full")
    size, _ = model.input_size
    crop = roi.crop(image, size, size, border=cv2.BORDER_REPLICATE)
    uv, vis, pres, flag = _landmarks_in_crop(model, crop, size, refine)
    if mirror_average:
        uv_m, vis_m, pres_m, flag_m = _landmarks_in_crop(model, np.ascontiguousarray(crop[:, ::-1]), size, refine)
        # Whether a body is there is decided by the upright pass, as in mediapipe; the mirrored answer only
        # refines the coordinates, and only when it sees a body too (else its points are noise).
        if flag_m >= 0.5:
            uv_m[:, 0] = 1.0 - uv_m[:, 0]
            m = _BLAZEPOSE_MIRROR[: uv.shape[0]]
            uv = (uv + uv_m[m]) / 2.0
            vis, pres = (vis + vis_m[m]) / 2.0, (pres + pres_m[m]) / 2.0
    pts = roi.to_image(uv)
    return PoseLandmarks(pts[:33], vis[:33], pres[:33], pts[33:35], flag, roi)


def _landmarks_in_crop(model: "_Model", crop: np.ndarray, size: int, refine: bool):
    """(uv (39, 2) in [0, 1] of the crop, visibility (39,), presence (39,), pose probability)."""
    outs = model(crop.astype(np.float32) / 255.0)
    lm = model.output_by_shape(outs, 195).reshape(39, 5)
    flag = float(model.output_by_shape([o for o in outs if o.ndim == 1], 1)[0])
    heat = next(o for o in outs if o.ndim == 3 and o.shape[-1] == 39)
    uv = lm[:, :2] / size
    if refine:
        uv = _refine_with_heatmap(uv, heat)
    # The pose flag is already a probability in this model; guard in case a version emits a logit.
    flag = flag if 0.0 <= flag <= 1.0 else float(_sigmoid(flag))
    return uv.astype(np.float64), _sigmoid(lm[:, 3]), _sigmoid(lm[:, 4]), flag


def _refine_with_heatmap(uv: np.ndarray, heat: np.ndarray, kernel: int = 7, min_conf: float = 0.5) -> np.ndarray:
    """Snap each landmark to the confidence-weighted mean of its heatmap neighbourhood (as mediapipe does)."""
    hh, hw, n = heat.shape
    conf = _sigmoid(heat)
    out = uv.copy()
    r = kernel // 2
    for i in range(min(n, uv.shape[0])):
        cx, cy = int(uv[i, 0] * hw), int(uv[i, 1] * hh)
        if not (0 <= cx < hw and 0 <= cy < hh):
            continue
        x0, x1 = max(0, cx - r), min(hw, cx + r + 1)
        y0, y1 = max(0, cy - r), min(hh, cy + r + 1)
        win = conf[y0:y1, x0:x1, i]
        if win.max() < min_conf or win.sum() <= 0:
            continue
        ys, xs = np.mgrid[y0:y1, x0:x1]
        out[i, 0] = (np.sum(xs * win) / win.sum()) / hw
        out[i, 1] = (np.sum(ys * win) / win.sum()) / hh
    return out
