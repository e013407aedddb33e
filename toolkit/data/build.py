"""`toolkit data build`: turn a folder of photos into an FDF-format dataset.

detect every person -> FDF-like square crop around the face (`toolkit.crop`) -> resize -> write
`{train,val}/images/<i>.png`, `landmarks.npy`, `bounding_box.npy`, plus `faces.json` per split (where each
crop came from), `toolkit.json` (stage "dataset") and `preview.png` (crops with boxes and keypoints drawn).

The train/val split is by source photo, not by face, so one person's photo never lands in both splits.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.artifacts import MANIFEST, read_manifest, write_manifest
from toolkit.crop import (
    CROP_SCALE,
    CROP_SHIFT_DOWN,
    crop_and_resize,
    expanded_crop_box,
    face_box_in_crop,
    to_crop_coords,
)
from toolkit.images import ImageReadError, list_images, load_rgb

# Entries `data build` owns in its output directory; only these are replaced on a rebuild.
OWNED = ("train", "val", MANIFEST, "preview.png")
PREVIEW_FACES = 64  # crops shown in preview.png
# One colour per keypoint (COCO order) for the preview: nose white, left side red-ish, right side blue-ish.
KP_COLOURS = ((255, 255, 255), (255, 60, 60), (60, 140, 255), (255, 150, 60), (60, 220, 255), (200, 0, 0), (0, 60, 200))


def _check_output_dir(out: Path, images_dir: Path | None, files: list[Path]) -> bool:
    """Refuse outputs that would clobber something; True when `out` holds a previous dataset to replace."""
    out_r = out.resolve()
    if images_dir is not None:
        img_r = images_dir.resolve()
        if out_r == img_r or img_r in out_r.parents:
            raise ValueError(f"--out {out} is inside --images {images_dir}; choose a folder outside the photos")
    if any(out_r in f.resolve().parents for f in files):
        raise ValueError(f"some input photos are inside --out {out}; the dataset would replace its own inputs")
    if not out.exists():
        return False
    if not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a directory")
    if not any(out.iterdir()):
        return False
    try:
        read_manifest(out, expect_stage="dataset")
    except ValueError as exc:
        raise ValueError(
            f"--out {out} is not empty and is not a previous `toolkit data build` dataset ({exc}); "
            "refusing to write into it"
        ) from exc
    return True


def _split_photos(names: list[str], val_fraction: float, seed: int) -> set[str]:
    """Deterministic choice of validation photos: rank by a seeded hash of the relative path."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0 or len(names) < 2:
        return set()
    ranked = sorted(names, key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest())
    n_val = min(len(names) - 1, max(1, round(val_fraction * len(names))))
    return set(ranked[:n_val])


