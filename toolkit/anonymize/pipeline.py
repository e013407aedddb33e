"""Face replacement on in-memory images: detect -> FDF crop -> generate (batched) -> feathered paste-back.

Privacy rules this module enforces, whatever the caller does:
  * every pixel of every detected face box ends up generated (or, by policy, masked), even where face boxes
    overlap: the hard face-box pastes run after all feathered blends, and masks run last;
  * pixels outside a face's expanded crop box are never touched (byte-identical), the blend weight is 0 on
    the crop box's outer ring and beyond;
  * a face that could not be replaced (generation raised or returned non-finite values, degenerate face box,
    impossible crop) is a *failure*: under on_miss="refuse" the image is not returned at all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from toolkit.anonymize.baselines import (
    BASELINES,
    DEFAULT_MASK_COLOR,
    DEFAULT_PIXEL_BLOCKS,
    apply_baseline,
    box_pixels,
    mask_box,
)
from toolkit.crop import crop_and_resize, expanded_crop_box, face_box_in_crop, face_mask, to_crop_coords
from toolkit.diffusion.prior import DEFAULT_STRENGTH as DEFAULT_PRIOR_STRENGTH
from toolkit.keypoints import faces_away

METHODS = ("ddpm",) + BASELINES
ON_MISS = ("refuse", "mask")
# A head seen from behind (toolkit.keypoints.faces_away) has no face to generate: the face model only knows
# frontal and side views and would paint a face on it, turning the person round for any pose model trained
# on the result. "blur" blurs its box instead (no face, the head's outline kept); "generate" replaces it too.
FACING_AWAY = ("blur", "generate")
# A face box smaller than this (px, longer side) is pixelated into --pixel-blocks cells instead of generated.
# Such a face holds no more identity than that 8x8 mosaic, and a pose model reads a head that small from its
# outline and hair, which the mosaic keeps and a generated inner face (the training crops have no hair) does
# not. 16 px = 2 px per cell at 8 cells. 0 generates every face.
DEFAULT_MIN_GENERATE = 16
# Feather width (outside the face box) as a fraction of the face box's longer side.
DEFAULT_FEATHER = 0.2


class FaceNotAnonymizedError(RuntimeError):
    """Raised by `anonymize_image` under on_miss="refuse" when a detected face could not be replaced."""

    def __init__(self, message: str, faces: list[dict]):
        super().__init__(message)
        self.faces = faces


@dataclass
class Options:
    """How faces are replaced. `sampling` holds only the generation settings the user set explicitly."""

    method: str = "ddpm"
    seed: int = 0
    batch_size: int = 16
    on_miss: str = "refuse"
    feather: float = DEFAULT_FEATHER
    blur_sigma: float | None = None
    pixel_blocks: int = DEFAULT_PIXEL_BLOCKS
    mask_color: tuple = DEFAULT_MASK_COLOR
    prior_strength: float = DEFAULT_PRIOR_STRENGTH  # SDEdit start from the model's face prior; 1 = pure noise
    facing_away: str = "blur"
    min_generate: float = DEFAULT_MIN_GENERATE
    sampling: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.on_miss not in ON_MISS:
            raise ValueError(f"unknown --on-miss policy {self.on_miss!r}; choose one of {', '.join(ON_MISS)}")
        if self.facing_away not in FACING_AWAY:
            raise ValueError(f"unknown --facing-away policy {self.facing_away!r}; choose one of {', '.join(FACING_AWAY)}")
        if float(self.min_generate) < 0:
            raise ValueError(f"--min-generate must be >= 0 px (0 = generate every face), got {self.min_generate}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if not (0.0 < float(self.prior_strength) <= 1.0):
            raise ValueError(f"prior strength must be in (0, 1] (1 = start from pure noise), got {self.prior_strength}")
        if not (0.0 <= float(self.feather) <= 1.0):
            raise ValueError(f"feather must be in [0, 1] (fraction of the face size), got {self.feather}")


@dataclass
class ImageResult:
    """`image` is None when the image must not be written (a face failed under on_miss="refuse")."""

    image: np.ndarray | None
    faces: list[dict]
    status: str  # "ok" | "no_face_detected" | "refused"
    reason: str = ""


# ----------------------------------------------------------------------------------------------------
# person records (detector Person objects or their dicts)


def _field(person, name, default=None):
    if isinstance(person, dict):
        return person.get(name, default)
    return getattr(person, name, default)


def _as_list(value):
    """JSON-ready nested list; non-finite numbers become None (strict JSON has no NaN)."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return float(arr) if np.isfinite(arr) else None
    return [_as_list(v) for v in arr]


