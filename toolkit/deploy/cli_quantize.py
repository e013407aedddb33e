"""`toolkit quantize --model RUN --target NAME --out DIR`: int8 quantization of a distilled student (or a pose
model) for a board. The student's inputs and the work live in `toolkit.distill.quantize`, the pose model's in
`toolkit.pose.quantize`; both use the shared pipeline of `toolkit.deploy.quantize`.
"""

from __future__ import annotations

import json
import math

def format_table(manifest: dict) -> str:
    rows = [
        ("PSNR int8 ONNX-QDQ vs float (dB)", "psnr_int8_onnx_db"),
        ("PSNR PTQ-only int8 vs float (dB)", "psnr_ptq_int8_onnx_db"),
        ("int8 reference vs onnxruntime (max LSB)", "int8_reference_vs_onnxruntime_max_lsb"),
        ("PSNR .tflite (TFLM) vs float (dB)", "psnr_tflite_tflm_db"),
        ("ONNX-QDQ size (bytes)", "qdq_onnx_bytes"),
        ("tflite size (bytes)", "tflite_bytes"),
        ("TFLM arena (bytes)", "tflm_arena_bytes"),
    ]
    steps = manifest["steps"]
    keys = sorted(steps, key=int)
    fit_rows = [("weights in flash (bytes)", "weight_bytes"), ("peak activations (bytes)", "peak_activation_bytes"),
                ("flash budget (bytes)", "flash_budget_bytes"), ("RAM budget (bytes)", "ram_budget_bytes")]

    def fmt(v):
        if v is None:
            return "n/a"
        if isinstance(v, float):
            return "inf" if math.isinf(v) else f"{v:.2f}"
        return str(v)

    width = max(len(r[0]) for r in rows + fit_rows)
    lines = [f"{'target ' + manifest['target']:<{width}}  " + "  ".join(f"{'step ' + k:>10}" for k in keys)]
    for label, key in rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{fmt(steps[k]['metrics'].get(key)):>10}" for k in keys))
    for label, key in fit_rows:
        lines.append(f"{label:<{width}}  " + "  ".join(f"{fmt(steps[k]['fit'].get(key)):>10}" for k in keys))
    if "fit" in manifest:
        f = manifest["fit"]
        lines.append(f"all steps together: {f['total_weight_bytes']} bytes of weights in flash "
                     f"(budget {f['flash_budget_bytes']})")
    notes = {steps[k]["metrics"].get("int8_reference_note") for k in keys} - {None}
    lines += [f"note: {n}" for n in sorted(notes)]
    return "\n".join(lines)


def register(subparsers) -> None:
    from toolkit.deploy.quantize import QuantizeSettings

    p = subparsers.add_parser(
        "quantize",
        help="NNCF quantization-aware fine-tuning and int8 export",
        description=(
            "Quantize a distilled student (or a pose model) to int8 for a board: NNCF post-training init (MIXED preset: symmetric "
            "per-channel int8 weights, asymmetric per-tensor int8 activations, overflow fix off), "
            "quantization-aware fine-tuning against the float model on real face crops, then ONNX-QDQ "
            "(canonical), an NNCF checkpoint, a fit check against the board profile and a recalibrated int8 "
            ".tflite checked in TFLite Micro."
        ),
    )
    p.add_argument("--model", required=True, metavar="RUN",
                   help="student run (`toolkit distill --out`) or pose run (`toolkit pose train`) directory")
    p.add_argument("--target", required=True, metavar="NAME", help="board profile name (see `toolkit boards`)")
    p.add_argument("--out", required=True, metavar="DIR", help="new directory for the quantized artifact")
    p.add_argument("--qat-steps", type=int, default=300, metavar="N",
                   help="quantization-aware fine-tuning steps per step network; 0 = post-training only "
                   "(default %(default)s)")
    p.add_argument("--calib", type=int, default=64, metavar="N",
                   help="real inputs for post-training statistics (default %(default)s)")
    p.add_argument("--step", default="all", metavar="K|all",
                   help="which student step network(s) to quantize (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="fine-tuning batch size (default %(default)s)")
    p.add_argument("--lr", type=float, default=QuantizeSettings.lr,
                   help="fine-tuning learning rate of the weights; quantizer ranges get 10x (default %(default)s)")
    p.add_argument("--eval", type=int, default=16, metavar="N",
                   help="held-out inputs for the PSNR figures (default %(default)s)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="FDF dataset for calibration (default: the one the student was trained on)")
    p.add_argument("--seed", type=int, default=0, help="seed of input draws and noise (default %(default)s)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads while quantizing (default: torch's; 1 is often fastest for MCU-sized nets)")
    p.add_argument("--no-tflite", action="store_true", help="skip the .tflite export and the TFLM check")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from toolkit.deploy.quantize import QuantizeSettings

    if args.qat_steps < 0 or args.calib < 1 or args.eval < 1 or args.batch_size < 1 or not args.lr > 0:
        raise ValueError("--qat-steps must be >= 0, --lr > 0, and --calib, --eval, --batch-size >= 1")
    settings = QuantizeSettings(calib=args.calib, qat_steps=args.qat_steps, batch_size=args.batch_size,
                                eval_inputs=args.eval, seed=args.seed, threads=args.threads, lr=args.lr)
    from toolkit.artifacts import read_manifest

    # Refuse anything else up front, naming both kinds this verb takes.
    stage = read_manifest(args.model, expect_stage=("student", "pose")).get("stage")
    if stage == "pose":  # the pose model (toolkit.pose) brings its own inputs
        from toolkit.pose.quantize import quantize_pose

        manifest = quantize_pose(args.model, args.target, args.out, settings, tflite=not args.no_tflite,
                                 progress=not args.no_progress)
    else:
        from toolkit.distill.quantize import quantize_student

        manifest = quantize_student(args.model, args.target, args.out, settings, steps=args.step, data=args.data,
                                    tflite=not args.no_tflite, progress=not args.no_progress)
    print(format_table(manifest))
    print(f"wrote {args.out} ({json.dumps(sorted(manifest['steps']))} step network(s))")
    return 0
