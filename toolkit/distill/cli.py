"""`toolkit distill`: train, inspect and evaluate microcontroller students.

  toolkit distill --teacher RUN --out RUN --steps 1|2|4 [--preset mcu32] [--max-steps N] [--resume] [--data DIR]
  toolkit distill info --preset mcu32 [--per-layer]      (same as: toolkit distill --preset mcu32 --print-budget)
  toolkit distill eval STUDENT_RUN [STUDENT_RUN ...] [--faces N] [--draws K] [--probe-iters N]

eval: the students (e.g. the 1-, 2- and 4-step runs of one teacher) and the teacher inpaint the same held-out
faces (the dataset's val split only, up to --faces, default 64; never training faces) from the same noise.
One table: PSNR and SSIM of each student vs the teacher on the face box, keypoint adherence of the teacher
and each student, and CPU seconds per face. It is printed and stored in every student's toolkit.json
(metrics, and the whole table under metrics.evaluation). With fewer than 8 held-out faces a warning is
printed and stored: such figures are anecdotes.

Keypoint adherence: a small conv keypoint probe (toolkit/distill/probe.py) is trained once on the REAL
training crops of the dataset at the students' resolution (flips, shifts, scale, rotation, colour and blur
jitter; it also sees the face-box mask, and a shape prior around the mean face) and cached in each run's
keypoint_probe/ folder. It reads the nose, eyes and ears of every generated face; kp NME = mean distance to
the keypoints the generator was conditioned on / face-box side sqrt(w*h) (lower is better), PCK@0.2 = share
of points within 0.2 box sides. Reference rows: "real crops" = the probe on the real held-out faces against
their own keypoints (the floor: what real faces score; differences below it mean nothing); "mean keypoints"
= the box-relative training mean, no probe; "noise in the box" = the real crops with noise in the face box
(a generator that draws nothing). The probe's error on the val split and the mean-keypoint baseline's are
printed below the table: a probe that does not beat that baseline tells little. See docs/distill.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ACTIONS = ("train", "info", "eval")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "distill",
        help="distill the teacher into a 1-4 step microcontroller student",
        description=(
            "Distill a trained teacher (CFG + reconstruction guidance baked in) into a conv-only student that "
            "samples in 1, 2 or 4 fixed steps and fits a microcontroller budget. "
            "Actions: train (default), info (parameters and MACs of a preset), eval (student vs teacher)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    p.add_argument("action", nargs="?", default="train", choices=ACTIONS, help="what to do (default: train)")
    p.add_argument("runs", nargs="*", type=Path, help="eval: student run directories to evaluate")
    p.add_argument("--teacher", type=Path, help="teacher run directory (from `toolkit train`)")
    p.add_argument("--out", type=Path, help="output run directory for the student")
    p.add_argument("--steps", type=int, choices=(1, 2, 4), default=1, help="student sampling steps (default 1)")
    p.add_argument("--preset", default="mcu32", help="student preset: mcu32, mcu64 or tiny (default mcu32)")
    p.add_argument("--data", type=Path, help="FDF dataset (default: the teacher's training data)")
    p.add_argument("--max-steps", type=int, default=2000, help="optimizer steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default 2e-3, cosine decay)")
    p.add_argument("--pairs-per-image", type=int, default=1,
                   help="noise draws per training face for the cached teacher targets (default 1)")
    p.add_argument("--max-images", type=int, help="use only the first N training faces")
    p.add_argument("--teacher-steps", type=int,
                   help="teacher DDIM steps for the targets (default: its own); eval: steps of the teacher the "
                        "students are compared with (default 50)")
    p.add_argument("--cfg-scale", type=float, help="teacher classifier-free guidance scale (default: its own)")
    p.add_argument("--rg-weight", type=float, help="teacher reconstruction guidance weight (default: its own)")
    p.add_argument("--teacher-repaint", dest="teacher_repaint", action=argparse.BooleanOptionalAction,
                   default=None, help="RePaint replacement in the teacher's targets (default: the teacher's own "
                                      "sampling default)")
    p.add_argument("--checkpoint-every", type=int, default=200)
    p.add_argument("--eval-faces", "--faces", dest="eval_faces", type=int, default=64,
                   help="held-out (val split) faces for the evaluation, as many as exist up to N (default 64)")
    p.add_argument("--draws", type=int, default=None,
                   help="eval: noise draws per held-out face (more samples from few faces; default 1)")
    p.add_argument("--probe-iters", type=int,
                   help="training iterations of the keypoint probe (default: reuse the run's cached probe, "
                        "else train one with the probe's default)")
    p.add_argument("--no-keypoints", action="store_true",
                   help="eval: skip the keypoint-adherence figures (no probe training)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--stop-after", type=int, metavar="STEP",
                   help="stop (checkpointed) at this optimizer step; continue later with --resume")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--print-budget", action="store_true", help="print parameters and MACs of --preset and exit")
    p.add_argument("--per-layer", action="store_true", help="with info/--print-budget: one line per conv")
    p.add_argument("--resolution", type=int, help="with info: resolution to count at (default: the preset's)")
    p.add_argument("--json", action="store_true", help="info/eval: print JSON instead of a table")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _info(args) -> int:
    from toolkit.distill.student import budget, format_budget

    b = budget(args.preset, args.steps, args.resolution)
    if args.json:
        print(json.dumps(b.to_dict(), indent=2))
    else:
        print(format_budget(b, per_layer=args.per_layer))
    return 0


def _eval(args) -> int:
    from toolkit.distill.evaluate import EVAL_TEACHER_STEPS, evaluate_runs, format_table

    if not args.runs:
        raise ValueError("eval needs one or more student run directories")
    if args.draws is None:
        args.draws = 1
    if args.eval_faces < 1 or args.draws < 1:
        raise ValueError("--faces and --draws must be positive")
    if args.probe_iters is not None and args.probe_iters < 1:
        raise ValueError("--probe-iters must be positive")
    result = evaluate_runs(args.runs, data=args.data, n_faces=args.eval_faces, progress=not args.no_progress,
                           draws=args.draws, probe_iters=args.probe_iters, keypoints=not args.no_keypoints,
                           teacher_steps=args.teacher_steps or EVAL_TEACHER_STEPS)
    print(json.dumps({k: v for k, v in result.items() if k != "grid_rows"}, indent=2) if args.json
          else format_table(result))
    return 0


def _train(args) -> int:
    from toolkit.distill.distill import distill
    from toolkit.distill.evaluate import format_table

    if args.runs:
        raise ValueError(f"unexpected arguments: {' '.join(map(str, args.runs))} (train takes --teacher and --out)")
    if args.teacher is None or args.out is None:
        raise ValueError("training needs --teacher RUN and --out RUN (or use `toolkit distill info --preset P`)")
    if args.draws is not None or args.no_keypoints:
        raise ValueError("--draws and --no-keypoints are options of `toolkit distill eval RUN...`, not of training")
    if args.max_steps < 1 or args.batch_size < 1 or args.pairs_per_image < 1:
        raise ValueError("--max-steps, --batch-size and --pairs-per-image must be positive")
    manifest = distill(
        args.teacher, args.out, args.steps, preset=args.preset, data=args.data, max_steps=args.max_steps,
        batch_size=args.batch_size, lr=args.lr, pairs_per_image=args.pairs_per_image,
        max_images=args.max_images, teacher_steps=args.teacher_steps, cfg_scale=args.cfg_scale,
        rg_weight=args.rg_weight, teacher_repaint=args.teacher_repaint, checkpoint_every=args.checkpoint_every,
        eval_faces=args.eval_faces, probe_iters=args.probe_iters, resume=args.resume, seed=args.seed, progress=not args.no_progress,
        stop_after=args.stop_after,
    )
    if manifest is None:
        return 0
    m = manifest["metrics"]
    print(f"student written to {args.out} ({manifest['steps']} step(s) at timesteps {manifest['timesteps']})")
    print(f"face-region MSE vs the teacher on training pairs: {m['train_face_mse_before']:.4f} before -> "
          f"{m['train_face_mse_after']:.4f} after distillation")
    if m.get("evaluation"):
        print(format_table(m["evaluation"]))
    return 0


def run(args) -> int:
    if args.print_budget or args.action == "info":
        return _info(args)
    if args.action == "eval":
        return _eval(args)
    return _train(args)