def face_record(index: int, person) -> dict:
    visible = _field(person, "visible")
    return {
        "index": index,
        "face_box": _as_list(_field(person, "face_box")),
        "keypoints": _as_list(_field(person, "keypoints")),
        "keypoint_scores": _as_list(_field(person, "keypoint_scores")),
        "visible": None if visible is None else [bool(v) for v in np.asarray(visible).reshape(-1)],
        "score": None if _field(person, "score") is None else float(_field(person, "score")),
        "crop_box": None,
        "status": "pending",
        "method": None,
        "reason": "",
        "time_s": None,
    }


# ----------------------------------------------------------------------------------------------------
# paste-back


def blend_weights(crop_box, face_px, region, feather_px: float) -> np.ndarray:
    """Per-pixel blend weight of the generated crop over `region` (x0, y0, x1, y1 image pixels).

    1 on the face box pixels `face_px`; outside it falls off with the distance to the face box over
    `feather_px` pixels, and it also falls to 0 at the crop box's edge, so the crop box's outer ring and
    everything beyond it keep their original pixels.
    """
    rx0, ry0, rx1, ry1 = region
    xs = np.arange(rx0, rx1, dtype=np.float32)[None, :]
    ys = np.arange(ry0, ry1, dtype=np.float32)[:, None]
    fx0, fy0, fx1, fy1 = face_px
    dx = np.maximum(np.maximum(fx0 - xs, xs - (fx1 - 1)), 0.0)
    dy = np.maximum(np.maximum(fy0 - ys, ys - (fy1 - 1)), 0.0)
    dist = np.sqrt(dx * dx + dy * dy)
    core = dist == 0
    if feather_px <= 0:
        return core.astype(np.float32)
    towards_face = np.clip(1.0 - dist / (feather_px + 1.0), 0.0, 1.0)
    cx0, cy0, cx1, cy1 = crop_box
    edge = np.minimum(np.minimum(xs - cx0, (cx1 - 1) - xs), np.minimum(ys - cy0, (cy1 - 1) - ys))
    towards_edge = np.clip(edge / max(feather_px, 1.0), 0.0, 1.0)
    return np.where(core, 1.0, np.minimum(towards_face, towards_edge)).astype(np.float32)


def generated_to_image(generated: np.ndarray, crop_box, image_shape):
    """Resize an SxSx3 float crop (0..255) to its crop box; return (pixels inside the image, region)."""
    x0, y0, x1, y1 = (int(v) for v in crop_box)
    H, W = image_shape[:2]
    side_w, side_h = x1 - x0, y1 - y0
    S = generated.shape[0]
    interp = cv2.INTER_AREA if (side_w < S and side_h < S) else cv2.INTER_CUBIC
    full = cv2.resize(generated.astype(np.float32), (side_w, side_h), interpolation=interp)
    rx0, ry0, rx1, ry1 = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    if rx1 <= rx0 or ry1 <= ry0:
        raise ValueError(f"crop box {crop_box} does not overlap the {W}x{H} image")
    return full[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0], (rx0, ry0, rx1, ry1)


def paste_faces(image: np.ndarray, pastes: list[dict], feather: float) -> np.ndarray:
    """Blend each generated crop into `image` (in place). pastes: dicts with generated, crop_box, face_px."""
    placed = []
    for p in pastes:
        pixels, region = generated_to_image(p["generated"], p["crop_box"], image.shape)
        fx0, fy0, fx1, fy1 = p["face_px"]
        feather_px = feather * max(fx1 - fx0, fy1 - fy0)
        alpha = blend_weights(p["crop_box"], p["face_px"], region, feather_px)[..., None]
        rx0, ry0, rx1, ry1 = region
        current = image[ry0:ry1, rx0:rx1].astype(np.float32)
        blended = np.clip(np.rint(alpha * pixels + (1.0 - alpha) * current), 0, 255).astype(np.uint8)
        # Where alpha is 0 the pixel is copied, not recomputed: byte-identical by construction.
        image[ry0:ry1, rx0:rx1] = np.where(alpha > 0, blended, image[ry0:ry1, rx0:rx1])
        placed.append((pixels, region))
    # Second pass: each face box gets its own generated pixels, hard, after all blends, so that the
    # feather (or the context) of a neighbouring face cannot bring back pixels of an original face.
    for p, (pixels, region) in zip(pastes, placed):
        fx0, fy0, fx1, fy1 = p["face_px"]
        rx0, ry0 = region[0], region[1]
        core = np.clip(np.rint(pixels[fy0 - ry0 : fy1 - ry0, fx0 - rx0 : fx1 - rx0]), 0, 255).astype(np.uint8)
        image[fy0:fy1, fx0:fx1] = core
    return image