def _face_record(image, person, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """crop, keypoints, face box, valid-pixel mask (True = inside the photo) and metadata of one face."""
    # Frame on the whole face (the detector clips face_box to the image), exactly as anonymize does.
    whole = getattr(person, "face_box_unclipped", None)
    face_box = [float(v) for v in (person.face_box if whole is None else whole)]
    crop_box = expanded_crop_box(face_box, image.shape)
    crop, valid = crop_and_resize(image, crop_box, size)
    kp = to_crop_coords(np.asarray(person.keypoints, dtype=np.float64), crop_box, size) / size
    vis = np.asarray(person.visible, dtype=bool) & np.all((kp >= 0) & (kp <= 1), axis=-1)
    kp = np.where(vis[:, None], kp, -1.0).astype(np.float32)  # FDF has no visibility flag: -1 = invisible
    box = np.array(face_box_in_crop(face_box, crop_box, size), dtype=np.int64)
    meta = {
        "face_box": [round(v, 2) for v in face_box],
        "crop_box": [int(v) for v in crop_box],
        "score": round(float(person.score), 4),
        "keypoint_scores": [round(float(s), 4) for s in np.asarray(person.keypoint_scores).ravel()],
        "detector_visible": [bool(v) for v in np.asarray(person.visible).ravel()],
        "valid_fraction": round(float(valid.mean()), 4),
    }
    return crop, kp, box, valid, meta


def load_backgrounds(folder, detector) -> tuple[list[np.ndarray], list[str], list[dict]]:
    """The photos in `folder` to put around tight face crops; photos where `detector` finds a person are
    refused (a face in the context would teach the model to paint faces around faces)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--backgrounds {folder}: no such folder")
    images, names, refused = [], [], []
    for path in list_images([folder]):
        try:
            image = load_rgb(path)
        except ImageReadError as exc:
            refused.append({"file": path.name, "error": str(exc)})
            continue
        if detector(image):
            refused.append({"file": path.name, "error": "a person was detected in it"})
            continue
        images.append(image)
        names.append(path.name)
    if not images:
        raise ValueError(f"--backgrounds {folder}: no usable background photo ({len(refused)} refused)")
    return images, names, refused


def on_background(crop, valid, face_box, background, rng) -> np.ndarray:
    """`crop` with its padding (pixels not `valid`, i.e. outside the photo) replaced by a random square of
    `background`, blended over a pixel or two so the seam is soft; the face box itself is never changed.

    A gray crop gets a gray background, so a gray training set stays gray (`toolkit train` reads the colour
    mode from the data)."""
    import cv2

    size = crop.shape[0]
    bh, bw = background.shape[:2]
    side = max(4, int(round(rng.uniform(0.3, 1.0) * min(bh, bw))))
    y, x = int(rng.integers(0, bh - side + 1)), int(rng.integers(0, bw - side + 1))
    patch = background[y : y + side, x : x + side]
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    patch = cv2.resize(np.ascontiguousarray(patch), (size, size),
                       interpolation=cv2.INTER_AREA if side > size else cv2.INTER_CUBIC).astype(np.float32)
    if np.array_equal(crop[..., 0], crop[..., 1]) and np.array_equal(crop[..., 0], crop[..., 2]):
        patch = np.repeat(patch @ np.float32([0.299, 0.587, 0.114])[:, None], 3, axis=2)
    alpha = cv2.GaussianBlur(valid.astype(np.float32), (0, 0), max(0.5, size / 64))
    alpha = np.where(valid, np.maximum(alpha, 0.5), 0.0)  # padding is all background, real pixels mostly kept
    x0, y0, x1, y1 = face_box
    alpha[y0:y1, x0:x1] = 1.0
    out = alpha[..., None] * crop.astype(np.float32) + (1 - alpha[..., None]) * patch
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def draw_preview(crops, landmarks, boxes, path, max_faces: int = 64, cell: int = 96) -> None:
    """A grid of crops with the face box (mask region) and visible keypoints drawn; for eyeballing a build."""
    import cv2

    crops = crops[:max_faces]
    if not crops:
        return
    cols = min(8, len(crops))
    rows = math.ceil(len(crops) / cols)
    grid = np.full((rows * cell, cols * cell, 3), 32, dtype=np.uint8)
    for i, (img, kp, box) in enumerate(zip(crops, landmarks, boxes)):
        s = img.shape[0]
        tile = cv2.resize(img, (cell, cell), interpolation=cv2.INTER_AREA if s > cell else cv2.INTER_NEAREST)
        tile = np.ascontiguousarray(tile)
        f = cell / s
        x0, y0, x1, y1 = (int(round(v * f)) for v in box)
        cv2.rectangle(tile, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), (0, 255, 0), 1)
        for k, (x, y) in enumerate(kp):
            if 0 <= x <= 1 and 0 <= y <= 1:
                cv2.circle(tile, (int(x * cell), int(y * cell)), 2, KP_COLOURS[k], -1)
        r, c = divmod(i, cols)
        grid[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = tile
    Image.fromarray(grid).save(path)


def build_dataset(
    images,
    out,
    size: int = 256,
    val_fraction: float = 0.1,
    seed: int = 0,
    min_face: float = 24.0,
    min_score: float = 0.0,
    min_inside: float = 0.4,
    detector=None,
    progress: bool = True,
    preview: bool = True,
    backgrounds=None,
    variants: int = 1,
) -> dict:
    """Build an FDF-format dataset in `out` from the photos under `images` (a folder or a list of files).

    min_face: faces whose box is smaller than this many pixels (shorter side, in the photo) are skipped:
    upsampling them would teach the model blur. min_score: skip detections scored below this (0 keeps
    everything the detector reports). min_inside: skip faces whose crop lies less than this fraction inside
    the photo (mostly padding teaches nothing; e.g. faces cut out tightly already). detector: a callable image -> list of persons with
    face_box / keypoints / keypoint_scores / visible / score (default `toolkit.detect.detect`).
    backgrounds: a folder of photos without people; the part of each crop outside its photo is then filled
    from one of them (`on_background`) instead of repeating the edge pixels, for photos that are tight face
    crops already (LFW). variants: crops per face, each on another background (needs `backgrounds`); the
    variants of a face stay in its photo's split.
    Returns the manifest (counts, skipped photos and faces, unreadable files).
    """
    size = int(size)
    if size < 8:
        raise ValueError(f"--size must be at least 8 pixels, got {size}")
    if not min_face >= 0:
        raise ValueError(f"--min-face must be >= 0, got {min_face}")
    if not 0.0 <= min_inside <= 1.0:
        raise ValueError(f"--min-inside must be in [0, 1], got {min_inside}")
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"--min-score must be in [0, 1], got {min_score}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    variants = int(variants)
    if variants < 1 or (variants > 1 and backgrounds is None):
        raise ValueError(f"--variants must be at least 1, and above 1 only with --backgrounds; got {variants}")
    out = Path(out)
    if isinstance(images, (str, Path)):
        images_dir = Path(images)
        if not images_dir.exists():
            raise FileNotFoundError(f"--images {images_dir}: no such folder")
        if not images_dir.is_dir():
            raise ValueError(f"--images {images_dir} is not a folder")
        files = list_images([images_dir])
        base = images_dir
    else:
        files = [Path(p) for p in images]
        images_dir = None
        # Name photos relative to their common folder (short, and no home paths in the manifest).
        base = Path(os.path.commonpath([str(f.resolve().parent) for f in files])) if files else None
    if not files:
        raise FileNotFoundError(f"no image files found under {images}")
    replace = _check_output_dir(out, images_dir, files)
    if detector is None:
        from toolkit.detect import detect as detector
    scenes = load_backgrounds(backgrounds, detector) if backgrounds is not None else None

    def rel(p: Path) -> str:
        """The name a photo is listed under (manifest, faces.json, split hashing): relative to its folder."""
        try:
            return (p.relative_to(base) if images_dir is not None else p.resolve().relative_to(base)).as_posix()
        except ValueError:
            return str(p)

    # Crops stream to a temporary sibling of `out` as they are made (memory stays flat on big photo sets);
    # only when everything succeeded are they moved into place: a failed build leaves no half dataset.
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        return _build_into(tmp, out, replace, files, rel, detector, size, val_fraction, seed, min_face, min_score,
                           min_inside, progress, preview, source=str(images_dir if images_dir is not None else base),
                           scenes=scenes, variants=variants)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_into(tmp, out, replace, files, rel, detector, size, val_fraction, seed, min_face, min_score, min_inside,
                progress, preview, source, scenes=None, variants=1) -> dict:
    pool = tmp / "_faces"
    pool.mkdir()
    faces = []  # (photo name, landmarks, box, meta); crop k is pool/<k>.png
    shown = []  # the first crops, for the preview
    bad_files, no_faces, small_faces, low_score, outside, bad_faces = [], [], [], [], [], []
    it = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, desc="data build", unit="photo")
    for path in it:
        name = rel(path)
        try:
            image = load_rgb(path)
        except ImageReadError as exc:
            bad_files.append({"file": name, "error": str(exc)})
            continue
        try:
            people = detector(image)
        except Exception as exc:  # a detector failure on one photo must not end the run
            bad_files.append({"file": name, "error": f"detection failed: {type(exc).__name__}: {exc}"})
            continue
        if not people:
            no_faces.append(name)
        for j, person in enumerate(people):
            if float(person.score) < min_score:
                low_score.append({"file": name, "person": j, "score": round(float(person.score), 4)})
                continue
            x0, y0, x1, y1 = (float(v) for v in person.face_box)
            side = min(x1 - x0, y1 - y0)
            if not side >= min_face:  # also catches NaN boxes
                small_faces.append({"file": name, "person": j, "face_px": round(side, 1)})
                continue
            try:
                crop, kp, box, valid, meta = _face_record(image, person, size)
            except ValueError as exc:  # degenerate detection (e.g. box off the image)
                bad_faces.append({"file": name, "person": j, "error": str(exc)})
                continue
            if meta["valid_fraction"] < min_inside:
                outside.append({"file": name, "person": j, "inside": meta["valid_fraction"]})
                continue
            meta.update(source=name, person=j, source_size=[int(image.shape[1]), int(image.shape[0])])
            for v in range(variants):
                variant, info = crop, dict(meta)
                if scenes is not None:
                    # Seeded by photo, face and variant: a rebuild gives the same dataset.
                    key = int.from_bytes(hashlib.sha256(f"{seed}:{name}:{j}:{v}".encode()).digest()[:8], "little")
                    rng = np.random.default_rng(key)
                    b = int(rng.integers(len(scenes[0])))
                    variant = on_background(crop, valid, box, scenes[0][b], rng)
                    info.update(background=scenes[1][b], variant=v)
                Image.fromarray(variant).save(pool / f"{len(faces)}.png")
                if len(shown) < PREVIEW_FACES:
                    shown.append((variant, kp, box))
                faces.append((name, kp, box, info))
        if progress:
            it.set_postfix(faces=len(faces), refresh=False)
    if not faces:
        raise RuntimeError(
            f"no usable faces in {len(files)} image file(s) (no face: {len(no_faces)}, faces under "
            f"{min_face:g} px: {len(small_faces)}, scored under {min_score:g}: {len(low_score)}, "
            f"crops under {min_inside:g} inside the photo: {len(outside)}, "
            f"unreadable: {len(bad_files)}); nothing written"
        )

    photos = sorted({f[0] for f in faces})
    val_photos = _split_photos(photos, val_fraction, seed)
    counts = {}
    for split in ("train", "val"):
        ids = [k for k, f in enumerate(faces) if (f[0] in val_photos) == (split == "val")]
        counts[split] = len(ids)
        if not ids:
            continue
        d = tmp / split
        (d / "images").mkdir(parents=True)
        for i, k in enumerate(ids):
            (pool / f"{k}.png").replace(d / "images" / f"{i}.png")
        np.save(d / "landmarks.npy", np.asarray([faces[k][1] for k in ids], dtype=np.float32).reshape(-1, 7, 2))
        np.save(d / "bounding_box.npy", np.asarray([faces[k][2] for k in ids], dtype=np.int64).reshape(-1, 4))
        (d / "faces.json").write_text(json.dumps([faces[k][3] for k in ids], indent=1) + "\n")
    if preview:
        draw_preview([c for c, _, _ in shown], [k for _, k, _ in shown], [b for _, _, b in shown], tmp / "preview.png")
    manifest = write_manifest(
        tmp,
        "dataset",
        format="fdf",
        image_size=size,
        splits=counts,
        num_faces=len(faces) // variants,
        num_crops=len(faces),
        num_photos=len(photos),
        val_photos=sorted(val_photos),
        val_fraction=val_fraction,
        seed=seed,
        min_face=min_face,
        min_score=min_score,
        min_inside=min_inside,
        images=source,
        num_files=len(files),
        crop={"scale": CROP_SCALE, "shift_down": CROP_SHIFT_DOWN,
              "padding": "edge-replicate" if scenes is None else "backgrounds"},
        backgrounds=None if scenes is None else {"used": scenes[1], "refused": scenes[2]},
        variants=variants,
        keypoints="COCO order, normalized [0,1]; invisible = (-1, -1)",
        skipped={"no_face": no_faces, "small_face": small_faces, "low_score": low_score, "mostly_outside": outside,
                 "bad_detection": bad_faces,
                 "unreadable": bad_files},
    )
    if replace:
        for entry in OWNED:
            p = out / entry
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for entry in OWNED:
        if (tmp / entry).exists():
            (tmp / entry).replace(out / entry)
    return manifest
