"""`toolkit pose train|eval`: the microcontroller pose estimator (see toolkit/pose/__init__.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pose",
        help="train / evaluate the tiny pose estimator on anonymized images",
        description="A conv-only heatmap pose estimator (96x96 RGB -> the 7 FDF keypoints, <= 250k parameters) "
                    "distilled from the BlazePose teacher, or trained from human COCO keypoint labels (--coco). "
                    "Training images are anonymized first (the labels come from the ORIGINAL images or the "
                    "annotation file); evaluation is on original images.",
    )
    sub = p.add_subparsers(dest="pose_command", metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    t = sub.add_parser("train", help="train a pose model on (anonymized) images", formatter_class=fmt,
                       description="Label every person of the images with the BlazePose teacher (or take human "
                                   "labels from a COCO person-keypoints file with --coco), anonymize the "
                                   "images with --method (images that cannot be fully anonymized are never "
                                   "used), and train the pose model on augmented crops. Writes a "
                                   "'pose' artifact (config.json + safetensors + toolkit.json) that "
                                   "`toolkit quantize` accepts.")
    t.add_argument("--images", metavar="DIR", help="folder of training photos (searched recursively), labelled by "
                                                   "the BlazePose teacher")
    t.add_argument("--coco", metavar="ANN_JSON", help="COCO person-keypoints file: human labels instead of the "
                                                      "teacher (the 7 points of COCO's 17; crowds ignored)")
    t.add_argument("--images-root", metavar="DIR", help="with --coco: the folder its file_name entries are in")
    t.add_argument("--out", required=True, metavar="RUN", help="new directory for the pose run")
    t.add_argument("--method", choices=("ddpm", "blur", "pixelate", "mask", "original"), default=None,
                   help="how training images are anonymized (default: ddpm, which needs --model; 'original' "
                        "trains on the raw faces)")
    t.add_argument("--model", default=None, metavar="TEACHER_RUN",
                   help="teacher or student run that generates the replacement faces (--method ddpm)")
    t.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    t.add_argument("--size", type=int, default=96, help="model input size (pixels, divisible by 16)")
    t.add_argument("--preset", default="mcu96", help="architecture preset: mcu96 (~230k params), tiny, or multi96 / multi_tiny (multi-person: head centres + keypoint offsets, for the frame pipeline), or heads96 / heads_tiny (the frame pipeline's face-presence verifier, toolkit.pose.heads)")
    t.add_argument("--replaced-by", nargs=2, default=None, metavar=("POSE_Q", "STUDENT_Q"),
                   help="verifier presets (heads96, heads_tiny): the quantized multi-person pose net and student of "
                        "the frame pipeline to verify; half of each batch is that pipeline's output on frames of the "
                        "training regions, its replaced faces as negatives and the faces it missed as positives")
    t.add_argument("--replaced-frames", type=int, default=200, metavar="N",
                   help="pipeline output frames made for --replaced-by")
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--anonymize-steps", type=int, default=None, metavar="N",
                   help="sampling steps of the face generator (default: the run's own)")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=run_train)

    e = sub.add_parser("eval", help="PCK / OKS of a pose model on original images, against the teacher or COCO "
                                    "labels", formatter_class=fmt)
    e.add_argument("--images", metavar="DIR", help="folder of ORIGINAL photos (held out from training), labelled by "
                                                   "the BlazePose teacher")
    e.add_argument("--coco", metavar="ANN_JSON", help="COCO person-keypoints file (held out): OKS, AP and PCK "
                                                      "against its labels, scored with pycocotools")
    e.add_argument("--images-root", metavar="DIR", help="with --coco: the folder its file_name entries are in")
    e.add_argument("--model", required=True, metavar="RUN", help="pose run directory (`toolkit pose train --out`)")
    e.add_argument("--views", type=int, default=4, help="views per person (1 = only the centred view); --images only")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    e.add_argument("--no-progress", action="store_true")
    e.set_defaults(func=run_eval)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _label_source(args) -> None:
    if args.images is not None and args.coco is not None:
        raise ValueError("give --images DIR (BlazePose pseudo-labels) or --coco ANN.json --images-root DIR "
                         "(human labels), not both")
    if args.images is None and args.coco is None:
        raise ValueError("give --images DIR (BlazePose pseudo-labels) or --coco ANN.json --images-root DIR "
                         "(human labels)")
    if args.coco is not None and args.images_root is None:
        raise ValueError("--coco needs --images-root DIR (the folder the annotation's file_name entries are in)")
    if args.images_root is not None and args.coco is None:
        raise ValueError("--images-root is only used with --coco")


def run_train(args) -> int:
    from toolkit.pose.train import TrainSettings, train_pose

    _label_source(args)
    if args.size % 16 or args.size < 32:
        raise ValueError(f"--size must be a multiple of 16 and >= 32, got {args.size}")
    settings = TrainSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                             preset=args.preset, size=args.size, threads=args.threads)
    sampling = {"steps": args.anonymize_steps} if args.anonymize_steps else None
    replaced_from = None
    if args.replaced_by:
        from toolkit.onboard.config import build_pipeline
        from toolkit.onboard.frames import replaced_bank

        pipe = build_pipeline(args.replaced_by[0], args.replaced_by[1], "pose_step0", "student")
        if not pipe.multi_person:
            raise ValueError(f"--replaced-by {args.replaced_by[0]}: give the multi-person pose net the pipeline runs")

        def replaced_from(regions):
            return replaced_bank(regions, pipe, args.replaced_frames, seed=args.seed + 77)
    m = train_pose(args.images, args.out, coco=args.coco, images_root=args.images_root, method=args.method,
                   model_run=args.model, settings=settings, sampling=sampling, progress=not args.no_progress,
                   replaced_from=replaced_from)
    skipped = len(m["data"]["images_skipped"])
    if m.get("verifier"):
        v = m["verifier"]
        print(f"verifier threshold {v['threshold']:.4f} (lowest face score {v['lowest_face_score']:.3f} on "
              f"{v['faces']} faces of {v['frames']} frames composed from the training regions, / {v['margin']})")
    print(f"wrote {args.out}: pose model ({m['params']:,} parameters, {m['macs']:,} MACs per frame), trained on "
          f"{m['data']['people']} people ({'COCO' if m['labels'] == 'coco' else 'teacher'} labels) from "
          f"{m['data']['images_used']} '{m['method']}' image(s)" + (f" ({skipped} skipped)" if skipped else "")
          + f"; loss {m['training']['loss_first']:.3f} -> {m['training']['loss_last']:.3f}")
    return 0


def run_eval(args) -> int:
    from toolkit.pose.evaluate import evaluate_coco, evaluate_pose, format_coco_report, format_report

    _label_source(args)
    if args.views < 1:
        raise ValueError("--views must be >= 1")
    if args.coco is not None:
        report = evaluate_coco(args.coco, args.images_root, args.model, progress=not args.no_progress)
        print(format_coco_report(report))
    else:
        report = evaluate_pose(args.images, args.model, views_per_person=args.views, seed=args.seed,
                               progress=not args.no_progress)
        print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