# ----------------------------------------------------------------------------------------------------
# generation


def _prepare_face(image: np.ndarray, person, resolution: int) -> dict:
    """Everything the inpainter needs for one face; raises ValueError when the face cannot be cropped."""
    face_box = _field(person, "face_box")
    if face_box is None:
        raise ValueError("no face box")
    face_px = box_pixels(face_box, image.shape)  # validates finiteness / emptiness against the image
    # The detector clips face_box to the image; frame the crop and its mask on the whole face, so that at
    # the image border the hole also covers the padding (edge-replicated face pixels) beyond it. Only a
    # whole-face box that contains face_box is used: the mask hole must always cover face_box.
    whole = _field(person, "face_box_unclipped")
    if whole is not None:
        fb, wb = np.asarray(face_box, dtype=np.float64), np.asarray(whole, dtype=np.float64)
        if (wb.shape == fb.shape == (4,) and np.isfinite(wb).all() and (wb[:2] <= fb[:2]).all()
                and (wb[2:] >= fb[2:]).all()):
            face_box = whole
    crop_box = expanded_crop_box(face_box, image.shape)
    if not (crop_box[0] <= face_px[0] and crop_box[1] <= face_px[1] and face_px[2] <= crop_box[2]
            and face_px[3] <= crop_box[3]):
        raise ValueError(f"face box {list(face_px)} does not fit in its crop box {list(crop_box)}")
    crop, _valid = crop_and_resize(image, crop_box, resolution)
    mask = face_mask(face_box_in_crop(face_box, crop_box, resolution), resolution)
    if mask.min() > 0:
        raise ValueError("face box covers no pixel of the crop")
    kps = _field(person, "keypoints")
    if kps is None:
        kps = np.full((7, 2), np.nan)
    kps = np.asarray(kps, dtype=np.float64).reshape(7, 2)
    vis = _field(person, "visible")
    vis = np.ones(7, dtype=bool) if vis is None else np.asarray(vis, dtype=bool).reshape(7)
    norm = to_crop_coords(kps, crop_box, resolution) / float(resolution)
    inside = np.isfinite(norm).all(axis=1) & (norm >= 0).all(axis=1) & (norm <= 1).all(axis=1)
    vis = vis & inside
    # Invisible points carry no position; give them a finite placeholder so no NaN reaches the model.
    norm = np.where(vis[:, None], norm, 0.0).astype(np.float32)
    return {"crop_box": tuple(int(v) for v in crop_box), "face_px": face_px, "crop": crop, "mask": mask,
            "keypoints": norm, "visible": vis}


def _prior_inputs(prior, chunk: list[dict], strength: float) -> tuple[np.ndarray, dict]:
    """The model's view of the crops and the SDEdit start (toolkit.diffusion.prior): a gray-trained model sees
    its crops in gray; with strength < 1 sampling starts from the mean face on each face's keypoints."""
    from toolkit.diffusion.prior import luma, structure_init

    images = np.stack([j["crop"] for j in chunk]).astype(np.float32) / 127.5 - 1.0
    if prior is None:
        return images, {}
    if prior.colour == "luma":
        images = luma(images)
    if strength >= 1.0:
        return images, {}
    init = np.stack([structure_init(prior, j["crop"], j["mask"], j["keypoints"], j["visible"]) for j in chunk])
    return images, {"init_image": _nchw(init), "strength": float(strength)}


