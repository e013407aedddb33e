"""`toolkit eval`: anonymize a folder with several methods and measure each against the originals.

Per face (always at the ORIGINAL detection, so a method that destroys the face is not let off):
identity distance, keypoint error of the pose detector on the anonymized image, SSIM/PSNR outside the
expanded face box, generation time. Per method: share of faces still recognized (distance < 0.6), means,
and KID (with a bootstrap interval) and FID between original and anonymized face crops.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from toolkit.eval import metrics

MODEL_METHODS = {"ddpm": "teacher", "student": "student", "student-int8": "quantized"}  # method -> run stage
MODEL_FLAGS = {"ddpm": "--teacher", "student": "--student", "student-int8": "--student-int8"}
BASELINE_METHODS = ("blur", "pixelate", "mask")
ALL_METHODS = tuple(MODEL_METHODS) + BASELINE_METHODS
FACE_CROP_SIZE = 128  # FID and the report grid look at face crops of this size
# dlib's ResNet embeds 150 px aligned face chips; below ~40 px its distances say nothing about identity
# (a solid mask on a 15 px face can still come out "the same person"), so such faces get no identity figure.
MIN_IDENTITY_FACE_PX = 40


@dataclass
class MethodSpec:
    name: str
    anonymize_method: str  # what toolkit.anonymize calls it
    inpainter: object = None
    options: dict = field(default_factory=dict)


def method_specs(names, *, teacher=None, student=None, quantized=None, sampling=None, blur_sigma=None,
                 prior_strength=None):
    """Resolve method names to anonymize settings, loading each model once; clear error if one is missing.

    `sampling` (steps, cfg_scale, rg_weight) applies to the teacher (method ddpm) only; `prior_strength` to
    every model."""
    models = {"ddpm": teacher, "student": student, "student-int8": quantized}
    specs = []
    for name in names:
        if name not in ALL_METHODS:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(ALL_METHODS)}")
        if name in BASELINE_METHODS:
            opts = {"blur_sigma": blur_sigma} if name == "blur" and blur_sigma else {}
            specs.append(MethodSpec(name, name, options=opts))
            continue
        run = models[name]
        if run is None:
            raise ValueError(f"method {name!r} needs a model: pass {MODEL_FLAGS[name]} RUN")
        # Sampling settings are the teacher's: a student samples with the steps it was distilled for.
        options = dict(sampling or {}) if name == "ddpm" else {}
        if prior_strength is not None:
            options["prior_strength"] = float(prior_strength)
        specs.append(MethodSpec(name, "ddpm", _load_inpainter(name, run), options))
    return specs


def _load_inpainter(name, run):
    """The model of one method; a run of the wrong kind (e.g. a quantized run as --student) is refused."""
    from toolkit.artifacts import read_manifest

    expected = MODEL_METHODS[name]
    stage = read_manifest(run).get("stage")
    if stage != expected:
        raise ValueError(f"method {name!r}: {MODEL_FLAGS[name]} {run} is a {stage!r} run, it needs a {expected!r} run")
    # (student-int8: the int8 step networks run in the bit-exact integer reference of the generated C code)
    from toolkit.artifacts import load_inpainter

    return load_inpainter(run)


def _warm_up(spec):
    """One throw-away face per model, so "s / face" does not charge the first method with lazy imports and
    one-time setup (seconds, against milliseconds per face for a student)."""
    if spec.inpainter is None:
        return
    import torch

    S = int(spec.inpainter.resolution)
    mask = torch.ones(1, 1, S, S)
    mask[..., S // 4: 3 * S // 4, S // 4: 3 * S // 4] = 0
    spec.inpainter.inpaint(torch.zeros(1, 3, S, S), mask, torch.full((1, 7, 2), 0.5), torch.ones(1, 7, dtype=torch.bool),
                           seed=0, **{k: v for k, v in spec.options.items() if k != "prior_strength"})


def _face_crop(image, box):
    from toolkit.crop import crop_and_resize, expanded_crop_box

    crop, _ = crop_and_resize(image, expanded_crop_box(box, image.shape), FACE_CROP_SIZE)
    return crop


def _match(person_box, candidates):
    """The detection whose face box centre is nearest to `person_box`'s, if within one box size."""
    if not candidates:
        return None
    cx, cy = (person_box[0] + person_box[2]) / 2, (person_box[1] + person_box[3]) / 2
    size = max(person_box[2] - person_box[0], person_box[3] - person_box[1])
    best = min(candidates, key=lambda p: np.hypot((p.face_box[0] + p.face_box[2]) / 2 - cx,
                                                   (p.face_box[1] + p.face_box[3]) / 2 - cy))
    d = np.hypot((best.face_box[0] + best.face_box[2]) / 2 - cx, (best.face_box[1] + best.face_box[3]) / 2 - cy)
    return best if d <= size else None


