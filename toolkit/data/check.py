"""`toolkit data check`: validate an FDF-format dataset directory before training spends hours on it.

Problems make a dataset unusable (wrong layout, counts that differ, unreadable images, boxes outside the
image, NaN landmarks); warnings are worth knowing but harmless (no val split, gaps in the image numbering).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from toolkit.data.layout import SPLITS, visible_points
from toolkit.keypoints import NUM_KEYPOINTS

# |coordinate| above this cannot be a normalized landmark (pixel coordinates stored by mistake).
MAX_ABS_LANDMARK = 4.0


class _Report:
    def __init__(self, root: Path, max_problems: int):
        self.root = root
        self.max_problems = max_problems
        self.problems: list[str] = []
        self.num_problems = 0
        self.warnings: list[str] = []
        self.splits: dict[str, dict] = {}

    def problem(self, msg: str) -> None:
        self.num_problems += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(msg)

    def as_dict(self) -> dict:
        return {
            "root": str(self.root),
            "ok": self.num_problems == 0,
            "num_problems": self.num_problems,
            "problems": self.problems,
            "warnings": self.warnings,
            "splits": self.splits,
            "num_faces": sum(s.get("count", 0) for s in self.splits.values()),
        }


def _load_npy(path: Path, rep: _Report, rel: str):
    if not path.exists():
        rep.problem(f"{rel}: missing")
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        rep.problem(f"{rel}: not a readable .npy file ({exc})")
        return None


def _check_split(root: Path, split: str, rep: _Report, sample: int | None, progress: bool) -> None:
    d = root / split
    info: dict = {"count": 0}
    rep.splits[split] = info
    images_dir = d / "images"
    if not images_dir.is_dir():
        rep.problem(f"{split}/images/: missing (expected {split}/images/<i>.png)")
        paths = []
    else:
        pngs = [p for p in images_dir.iterdir() if p.is_file()]
        other = [p.name for p in pngs if p.suffix.lower() != ".png"]
        if other:
            rep.warnings.append(f"{split}/images/: {len(other)} non-PNG files ignored (e.g. {other[0]})")
        pngs = [p for p in pngs if p.suffix.lower() == ".png"]
        bad_names = sorted(p.name for p in pngs if not p.stem.isdigit())
        for name in bad_names:
            rep.problem(f"{split}/images/{name}: name is not an integer index (<i>.png)")
        paths = sorted((p for p in pngs if p.stem.isdigit()), key=lambda p: int(p.stem))
        if not paths and not bad_names:
            rep.problem(f"{split}/images/: no <i>.png images")
        indices = [int(p.stem) for p in paths]
        if indices and indices != list(range(len(indices))):
            rep.warnings.append(
                f"{split}/images/: numbering is not 0..{len(indices) - 1} (images pair with .npy rows in sorted order)"
            )
        if len(set(indices)) != len(indices):
            rep.problem(f"{split}/images/: duplicate indices (e.g. both 7.png and 007.png)")
    info["count"] = len(paths)

    lm = _load_npy(d / "landmarks.npy", rep, f"{split}/landmarks.npy")
    boxes = _load_npy(d / "bounding_box.npy", rep, f"{split}/bounding_box.npy")
    if lm is not None:
        if lm.ndim == 2 and lm.shape[1] == 2 * NUM_KEYPOINTS:
            lm = lm.reshape(-1, NUM_KEYPOINTS, 2)
        if lm.ndim != 3 or lm.shape[1:] != (NUM_KEYPOINTS, 2):
            rep.problem(f"{split}/landmarks.npy: shape {lm.shape}, expected (N, 7, 2)")
            lm = None
        elif not np.issubdtype(lm.dtype, np.floating):
            rep.problem(f"{split}/landmarks.npy: dtype {lm.dtype}, expected float32 normalized coordinates")
            lm = None
        else:
            if lm.dtype != np.float32:
                rep.warnings.append(f"{split}/landmarks.npy: dtype {lm.dtype} (FDF uses float32)")
            nonfinite = ~np.isfinite(lm).all(-1)
            for i, k in zip(*np.nonzero(nonfinite)):
                rep.problem(f"{split}/landmarks.npy: face {i} point {k} is NaN/inf")
            finite = np.where(np.isfinite(lm), lm, 0.0)
            wild = np.abs(finite).max(-1) > MAX_ABS_LANDMARK
            for i, k in zip(*np.nonzero(wild)):
                rep.problem(
                    f"{split}/landmarks.npy: face {i} point {k} = {lm[i, k].tolist()} is far outside [0, 1] "
                    "(pixel coordinates instead of normalized?)"
                )
            vis = visible_points(lm)
            info["visible_points"] = int(vis.sum())
            info["invisible_points"] = int((~vis).sum())
            info["faces_without_visible_points"] = int((~vis.any(-1)).sum())
    if boxes is not None:
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            rep.problem(f"{split}/bounding_box.npy: shape {boxes.shape}, expected (N, 4)")
            boxes = None
        elif not np.issubdtype(boxes.dtype, np.integer):
            integral = np.issubdtype(boxes.dtype, np.floating) and np.all(np.isfinite(boxes)) and np.all(
                boxes == np.round(boxes))
            if integral:  # loadable (whole numbers), but not what FDF stores
                rep.warnings.append(f"{split}/bounding_box.npy: dtype {boxes.dtype} holding whole numbers; "
                                    "FDF stores integer pixels")
                boxes = boxes.astype(np.int64)
            else:
                rep.problem(f"{split}/bounding_box.npy: dtype {boxes.dtype} with fractional or NaN values, "
                            "expected integer pixels")
                boxes = None
    n_lm = None if lm is None else len(lm)
    n_box = None if boxes is None else len(boxes)
    info["landmarks"] = n_lm
    info["boxes"] = n_box
    counts = {"images": len(paths), "landmarks": n_lm, "boxes": n_box}
    known = {k: v for k, v in counts.items() if v is not None}
    if len(set(known.values())) > 1:
        rep.problem(f"{split}: counts differ: " + ", ".join(f"{v} {k}" for k, v in known.items()))

    # Images: readable, RGB, square, all one size. `sample` limits how many are opened on huge sets.
    chosen = list(range(len(paths)))
    if sample is not None and sample < len(paths):
        chosen = sorted(set(np.linspace(0, len(paths) - 1, sample).round().astype(int).tolist()))
        info["images_checked"] = len(chosen)
    sizes: dict[tuple[int, int], int] = {}
    it = chosen
    if progress and len(chosen) > 200:
        from tqdm import tqdm

        it = tqdm(chosen, desc=f"check {split}", unit="img")
    first_size = None
    for i in it:
        p = paths[i]
        rel = f"{split}/images/{p.name}"
        try:
            with Image.open(p) as im:
                im.load()
                mode, (w, h) = im.mode, im.size
                fmt = im.format
        except Exception as exc:  # any decoder failure is a per-file problem, never a crash
            rep.problem(f"{rel}: unreadable image ({type(exc).__name__}: {exc})")
            continue
        if fmt != "PNG":
            rep.problem(f"{rel}: is {fmt}, not PNG")
        if mode != "RGB":
            rep.problem(f"{rel}: mode {mode}, expected RGB")
        if w != h:
            rep.problem(f"{rel}: {w}x{h} is not square")
        sizes[(w, h)] = sizes.get((w, h), 0) + 1
        if first_size is None:
            first_size = (w, h)
        elif (w, h) != first_size:
            rep.problem(f"{rel}: {w}x{h} differs from the first image's {first_size[0]}x{first_size[1]}")
    if sizes:
        (w, h) = max(sizes, key=sizes.get)
        info["image_size"] = w
        # All boxes against the common image size (also those of images not opened with --sample).
        if boxes is not None and len(boxes):
            x0, y0, x1, y1 = boxes.T
            bad = ~((0 <= x0) & (x0 < x1) & (x1 <= w) & (0 <= y0) & (y0 < y1) & (y1 <= h))
            for i in np.nonzero(bad)[0]:
                rep.problem(f"{split}/bounding_box.npy: face {i} box {boxes[i].tolist()} is empty or outside "
                            f"the {w}x{h} image")


def check_dataset(root, max_problems: int = 20, sample: int | None = None, progress: bool = False) -> dict:
    """Validate an FDF-format directory; returns a report dict with "ok", counts, problems and warnings.

    max_problems: how many problem messages to keep (all are counted in "num_problems").
    sample: open only this many images per split, evenly spaced (None = all).
    """
    root = Path(root)
    rep = _Report(root, max_problems)
    if not root.exists():
        rep.problem(f"{root}: no such directory")
        return rep.as_dict()
    if not root.is_dir():
        rep.problem(f"{root}: not a directory")
        return rep.as_dict()
    present = [s for s in SPLITS if (root / s).is_dir()]
    if not present:
        if (root / "images").is_dir() or (root / "landmarks.npy").exists():
            rep.problem(f"{root}: looks like a single split; the dataset root must contain train/ (and val/)")
        else:
            rep.problem(f"{root}: no train/ or val/ folder (expected ROOT/{{train,val}}/images/<i>.png + .npy files)")
        return rep.as_dict()
    if "train" not in present:
        rep.problem(f"{root}: no train/ split")
    if "val" not in present:
        rep.warnings.append(f"{root}: no val/ split")
    for split in present:
        _check_split(root, split, rep, sample, progress)
    sizes = {s["image_size"] for s in rep.splits.values() if "image_size" in s}
    if len(sizes) > 1:
        rep.problem(f"splits have different image sizes: {sorted(sizes)}")
    return rep.as_dict()


def format_report(rep: dict) -> str:
    lines = [f"dataset {rep['root']}"]
    for split, info in rep["splits"].items():
        extra = []
        if "image_size" in info:
            extra.append(f"{info['image_size']}x{info['image_size']} px")
        if "visible_points" in info:
            extra.append(f"{info['visible_points']} visible / {info['invisible_points']} invisible keypoints")
        if "images_checked" in info:
            extra.append(f"{info['images_checked']} images opened")
        lines.append(f"  {split}: {info['count']} faces" + (f" ({', '.join(extra)})" if extra else ""))
    for w in rep["warnings"]:
        lines.append(f"  warning: {w}")
    if rep["ok"]:
        lines.append(f"OK: {rep['num_faces']} faces, no problems")
    else:
        shown = len(rep["problems"])
        lines.append(f"{rep['num_problems']} problem(s)" + (f", first {shown}:" if shown < rep["num_problems"] else ":"))
        lines.extend(f"  - {p}" for p in rep["problems"])
    return "\n".join(lines)
