"""Inputs and outputs of `toolkit anonymize`: what gets read, where each result goes, and video files.

Safety rules live here: an output directory that equals, contains, or lies inside an input is refused
before any work starts, and no planned output path may equal an input path.

Formats: outputs are lossless by default, so that pixels outside the face regions stay byte-identical.
Images in PNG/BMP/TIFF/PPM keep their format; others (JPEG, WebP, GIF, ...) are written as PNG with the
same stem. Videos are written with the lossless FFV1 codec, in .avi/.mkv (kept) or else as .mkv.
`image_format="keep"` keeps every suffix (JPEG re-encoded at quality 95, MP4 as mp4v): smaller files, but
JPEG/MP4 re-encoding changes pixels everywhere, not only in the face regions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from toolkit.images import IMAGE_SUFFIXES

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv"}
LOSSLESS_IMAGE_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".ppm"}
LOSSLESS_VIDEO_SUFFIXES = {".avi", ".mkv"}
FORMATS = ("lossless", "keep")
REPORT_NAME = "anonymize_report.json"


@dataclass
class Item:
    """One unit of work: an image or a video file, and where its anonymized version goes."""

    kind: str  # "image" | "video"
    src: Path
    dst: Path
    coco_image_id: object = None
    extra: dict = field(default_factory=dict)


def _is_inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def output_name(src: Path, kind: str, image_format: str) -> str:
    suffix = src.suffix.lower()
    if image_format == "keep":
        return src.name
    if kind == "video":
        return src.name if suffix in LOSSLESS_VIDEO_SUFFIXES else src.stem + ".mkv"
    return src.name if suffix in LOSSLESS_IMAGE_SUFFIXES else src.stem + ".png"


def _kind(path: Path) -> str:
    return "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"


def check_out_dir(inputs: list[Path], out_dir: Path) -> None:
    """Refuse an --out that would overwrite, contain or be read as an input."""
    out = out_dir.resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out_dir} exists and is not a directory")
    for inp in inputs:
        src = inp.resolve()
        if src == out:
            raise ValueError(f"--out {out_dir} is the input {inp}: inputs are never overwritten; choose another --out")
        if _is_inside(src, out):
            raise ValueError(f"--out {out_dir} contains the input {inp}: inputs are never overwritten; "
                             "choose an --out outside the inputs")
        if src.is_dir() and _is_inside(out, src):
            raise ValueError(f"--out {out_dir} lies inside the input folder {inp}: its results would be read as "
                             "inputs next time; choose an --out outside the input folders")


def plan_paths(inputs, out_dir, image_format: str = "lossless") -> list[Item]:
    """Files and folders (recursive; hidden files skipped) -> items, mirroring folder structure under out."""
    if image_format not in FORMATS:
        raise ValueError(f"unknown --format {image_format!r}; choose one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    inputs = [Path(p) for p in inputs]
    if not inputs:
        raise ValueError("no inputs given (images, folders or videos; or --coco ann.json --images-root DIR)")
    for p in inputs:
        if not p.exists():
            raise FileNotFoundError(f"{p}: no such file or folder")
    check_out_dir(inputs, out_dir)
    items = []
    for p in inputs:
        if p.is_dir():
            wanted = IMAGE_SUFFIXES | VIDEO_SUFFIXES
            files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in wanted
                           and not any(part.startswith(".") for part in q.relative_to(p).parts))
            for q in files:
                rel = q.relative_to(p)
                kind = _kind(q)
                items.append(Item(kind, q, out_dir / rel.parent / output_name(q, kind, image_format)))
        else:
            # Files named explicitly are always tried, whatever their suffix (a bad one is reported).
            kind = _kind(p)
            items.append(Item(kind, p, out_dir / output_name(p, kind, image_format)))
    check_collisions(items, inputs)
    return items


def check_collisions(items: list[Item], inputs) -> None:
    seen: dict[Path, Path] = {}
    sources = {Path(i).resolve() for i in inputs} | {it.src.resolve() for it in items}
    for it in items:
        dst = it.dst.resolve()
        if dst in sources:
            raise ValueError(f"output {it.dst} would overwrite an input; choose another --out")
        if dst in seen:
            raise ValueError(f"{seen[dst]} and {it.src} would both be written to {it.dst}; "
                             "rename one, or use --format keep")
        seen[dst] = it.src


# ----------------------------------------------------------------------------------------------------
# COCO keypoint datasets


def read_coco_file(ann_path, images_root) -> tuple[dict, Path, Path]:
    """(the annotation's JSON, its path, the images folder) after the checks every `--coco` verb makes:
    --images-root given, both exist, the file is JSON."""
    ann_path = Path(ann_path)
    if images_root is None:
        raise ValueError("--coco needs --images-root DIR (the folder the annotation's file_name entries are in)")
    images_root = Path(images_root)
    if not ann_path.is_file():
        raise FileNotFoundError(f"--coco {ann_path}: no such annotation file")
    if not images_root.is_dir():
        raise FileNotFoundError(f"--images-root {images_root}: no such folder")
    try:
        return json.loads(ann_path.read_bytes()), ann_path, images_root
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{ann_path}: not a JSON file ({exc})") from exc


def plan_coco(ann_path, images_root, out_dir) -> tuple[list[Item], dict, Path]:
    """Items for every image of a COCO annotation file; returns (items, annotation dict, annotation dst).

    Images go to OUT/images/<file_name> under their own names (the annotation refers to them), the
    annotation file is copied byte for byte to OUT/annotations/<name>.
    """
    data, ann_path, images_root = read_coco_file(ann_path, images_root)
    out_dir = Path(out_dir)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{ann_path}: not a COCO annotation file (no 'images' list)")
    check_out_dir([ann_path, images_root], out_dir)
    items = []
    root = images_root.resolve()
    for entry in data["images"]:
        name = entry.get("file_name") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"{ann_path}: image entry without a file_name: {entry!r}")
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not _is_inside((root / rel).resolve(), root):
            raise ValueError(f"{ann_path}: file_name {name!r} points outside --images-root")
        items.append(Item("image", images_root / rel, out_dir / "images" / rel, coco_image_id=entry.get("id"),
                          extra={"width": entry.get("width"), "height": entry.get("height")}))
    ann_dst = out_dir / "annotations" / ann_path.name
    check_collisions(items + [Item("annotation", ann_path, ann_dst)], [ann_path])
    return items, data, ann_dst


def coco_face_points(data: dict) -> dict:
    """image id -> list of (annotation id, (k,2) array of labelled face points: nose, eyes, ears)."""
    out: dict = {}
    for ann in data.get("annotations", []) or []:
        kps = ann.get("keypoints") if isinstance(ann, dict) else None
        if not kps or len(kps) < 15:
            continue
        arr = np.asarray(kps[:15], dtype=np.float64).reshape(5, 3)
        pts = arr[arr[:, 2] > 0, :2]
        if len(pts):
            out.setdefault(ann.get("image_id"), []).append((ann.get("id"), pts))
    return out


# ----------------------------------------------------------------------------------------------------
# video


def video_fourcc(dst: Path) -> str:
    if dst.suffix.lower() in LOSSLESS_VIDEO_SUFFIXES:
        return "FFV1"
    if dst.suffix.lower() in (".mp4", ".m4v", ".mov"):
        return "mp4v"
    return "MJPG"


class VideoReader:
    """RGB frames of a video file, with its fps / size / frame count; raises ValueError if unreadable."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"{path}: no such video file")
        self.cap = cv2.VideoCapture(str(self.path))
        if not self.cap.isOpened():
            raise ValueError(f"{path}: not a readable video")
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS)) or 25.0
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frame_count = max(0, int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        if self.width <= 0 or self.height <= 0:
            self.close()
            raise ValueError(f"{path}: not a readable video (no frame size)")

    def frames(self, chunk: int):
        """Yield lists of up to `chunk` RGB frames."""
        batch = []
        while True:
            ok, frame = self.cap.read()
            if not ok:
                break
            batch.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if len(batch) == chunk:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self):
        self.cap.release()


class VideoWriter:
    """Writes RGB frames to a hidden temp file next to `dst`; `commit()` renames it, `abort()` deletes it."""

    def __init__(self, dst: Path, fps: float, size: tuple[int, int], fourcc: str | None = None):
        self.dst = Path(dst)
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.dst.with_name(f".{self.dst.stem}.tmp{self.dst.suffix}")
        self.fourcc = fourcc or video_fourcc(self.dst)
        self.size = size
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc), fps, size)
        if not self.writer.isOpened():
            raise RuntimeError(f"cannot write video {self.dst} with codec {self.fourcc}")
        self.frames = 0

    def write(self, rgb: np.ndarray):
        if (rgb.shape[1], rgb.shape[0]) != self.size:
            raise ValueError(f"frame of size {rgb.shape[1]}x{rgb.shape[0]} in a {self.size[0]}x{self.size[1]} video")
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def commit(self):
        self.writer.release()
        self.tmp.replace(self.dst)

    def abort(self):
        self.writer.release()
        self.tmp.unlink(missing_ok=True)
