"""`toolkit quantize` and `toolkit export`: the command lines of the int8 back end.

    toolkit quantize --model RUN --target NAME --out DIR     # a student or pose run -> "quantized" artifact
    toolkit export --model DIR|QDQ.onnx --target NAME --out DIR [--name NAME]

Quantization is model-specific (inputs, step networks): the run's stage picks its quantizer from `QUANTIZERS`
(the student's in toolkit.distill.quantize, the pose model's in toolkit.pose.quantize), both on the shared
pipeline of toolkit.deploy.quantize. Export is toolkit.deploy.export.
"""

from __future__ import annotations

import importlib
import json
import math

from toolkit.deploy.export import export_all

# stage of the input run -> "module:function(run, target, out, settings, tflite=, progress=, ...)"
QUANTIZERS = {
    "student": "toolkit.distill.quantize:quantize_student",
    "pose": "toolkit.pose.quantize:quantize_pose",
}


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


def register_quantize(subparsers) -> None:
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
    p.set_defaults(func=run_quantize)


def run_quantize(args) -> int:
    from toolkit.deploy.quantize import QuantizeSettings

    if args.qat_steps < 0 or args.calib < 1 or args.eval < 1 or args.batch_size < 1 or not args.lr > 0:
        raise ValueError("--qat-steps must be >= 0, --lr > 0, and --calib, --eval, --batch-size >= 1")
    settings = QuantizeSettings(calib=args.calib, qat_steps=args.qat_steps, batch_size=args.batch_size,
                                eval_inputs=args.eval, seed=args.seed, threads=args.threads, lr=args.lr)
    from toolkit.artifacts import read_manifest

    # Refuse anything else up front, naming both kinds this verb takes; each model brings its own inputs.
    stage = read_manifest(args.model, expect_stage=tuple(QUANTIZERS)).get("stage")
    module, name = QUANTIZERS[stage].split(":")
    quantize = getattr(importlib.import_module(module), name)
    extra = {"steps": args.step, "data": args.data} if stage == "student" else {}
    manifest = quantize(args.model, args.target, args.out, settings, tflite=not args.no_tflite,
                        progress=not args.no_progress, **extra)
    print(format_table(manifest))
    print(f"wrote {args.out} ({json.dumps(sorted(manifest['steps']))} step network(s))")
    return 0


def register_export(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="generate C arrays and int8 inference code",
        description="Lower an int8 QDQ ONNX model to integer ops and generate C99 code for tkengine: constant "
                    "arrays (flash), <name>_invoke() calling the kernels in order, and an arena planned at "
                    "generation time. Fails if the model does not fit the target board.",
        epilog="example: toolkit export --model runs/student-q --target stm32f746 --out firmware/generated "
               "--name student",
    )
    p.add_argument("--model", required=True,
                   help="a `toolkit quantize` artifact directory (stage 'quantized') or a QDQ .onnx file")
    p.add_argument("--target", required=True, help="board profile name (see `toolkit boards`) for the fit check")
    p.add_argument("--out", required=True, help="folder for the generated files (created if missing)")
    p.add_argument("--name", default=None,
                   help="C name of the model (prefix of every symbol and file); default: from the model")
    p.add_argument("--step", type=int, default=None,
                   help="export only this step network of a multi-step student artifact (default: all, "
                        "named <name>_step<k>)")
    p.add_argument("--no-tflite", action="store_true", help="do not embed the artifact's .tflite as a C array")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    reports = export_all(args.model, args.target, args.out, args.name, embed_tflite=not args.no_tflite,
                         step=args.step)
    for report in reports:
        print(f"exported '{report['name']}' ({len(report['layers'])} ops) to {args.out}")
        print(f"  MACs {report['macs']:,}  weights {report['weight_bytes']:,} B  arena {report['arena_bytes']:,} B  "
              f"peak at '{report['peak_layer']['name']}'")
        for layer in report["layers"]:
            out = layer["output"]
            where = "out" if out["location"] == "out" else f"arena+{out['offset']}"
            print(f"  {layer['index']:3d} {layer['kernel']:<24} {'x'.join(map(str, out['shape'][1:])):>12}  "
                  f"{layer['macs']:>10,} MACs  -> {where}{' (in place)' if layer['in_place'] else ''}")
    return 0
