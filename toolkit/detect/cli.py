"""`toolkit detect IMAGE... [--json OUT] [--preview DIR]`: faces and 7 keypoints per person, per file."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from toolkit.images import IMAGE_SUFFIXES, ImageReadError, list_images, load_rgb, save_rgb


def register(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="find faces and the 7 FDF keypoints in images",
        description="Detect every person's face box and the 7 FDF keypoints (nose, eyes, ears, shoulders; "
                    "COCO order, person's left/right) with the BlazeFace/BlazePose models "
                    "(`toolkit assets fetch` first when offline). Prints one line per file; a file that "
                    "cannot be read is reported and skipped, and the exit status is then 1.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders (searched recursively)")
    p.add_argument("--json", dest="json_out", metavar="OUT", help="write all results (or per-file errors) to this JSON file")
    p.add_argument("--preview", metavar="DIR", help="write an annotated copy of each image into DIR")
    p.add_argument("--min-score", type=float, default=0.5, help="minimum person score (default 0.5)")
    p.add_argument("--single-scale", action="store_true",
                   help="whole-image pass only (faster; misses small people)")
    p.set_defaults(func=run)


def run(args) -> int:
    from toolkit.detect import detect, draw

    if not 0.0 <= args.min_score <= 1.0:
        raise ValueError(f"--min-score must be in [0, 1], got {args.min_score}")
    # Folders are searched recursively; one holding no image is an error of its own, like a bad file.
    files: list[Path] = []
    empty_dirs: list[Path] = []
    for item in args.images:
        found = list_images([item])
        if Path(item).is_dir() and not found:
            empty_dirs.append(Path(item))
        files.extend(found)
    preview_dir = Path(args.preview) if args.preview else None
    if preview_dir is not None:
        preview_dir.mkdir(parents=True, exist_ok=True)
    results = []
    failed = 0
    for d in empty_dirs:
        failed += 1
        msg = f"{d}: folder holds no images (suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})"
        results.append({"file": str(d), "error": msg})
        print(f"{d}: error: {msg}", file=sys.stderr)
    t_all = time.monotonic()
    for path in files:
        entry = {"file": str(path)}
        t0 = time.monotonic()
        try:
            image = load_rgb(path)
            persons = detect(image, min_score=args.min_score, multiscale=not args.single_scale)
        except ImageReadError as exc:
            failed += 1
            entry["error"] = str(exc)
            print(f"{path}: error: {exc}", file=sys.stderr)
            results.append(entry)
            continue
        entry.update(width=int(image.shape[1]), height=int(image.shape[0]),
                     persons=[p.to_dict() for p in persons])
        results.append(entry)
        summary = ", ".join(f"face {[round(float(v)) for v in p.face_box]} score {p.score:.2f}" for p in persons)
        print(f"{path}: {len(persons)} person(s) in {time.monotonic() - t0:.2f} s" + (f": {summary}" if summary else ""))
        if preview_dir is not None:
            out = _preview_path(preview_dir, path, files)
            save_rgb(draw(image, persons), out)
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps({"files": results, "failed": failed}, indent=1))
        tmp.replace(out)
    total = len(files) + len(empty_dirs)
    print(f"{total - failed}/{total} input(s) processed in {time.monotonic() - t_all:.1f} s"
          + (f", {failed} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def _preview_path(preview_dir: Path, path: Path, files: list[Path]) -> Path:
    """<stem>.jpg in DIR; clashing names (same stem from different folders) get a numeric suffix."""
    stem = path.stem
    same = [f for f in files if f.stem == stem]
    if len(same) > 1:
        stem = f"{stem}_{same.index(path)}"
    return preview_dir / f"{stem}.jpg"
