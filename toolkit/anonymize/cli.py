"""`toolkit anonymize`: replace every face in images, folders, videos or a COCO keypoint dataset."""

from __future__ import annotations

import argparse
import sys

from toolkit.anonymize.baselines import DEFAULT_PIXEL_BLOCKS
from toolkit.anonymize.media import REPORT_NAME
from toolkit.anonymize.pipeline import (DEFAULT_FEATHER, DEFAULT_MIN_GENERATE, DEFAULT_PRIOR_STRENGTH, FACING_AWAY,
                                       METHODS, ON_MISS, Options)

DESCRIPTION = """\
Detect every person, cut an FDF-framed crop around each face, generate a new face there with a trained
model (keypoint-conditioned diffusion teacher, or its distilled student), and paste it back with a
feathered blend. Pixels outside each face's expanded crop box are left byte-identical (lossless outputs).

Inputs: image files, folders (recursive; the folder structure is mirrored under --out), video files
(written frame by frame with the same fps and size), or a COCO keypoint dataset (--coco ann.json
--images-root DIR: images go to OUT/images/ under their own names, the annotation is copied unchanged to
OUT/annotations/, so the dataset stays trainable).

Privacy policy (fail closed):
  * a detected face that could not be replaced (generation failed or gave NaN, degenerate face box,
    impossible crop) makes the image NOT written (--on-miss refuse, default); --on-miss mask writes it
    with that face filled by a solid colour instead;
  * an image where NO face is detected is written UNCHANGED and flagged "no_face_detected" in the
    report: a detector miss leaves that face visible. --require-face refuses such images (in a video,
    any frame without a face refuses the video);
  * in COCO mode a face labelled in the annotation (nose/eye/ear keypoints) that no detection covers
    is treated as a face that could not be replaced;
  * inputs are never overwritten; an --out that is, contains, or lies inside an input is refused.
Exit status: 0 when every input was written, 1 when any input was refused or unreadable, 2 on usage
errors. A JSON report (default OUT/%s) lists per input: status, reason, faces (boxes,
keypoints, scores), method, model, seed and time per face.

Scale: under `torchrun --nproc_per_node N -m toolkit.cli anonymize ...` (or `accelerate launch`) each
process takes a stable share of the inputs on its own device and one merged report comes out. Re-running
the same command into the same --out resumes: inputs written by an earlier run with the same settings
(settings_hash in the report) are skipped; --restart redoes everything. In videos a tracker gives each
person one seed for the whole video and smooths face boxes over time (--no-track: seed + face index).

Output formats: PNG/BMP/TIFF/PPM images keep their format; JPEG and other lossy inputs are written as PNG
(lossless) unless --format keep (then JPEG is re-encoded, which changes pixels everywhere). Videos use the
lossless FFV1 codec (.avi/.mkv kept, other containers written as .mkv). COCO mode always keeps file names.
""" % REPORT_NAME


