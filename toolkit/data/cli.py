"""`toolkit data check DIR` and `toolkit data build --images DIR --out DIR`."""

import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "data",
        help="check or build FDF-format datasets",
        description="FDF-format face datasets (the FDF256 layout of Hukkelås et al.): "
                    "ROOT/{train,val}/images/<i>.png, landmarks.npy (N,7,2) normalized, bounding_box.npy (N,4) px.",
    )
    verbs = p.add_subparsers(dest="data_cmd", metavar="CMD")

    c = verbs.add_parser(
        "check",
        help="validate a dataset directory and report counts and the first problems",
        description="Validate layout, shapes, dtypes, matching counts, boxes inside images, landmarks "
                    "(NaN / not normalized) and that every image is a readable square RGB PNG of one size. "
                    "Exit status 1 when there are problems.",
    )
    c.add_argument("dir", type=Path, help="dataset root (holds train/ and val/)")
    c.add_argument("--max-problems", type=int, default=20, metavar="N", help="problems to list (default 20)")
    c.add_argument("--sample", type=int, default=None, metavar="N",
                   help="open only N evenly spaced images per split (default: all; use on the 240k-image FDF256)")
    c.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the full report as JSON")
    c.set_defaults(func=run_check)

    b = verbs.add_parser(
        "build",
        help="turn your photos into an FDF-format dataset (detect, crop, resize, write)",
        description="Detect every person in the photos under --images, cut an FDF-like square crop around each "
                    "face, resize it to --size and write an FDF-format dataset to --out, with toolkit.json "
                    "and preview.png. Photos without faces, too-small faces and unreadable files are skipped "
                    "and listed. The train/val split is by photo and deterministic given --seed. --out must be "
                    "new, empty, or a previous dataset built by this command (it is replaced).",
    )
    b.add_argument("--images", type=Path, required=True, metavar="DIR", help="folder of photos (searched recursively)")
    b.add_argument("--out", type=Path, required=True, metavar="DIR", help="dataset directory to create")
    b.add_argument("--size", type=int, default=256, help="crop side in pixels (default 256, as FDF256)")
    b.add_argument("--val-fraction", type=float, default=0.1, metavar="F",
                   help="fraction of photos put in val/ (default 0.1; at least one photo when F > 0)")
    b.add_argument("--seed", type=int, default=0, help="seed of the train/val split (default 0)")
    b.add_argument("--min-face", type=float, default=24.0, metavar="PX",
                   help="skip faces whose box is smaller than PX pixels in the photo (default 24)")
    b.add_argument("--min-score", type=float, default=0.0, metavar="S",
                   help="skip detections scored below S in [0, 1] (default 0: keep all the detector reports)")
    b.add_argument("--min-inside", type=float, default=0.4, metavar="F",
                   help="skip faces whose crop lies less than F of its area inside the photo (default 0.4; "
                        "tight face crops would be mostly padding)")
    b.add_argument("--backgrounds", type=Path, default=None, metavar="DIR",
                   help="photos without people: fill the part of a crop outside its photo from them instead of "
                        "repeating edge pixels (for tight face crops such as LFW); photos with a person are refused")
    b.add_argument("--variants", type=int, default=1, metavar="N",
                   help="crops per face, each on another background (needs --backgrounds; default 1)")
    b.add_argument("--no-preview", action="store_true", help="do not write preview.png")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=run_build)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_check(args) -> int:
    from toolkit.data.check import check_dataset, format_report

    if args.max_problems < 1:
        raise ValueError("--max-problems must be at least 1")
    if args.sample is not None and args.sample < 1:
        raise ValueError("--sample must be at least 1")
    rep = check_dataset(args.dir, max_problems=args.max_problems, sample=args.sample, progress=True)
    print(format_report(rep))
    if args.json:
        from toolkit.artifacts import write_json_atomic

        write_json_atomic(args.json, rep)
    return 0 if rep["ok"] else 1


def run_build(args) -> int:
    from toolkit.data.build import build_dataset
    from toolkit.data.check import check_dataset

    m = build_dataset(
        args.images, args.out, size=args.size, val_fraction=args.val_fraction, seed=args.seed,
        min_face=args.min_face, min_score=args.min_score, min_inside=args.min_inside,
        progress=not args.quiet, preview=not args.no_preview, backgrounds=args.backgrounds, variants=args.variants,
    )
    sk = m["skipped"]
    print(f"wrote {m['num_crops']} crops of {m['num_faces']} faces from {m['num_photos']} photos to {args.out} "
          f"(train {m['splits']['train']}, val {m['splits']['val']}, {m['image_size']} px)")
    if sk["no_face"]:
        print(f"no face found in {len(sk['no_face'])} photo(s): {', '.join(sk['no_face'][:10])}"
              + (" ..." if len(sk["no_face"]) > 10 else ""))
    if sk["small_face"]:
        print(f"skipped {len(sk['small_face'])} face(s) under {m['min_face']:g} px")
    if sk["low_score"]:
        print(f"skipped {len(sk['low_score'])} detection(s) scored under {m['min_score']:g}")
    if sk["mostly_outside"]:
        print(f"skipped {len(sk['mostly_outside'])} face(s) whose crop is under {m['min_inside']:g} inside the photo")
    if sk["bad_detection"]:
        print(f"skipped {len(sk['bad_detection'])} unusable detection(s) (see skipped.bad_detection in toolkit.json)")
    for bad in sk["unreadable"]:
        print(f"skipped unreadable: {bad['error']}", file=sys.stderr)
    # The build's output must always pass the checker; say so loudly if it does not.
    rep = check_dataset(args.out, max_problems=5)
    if not rep["ok"]:
        print("internal error: the built dataset fails `data check`:\n  " + "\n  ".join(rep["problems"]),
              file=sys.stderr)
        return 3
    return 1 if sk["unreadable"] else 0