def _nchw(a: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()


def _run_inpainter(inpainter, jobs: list[dict], opts: Options, progress=None) -> None:
    """Fill job["generated"] (SxSx3 float 0..255) or job["error"], batch by batch."""
    import torch

    from toolkit.diffusion.prior import colour_from_context

    S = int(inpainter.resolution)
    prior = getattr(inpainter, "face_prior", None)
    for start in range(0, len(jobs), int(opts.batch_size)):
        chunk = jobs[start : start + int(opts.batch_size)]
        t0 = time.perf_counter()
        try:
            images, start_from = _prior_inputs(prior, chunk, opts.prior_strength)
            out = inpainter.inpaint(
                _nchw(images),
                torch.from_numpy(np.stack([j["mask"] for j in chunk]))[:, None],
                torch.from_numpy(np.stack([j["keypoints"] for j in chunk])),
                torch.from_numpy(np.stack([j["visible"] for j in chunk])),
                # One seed per face (see anonymize_batch): results do not depend on batch composition.
                seed=[int(j["seed"]) for j in chunk],
                **start_from,
                **opts.sampling,
            )
            out = out.detach().to("cpu", torch.float32).numpy()
            if out.shape != (len(chunk), 3, S, S):
                raise ValueError(f"inpainter returned shape {tuple(out.shape)}, expected {(len(chunk), 3, S, S)}")
            err = None
        except Exception as exc:  # noqa: BLE001 - any failure of the model is a failed face, reported
            out, err = None, f"generation failed: {type(exc).__name__}: {exc}"
        per_face = (time.perf_counter() - t0) / len(chunk)
        for i, job in enumerate(chunk):
            job["time_s"] = per_face
            if err is not None:
                job["error"] = err
            elif not np.isfinite(out[i]).all():
                job["error"] = "generation failed: the model returned non-finite values (NaN/inf)"
            else:
                job["generated"] = (np.clip(out[i].transpose(1, 2, 0), -1.0, 1.0) + 1.0) * 127.5
                if prior is not None and prior.colour == "luma":  # gray face -> the context's skin colour
                    job["generated"] = colour_from_context(job["generated"], job["crop"], job["mask"],
                                                           job["keypoints"], job["visible"])
        if progress is not None:
            progress.update(len(chunk))


def _not_generated(person, opts: Options) -> tuple[str, str] | None:
    """(baseline method, reason) for a face the generator must not draw; None for one it does."""
    box = _field(person, "face_box")
    if box is not None and max(box[2] - box[0], box[3] - box[1]) < float(opts.min_generate):
        return "pixelate", f"face under {opts.min_generate:g} px (--min-generate): pixelated, no face generated"
    kps = _field(person, "keypoints")
    if opts.facing_away == "blur" and kps is not None and faces_away(kps, _field(person, "visible")):
        return "blur", "faces away from the camera: blurred, no face generated"
    return None


def _baseline_face(img: np.ndarray, person, face: dict, method: str, opts: Options) -> None:
    """Blur, pixelate or mask one face's box in place and record it in `face`."""
    t0 = time.perf_counter()
    try:
        box = _field(person, "face_box")
        if box is None:
            raise ValueError("no face box")
        apply_baseline(img, box, method, blur_sigma=opts.blur_sigma, pixel_blocks=opts.pixel_blocks,
                       mask_color=opts.mask_color)
        face["status"], face["method"] = "anonymized", method
    except (ValueError, TypeError) as exc:
        face["status"], face["reason"] = "failed", f"face box degenerate: {exc}"
    face["time_s"] = time.perf_counter() - t0


def anonymize_batch(images: list[np.ndarray], persons: list[list], opts: Options, inpainter=None,
                    progress=None, seeds: list[list[int]] | None = None) -> list[ImageResult]:
    """Replace the faces of several images at once (faces of all images share the generation batches).

    `persons[i]` are the detections of `images[i]` (Person objects or dicts with face_box, keypoints,
    visible, ...). `seeds[i][k]` is the generation seed of face k of image i; by default --seed plus the
    face's index in its image (a video tracker passes --seed plus the person's track id instead).
    Input arrays are not modified.
    """
    if len(images) != len(persons):
        raise ValueError("images and persons must have the same length")
    if opts.method == "ddpm" and inpainter is None:
        raise ValueError("method 'ddpm' needs a model (--model RUN); or choose blur, pixelate or mask")
    works = [np.array(img, dtype=np.uint8, copy=True) for img in images]
    faces = [[face_record(k, p) for k, p in enumerate(ps)] for ps in persons]
    pastes: list[list[dict]] = [[] for _ in images]

    if opts.method == "ddpm":
        jobs, kept_back = [], []
        for i, (img, ps) in enumerate(zip(works, persons)):
            for k, person in enumerate(ps):
                instead = _not_generated(person, opts)
                if instead is not None:
                    kept_back.append((i, k, *instead))
                    continue
                try:
                    job = _prepare_face(img, person, int(inpainter.resolution))
                except ValueError as exc:
                    faces[i][k]["status"], faces[i][k]["reason"] = "failed", f"crop impossible: {exc}"
                    continue
                faces[i][k]["crop_box"] = list(job["crop_box"])
                job["where"] = (i, k)
                job["seed"] = int(opts.seed) + k if seeds is None else seeds[i][k]
                jobs.append(job)
        _run_inpainter(inpainter, jobs, opts, progress)
        for job in jobs:
            i, k = job["where"]
            faces[i][k]["time_s"] = job["time_s"]
            if "error" in job:
                faces[i][k]["status"], faces[i][k]["reason"] = "failed", job["error"]
            else:
                faces[i][k]["status"], faces[i][k]["method"] = "anonymized", "ddpm"
                pastes[i].append(job)
        for i, img in enumerate(works):
            if pastes[i]:
                try:
                    paste_faces(img, pastes[i], opts.feather)
                except ValueError as exc:  # geometry that survived _prepare_face; never expected
                    for job in pastes[i]:
                        k = job["where"][1]
                        faces[i][k]["status"], faces[i][k]["reason"] = "failed", f"paste failed: {exc}"
        # After the pastes: a generated crop's blend region may reach a neighbour's head and would undo it.
        for i, k, method, reason in kept_back:
            _baseline_face(works[i], persons[i][k], faces[i][k], method, opts)
            if faces[i][k]["status"] == "anonymized":
                faces[i][k]["reason"] = reason
        if progress is not None and kept_back:
            progress.update(len(kept_back))
    else:
        for i, (img, ps) in enumerate(zip(works, persons)):
            for k, person in enumerate(ps):
                _baseline_face(img, person, faces[i][k], opts.method, opts)
            if progress is not None:
                progress.update(len(ps))

    results = []
    for i, img in enumerate(works):
        failed = [f for f in faces[i] if f["status"] == "failed"]
        if failed and opts.on_miss == "mask":
            # Masks go last so no later blend can write over them.
            for f in failed:
                try:
                    mask_box(img, f["face_box"], opts.mask_color)
                    f["status"], f["method"] = "masked", "mask"
                except (ValueError, TypeError) as exc:
                    f["reason"] += f"; masking also impossible: {exc}"
            failed = [f for f in faces[i] if f["status"] == "failed"]
        if failed:
            reason = "; ".join(f"face {f['index']}: {f['reason']}" for f in failed)
            results.append(ImageResult(None, faces[i], "refused", reason))
        elif not faces[i]:
            results.append(ImageResult(img, faces[i], "no_face_detected"))
        else:
            results.append(ImageResult(img, faces[i], "ok"))
    return results


def anonymize_image(image_uint8, *, method: str = "ddpm", inpainter=None, seed: int = 0, persons=None,
                    detector=None, on_miss: str = "refuse", batch_size: int = 16, feather: float = DEFAULT_FEATHER,
                    blur_sigma: float | None = None, pixel_blocks: int = DEFAULT_PIXEL_BLOCKS,
                    mask_color=DEFAULT_MASK_COLOR, prior_strength: float = DEFAULT_PRIOR_STRENGTH,
                    facing_away: str = "blur", min_generate: float = DEFAULT_MIN_GENERATE, **sampling):
    """Replace every face of one HxWx3 uint8 RGB image; returns (anonymized copy, faces report).

    persons: detections to use (default: run `detector`, default `toolkit.detect.detect`).
    sampling: generation settings passed to `inpainter.inpaint` (e.g. steps=, cfg_scale=, rg_weight=).
    An image without detections comes back unchanged with an empty faces list: check for that if a
    face was expected. Raises FaceNotAnonymizedError (with `.faces`) under on_miss="refuse" when a face
    could not be replaced; under on_miss="mask" such a face is filled with `mask_color` instead.
    """
    from toolkit.images import load_rgb

    image = load_rgb(image_uint8)
    if persons is None:
        persons = _detect(image, detector)
    opts = Options(method=method, seed=seed, batch_size=batch_size, on_miss=on_miss, feather=feather,
                   blur_sigma=blur_sigma, pixel_blocks=pixel_blocks, mask_color=tuple(mask_color),
                   prior_strength=prior_strength, facing_away=facing_away, min_generate=min_generate,
                   sampling={k: v for k, v in sampling.items() if v is not None})
    (result,) = anonymize_batch([image], [list(persons)], opts, inpainter)
    if result.image is None:
        raise FaceNotAnonymizedError(f"face(s) could not be anonymized: {result.reason}", result.faces)
    return result.image, result.faces


def _detect(image: np.ndarray, detector=None) -> list:
    if detector is None:
        from toolkit.detect import detect as detector
    return list(detector(image))