def evaluate(image_paths, specs, *, seed=0, fid=True, progress=True):
    """Run every method on every image; returns (per-face rows, per-method summary, samples for the grid)."""
    from toolkit.anonymize import FaceNotAnonymizedError, anonymize_image
    from toolkit.detect import detect
    from toolkit.images import load_rgb

    rows, samples, errors = [], [], []
    crops = {"original": []} | {s.name: {} for s in specs}  # method: {index of the original crop: crop}
    for spec in specs:
        _warm_up(spec)
    bar = tqdm(total=len(image_paths) * len(specs), desc="eval", unit="run", disable=not progress)
    for path in image_paths:
        try:
            image = load_rgb(path)
        except ValueError as exc:
            errors.append({"image": str(path), "error": str(exc)})
            bar.update(len(specs))
            continue
        persons = detect(image)
        if not persons:
            errors.append({"image": str(path), "error": "no face detected"})
            bar.update(len(specs))
            continue
        sample = {"image": str(path), "original": image, "methods": {}}
        first = len(crops["original"])
        for person in persons:
            crops["original"].append(_face_crop(image, person.face_box))
        for spec in specs:
            start = time.perf_counter()
            try:
                out, faces = anonymize_image(image, method=spec.anonymize_method, inpainter=spec.inpainter,
                                             seed=seed, persons=persons, **spec.options)
            except FaceNotAnonymizedError as exc:
                errors.append({"image": str(path), "method": spec.name, "error": str(exc)})
                bar.update(1)
                continue
            elapsed = time.perf_counter() - start
            sample["methods"][spec.name] = out
            found = detect(out)
            # Outside = outside every face's region: a photo's other faces are changed too.
            regions = [face.get("crop_box") or [float(v) for v in person.face_box]
                       for person, face in zip(persons, faces)]
            quality = metrics.outside_region_quality(image, out, regions)
            for k, (person, face) in enumerate(zip(persons, faces)):
                box = [float(v) for v in person.face_box]
                match = _match(box, found)
                rows.append({
                    "image": str(path), "method": spec.name, "face_box": box,
                    "identity_distance": metrics.identity_distance(image, out, box)
                    if min(box[2] - box[0], box[3] - box[1]) >= MIN_IDENTITY_FACE_PX else float("nan"),
                    "keypoint_error": float("nan") if match is None else metrics.keypoint_error(
                        person.keypoints, person.visible, match.keypoints, match.visible, box),
                    "face_redetected": match is not None,
                    "replaced_by": face.get("method"),  # a generator's row can hold blurred faces (facing away)
                    **quality,
                    "time_per_face_s": face.get("time_s") if face.get("time_s") is not None
                    else elapsed / max(len(persons), 1),
                })
                crops[spec.name][first + k] = _face_crop(out, person.face_box)
            bar.update(1)
        samples.append(sample)
    bar.close()
    summary = summarize(rows, [s.name for s in specs])
    if fid and len(crops["original"]) >= 2:
        inception = metrics.FID()
        reference = inception.features(crops["original"])
        for spec in specs:
            faces = sorted(crops[spec.name])  # the faces this method anonymized, paired with their originals
            if len(faces) >= 2:
                feats = inception.features([crops[spec.name][i] for i in faces])
                kid = metrics.kernel_inception_distance(reference[faces], feats, seed=seed)
                summary[spec.name].update(fid_faces=metrics.frechet_distance(reference[faces], feats),
                                          kid_faces=kid["kid"], kid_faces_ci=kid["ci"], realism_faces=kid["n"])
    return rows, summary, samples, errors


def summarize(rows, method_names):
    summary = {}
    for name in method_names:
        mine = [r for r in rows if r["method"] == name]
        if not mine:
            summary[name] = {"faces": 0}
            continue

        def mean(key, mine=mine):
            vals = np.array([r[key] for r in mine], dtype=float)
            vals = vals[~np.isnan(vals)]  # nan = not measurable (e.g. face not re-detected); inf is kept
            return float(vals.mean()) if vals.size else float("nan")

        dist = np.array([r["identity_distance"] for r in mine], dtype=float)
        dist = dist[~np.isnan(dist)]
        # Faces of at least MIN_IDENTITY_FACE_PX, the ones identity is measured on. Below ~16 px blur and
        # pixelate barely change a face (8 cells over an 8 px face is the face itself), so figures over all
        # faces reward leaving small faces untouched; these say what a method does to a face it must hide.
        large = [r for r in mine if min(r["face_box"][2] - r["face_box"][0],
                                         r["face_box"][3] - r["face_box"][1]) >= MIN_IDENTITY_FACE_PX]
        summary[name] = {
            "faces": len(mine),
            "identity_faces": int(dist.size),  # faces of at least MIN_IDENTITY_FACE_PX
            "identity_distance_mean": float(dist.mean()) if dist.size else float("nan"),
            # the share of faces a face-recognition model no longer matches to the original person
            "unrecognized_share": float((dist >= metrics.SAME_PERSON_THRESHOLD).mean()) if dist.size
            else float("nan"),
            "keypoint_error_mean": mean("keypoint_error"),
            "face_redetected_share": float(np.mean([r["face_redetected"] for r in mine])),
            "keypoint_error_mean_large": mean("keypoint_error", large) if large else float("nan"),
            "face_redetected_share_large": float(np.mean([r["face_redetected"] for r in large])) if large
            else float("nan"),
            "ssim_outside_mean": mean("ssim_outside"),
            "psnr_outside_mean": mean("psnr_outside"),
            "time_per_face_s": mean("time_per_face_s"),
            "replaced_by": dict(Counter(r.get("replaced_by") for r in mine if r.get("replaced_by"))),
        }
    return summary