def _color(text: str) -> tuple[int, int, int]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"colour must be R,G,B integers, got {text!r}") from None
    if len(vals) != 3 or not all(0 <= v <= 255 for v in vals):
        raise argparse.ArgumentTypeError(f"colour must be three integers in 0..255, got {text!r}")
    return vals


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "anonymize",
        help="replace every face in images, folders, videos or COCO sets",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT", help="image files, folders or video files")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not be or hold an input)")
    p.add_argument("--model", metavar="RUN", help="trained teacher (toolkit train) or student (toolkit distill) run")
    p.add_argument("--method", choices=METHODS, default="ddpm",
                   help="ddpm: generate faces with --model (default); blur / pixelate / mask: classical "
                        "baselines on the face box, no model needed")
    g = p.add_argument_group("COCO keypoint datasets")
    g.add_argument("--coco", metavar="ANN_JSON", help="COCO annotation file; anonymize all its images")
    g.add_argument("--images-root", metavar="DIR", help="folder the annotation's file_name entries are relative to")
    g = p.add_argument_group("policy")
    g.add_argument("--on-miss", choices=ON_MISS, default="refuse",
                   help="a face that could not be replaced: refuse = do not write the image (default); "
                        "mask = write it with that face masked")
    g.add_argument("--facing-away", choices=FACING_AWAY, default="blur",
                   help="--method ddpm, a head seen from behind (its left/right keypoint pairs in back-view "
                        "order): blur = blur its box, since the model only generates faces and would turn the "
                        "person round (default); generate = replace it like any face")
    g.add_argument("--min-generate", type=float, default=DEFAULT_MIN_GENERATE, metavar="PX",
                   help="--method ddpm: faces smaller than PX (box, longer side) are pixelated into "
                        "--pixel-blocks cells instead of generated; at that size the mosaic holds no more "
                        f"identity than the face, and keeps the hair a pose model reads (default {DEFAULT_MIN_GENERATE}"
                        "; 0 = generate every face)")
    g.add_argument("--require-face", action="store_true",
                   help="refuse images (and videos with a frame) where no face is detected, instead of "
                        "writing them unchanged")
    g = p.add_argument_group("generation (--method ddpm)")
    g.add_argument("--seed", type=int, default=0,
                   help="random seed: face k of each image uses seed+k, person t of a video (track t) seed+t, so "
                        "results do not depend on batching or on the number of processes (default 0)")
    g.add_argument("--steps", type=_positive_int, help="sampling steps (default: the model's own)")
    g.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (default: the model's own)")
    g.add_argument("--rg-weight", type=float, help="reconstruction guidance weight (default: the model's own)")
    g.add_argument("--scheduler", help="sampling scheduler, e.g. ddpm or ddim (default: the model's own)")
    g.add_argument("--prior-strength", type=float, default=DEFAULT_PRIOR_STRENGTH,
                   help="start sampling from the model's mean face on each face's keypoints, noised this far "
                        "(SDEdit; 1 = from pure noise; models without a face prior always start from noise; "
                        "default %(default)s)")
    g.add_argument("--batch-size", type=_positive_int, default=16,
                   help="faces generated together (across the faces of an image or video frames; default 16)")
    g.add_argument("--device", default="auto", help="auto (GPU if present), cpu or cuda (default auto)")
    g.add_argument("--feather", type=float, default=DEFAULT_FEATHER,
                   help=f"blend width outside the face box, as a fraction of the face size (default {DEFAULT_FEATHER})")
    g = p.add_argument_group("baselines")
    g.add_argument("--blur-sigma", type=float, help="Gaussian blur sigma in pixels (default: face side / 8)")
    g.add_argument("--pixel-blocks", type=_positive_int, default=DEFAULT_PIXEL_BLOCKS,
                   help=f"pixelate: cells along the face box's longer side (default {DEFAULT_PIXEL_BLOCKS})")
    g.add_argument("--mask-color", type=_color, default=(0, 0, 0), metavar="R,G,B",
                   help="fill colour of --method mask and --on-miss mask (default 0,0,0)")
    g = p.add_argument_group("output")
    g.add_argument("--format", choices=("lossless", "keep"), default="lossless",
                   help="lossless (default): PNG/FFV1 where the input format is lossy; keep: keep every suffix")
    g.add_argument("--fourcc", help="video codec FourCC to force (default FFV1, lossless)")
    g.add_argument("--report", metavar="PATH", help=f"report file (default OUT/{REPORT_NAME})")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g = p.add_argument_group("scale (datasets and videos)")
    g.add_argument("--restart", action="store_true",
                   help="redo every input; by default a re-run into the same --out skips inputs an earlier run "
                        "finished with the same settings (the settings hash in the report)")
    g.add_argument("--no-track", action="store_true",
                   help="videos: seed face k of each frame with --seed + k instead of tracking each person "
                        "(one seed per person for the whole video) and smoothing face boxes over time")
    p.set_defaults(func=run)


def run(args) -> int:
    from toolkit.anonymize.shard import current_shard

    if not args.inputs and not args.coco:
        raise ValueError("no inputs: give image files, folders or videos, or --coco ann.json --images-root DIR")
    if args.fourcc is not None and len(args.fourcc) != 4:
        raise ValueError(f"--fourcc must be 4 characters, got {args.fourcc!r}")
    sampling = {k: v for k, v in (("steps", args.steps), ("cfg_scale", args.cfg_scale),
                                  ("rg_weight", args.rg_weight), ("scheduler", args.scheduler)) if v is not None}
    opts = Options(method=args.method, seed=args.seed, batch_size=args.batch_size, on_miss=args.on_miss,
                   feather=args.feather, blur_sigma=args.blur_sigma, pixel_blocks=args.pixel_blocks,
                   mask_color=tuple(args.mask_color), prior_strength=args.prior_strength,
                   facing_away=args.facing_away, min_generate=args.min_generate, sampling=sampling)
    if args.blur_sigma is not None and not args.blur_sigma > 0:
        raise ValueError(f"--blur-sigma must be positive, got {args.blur_sigma}")
    # Under torchrun / accelerate launch: this process's share of the inputs and its own device.
    shard = current_shard(args.device if args.method == "ddpm" else "cpu")
    try:
        return _run(args, opts, sampling, shard)
    finally:
        shard.close()


def _run(args, opts: Options, sampling: dict, shard) -> int:
    from toolkit.anonymize.runner import anonymize_files, check_sampling, exit_code, load_model

    inpainter = None
    if args.method == "ddpm":
        if not args.model:
            raise ValueError("--method ddpm needs --model RUN (a trained teacher or distilled student run); "
                             "or choose --method blur, pixelate or mask")
        inpainter = load_model(args.model, shard.device)
        check_sampling(inpainter, sampling)
    elif args.model and shard.is_main:
        print(f"toolkit anonymize: note: --model is ignored with --method {args.method}", file=sys.stderr)
    report = anonymize_files(
        args.inputs, args.out, opts, coco=args.coco, images_root=args.images_root, inpainter=inpainter,
        model=args.model if args.method == "ddpm" else None, require_face=args.require_face,
        image_format=args.format, report_path=args.report, progress=not args.quiet and shard.is_main,
        fourcc=args.fourcc, track=not args.no_track, restart=args.restart, shard=shard,
    )
    if not shard.is_main:
        return exit_code(report)
    s = report["summary"]
    resumed = f", {report['resumed_inputs']} of them done by an earlier run" if report["resumed_inputs"] else ""
    print(f"anonymize: {s['written']}/{s['inputs']} written{resumed} ({s['no_face_detected']} with no face "
          f"detected), {s['refused']} refused, {s['error']} unreadable; faces: {s['faces_anonymized']} replaced, "
          f"{s['faces_masked']} masked, {s['faces_failed']} failed; report: "
          f"{args.report or f'{args.out}/{REPORT_NAME}'}")
    for e in report["items"]:
        if e["status"] in ("refused", "error"):
            where = "" if e["reason"].startswith(e["input"]) else f"{e['input']}: "
            print(f"  {e['status']}: {where}{e['reason']}", file=sys.stderr)
    return exit_code(report)
