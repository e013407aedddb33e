"""`toolkit bench`: run an int8 model on a board or under QEMU, check it bit for bit, collect timings.

    toolkit bench --board qemu-m7 --model runs/student-q -n 5 --out bench/student-m7.json
    toolkit bench --port /dev/ttyACM0 --model student --out bench/student-h743.json
    toolkit bench --pipeline --pose runs/pose-q --model runs/student-q --board qemu-m7 --out bench/pipe.json

For --board the firmware is exported/built here (QEMU boards are started under `-icount`); for --port the
board must already run the benchmark firmware with the model built in (`pio run -e nucleo_h743zi -t upload`).
Writes FILE (JSON), FILE with .csv and .png beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from toolkit.bench import firmware
from toolkit.bench.protocol import Device, DeviceError, crc32, selftest_input
from toolkit.bench.transport import ICOUNT_INSNS_PER_TICK, open_device, unit_note

BOARDS = ("qemu-m4", "qemu-m7", "native")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="run a model on a board or QEMU and collect timings",
        description="Export (if needed) and build the benchmark firmware, run an int8 model on real face "
                    "crops, check the device output is bit-exact with the host int8 reference, and write "
                    "timings (cycles on hardware, icount_ticks under QEMU, ns on the host) as JSON, CSV "
                    "and a plot.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--board", choices=BOARDS, help="build the firmware and run it here (QEMU or host)")
    where.add_argument("--port", help="serial device or pyserial URL of a board running the firmware")
    p.add_argument("--model", required=True,
                   help="quantized run directory or QDQ .onnx (exported into the firmware project it builds), or the "
                        "name of a model already exported there")
    p.add_argument("-n", "--runs", type=int, default=3, help="timed inferences per input")
    p.add_argument("--inputs", type=int, default=3, help="real face crops to run (astronaut, mirrored, LFW...)")
    p.add_argument("--out", required=True, help="results JSON path (CSV and PNG are written beside it)")
    p.add_argument("--name", default=None, help="C name for the exported model (default: from the model)")
    p.add_argument("--target", default=None,
                   help="board profile for the export's fit check (default: --board, or qemu-m7 with --port)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds allowed per inference (and, up to 30, per protocol command) before giving up")
    p.add_argument("--baud", type=int, default=115200, help="baud rate for --port")
    p.add_argument("--firmware-dir", default=None,
                   help="firmware project to export into and build (default: the toolkit's build folder "
                        "$TOOLKIT_HOME/firmware, a copy of the bundled project)")
    pp = p.add_argument_group("on-device pipeline (--pipeline; see toolkit/onboard/bench.py)")
    pp.add_argument("--pipeline", action="store_true",
                    help="benchmark the whole anonymize_frame pipeline (pose -> face box -> student -> paste) "
                         "on real frames instead of one model; --model is the quantized student")
    pp.add_argument("--pose", default=None, help="quantized pose model run directory (with --pipeline)")
    pp.add_argument("--verifier", default=None, metavar="VERIFIER_Q",
                    help="quantized face-presence verifier (a `toolkit pose train --preset heads96` run, quantized): "
                         "run on every output frame; a face it sees outside the replaced boxes fails the frame")
    pp.add_argument("--frames", type=int, default=None,
                    help="real frames to anonymize (plus one without a person; default 3)")
    pp.add_argument("--frames-from", default=None, metavar="DIR",
                    help="anonymize your own frames instead (every image in DIR, any size, letterboxed to the pose "
                         "input); per frame: status, reason, boxes, keypoints and ticks in the JSON, PNGs in/out "
                         "in FILE_frames/")
    pp.add_argument("--seed", type=int, default=None,
                    help="noise seed of the first frame (frame i uses seed + i; default 0)")
    pp.add_argument("--visible-peak", type=float, default=None,
                    help="heatmap peak (fraction of 1.0) at which a keypoint counts as seen (default: "
                         "toolkit.onboard.config.VISIBLE_PEAK, VISIBLE_PEAK_MULTI for a multi-person net)")
    p.set_defaults(func=run)


def _graph_for(onnx_path: Path):
    from toolkit.deploy.ir import load_qdq

    return load_qdq(onnx_path)


def _resolve_models(args, fw_dir: Path, target: str) -> list[tuple[str, Path]]:
    """[(model name in the firmware, QDQ onnx for the reference)]: one per step network of a student."""
    model = Path(args.model)
    if model.exists():
        return firmware.export_model(model, target, fw_dir, args.name)
    if "/" in args.model or args.model.endswith(".onnx"):
        raise FileNotFoundError(f"--model {args.model}: no such file or directory")
    return firmware.resolve_exported(args.model, fw_dir)


def _check_model(dev: Device, info: dict, name: str, graph) -> dict:
    if name not in info["names"]:
        have = ", ".join(info["names"]) or "none"
        raise DeviceError(f"wrong firmware: model '{name}' is not built in (it has: {have}); "
                          "rebuild and flash the firmware with this model")
    m = dev.model(name)
    t_in, t_out = graph.tensors[graph.input], graph.tensors[graph.output]
    if m["in_shape"] != list(t_in.shape) or m["out_shape"] != list(t_out.shape):
        raise DeviceError(f"wrong firmware: '{name}' on the device has input {m['in_shape']} / output "
                          f"{m['out_shape']}, the reference model {list(t_in.shape)} / {list(t_out.shape)}")
    if m["in_zp"] != t_in.zero_point or m["out_zp"] != t_out.zero_point:
        raise DeviceError(f"wrong firmware: '{name}' has other quantization parameters than the reference")
    return m


def bench(args) -> dict:
    from toolkit.bench.inputs import model_inputs
    from toolkit.deploy import int8ref

    if args.runs < 1 or args.inputs < 1:
        raise ValueError("-n/--runs and --inputs must be at least 1")
    fw_dir = firmware.project_dir(args.firmware_dir)
    target = getattr(args, "target", None) or args.board or "qemu-m7"
    units = [(name, onnx, _graph_for(onnx)) for name, onnx in _resolve_models(args, fw_dir, target)]
    per_infer_timeout = float(args.timeout)
    floats_by_shape = {}

    rows, models, selftests = [], {}, {}
    with open_device(args, fw_dir, timeout=min(30.0, per_infer_timeout)) as (link, meta):
        dev = Device(link)
        ident = dev.identify()
        info = dev.info()
        unit = info["timer"]
        for name, onnx_path, graph in units:
            mdl = _check_model(dev, info, name, graph)
            models[name] = {"source": str(onnx_path), **{k: mdl[k] for k in (
                "input", "output", "arena", "weights", "macs", "in_shape", "out_shape")}}
            t_in = graph.tensors[graph.input]
            n_, h, w, c = t_in.shape
            if (n_, c, h, w) not in floats_by_shape:
                floats_by_shape[(n_, c, h, w)] = model_inputs((n_, c, h, w), args.inputs)
            floats = floats_by_shape[(n_, c, h, w)]

            # self-test: the firmware's built-in input, checked against the reference by CRC
            st_ref = int8ref.run(graph, selftest_input(t_in.size).reshape(t_in.shape))
            st = dev.selftest(name, timeout=per_infer_timeout + 30)
            selftests[name] = {"crc_device": f"{st['crc']:08x}", "crc_reference": f"{crc32(st_ref.tobytes()):08x}",
                               "bit_exact": st["crc"] == crc32(st_ref.tobytes()), "ticks": st["ticks"],
                               "unit": st["unit"]}

            where = meta.get("board") or args.port
            for label, x in tqdm(floats, desc=f"bench {name} on {where}", unit="input"):
                q = int8ref.quantize_input(graph, x)
                ref = int8ref.run(graph, q)
                dev.load(name, q)
                t0 = time.monotonic()
                timing = dev.infer(name, args.runs, timeout=per_infer_timeout * args.runs + 30)
                wall = time.monotonic() - t0
                got = dev.results(mdl["output"]).reshape(ref.shape)
                diff = np.abs(got.astype(np.int16) - ref.astype(np.int16))
                rows.append({
                    "model": name, "input": label, "runs": timing["n"], "unit": timing["unit"],
                    "total": timing["total"], "min": timing["min"], "max": timing["max"],
                    "mean": timing["total"] / timing["n"], "wall_s": round(wall, 3),
                    "bit_exact": bool(diff.max() == 0), "max_abs_diff_lsb": int(diff.max()),
                    "mismatched_values": int((diff > 0).sum()), "output_crc": f"{timing['crc']:08x}",
                })

    per_model = {}
    for name in models:
        mine = [r for r in rows if r["model"] == name]
        mean = float(np.mean([r["mean"] for r in mine]))
        pm = {"mean_per_inference": mean, "min_per_inference": min(r["min"] for r in mine),
              "max_per_inference": max(r["max"] for r in mine), "macs": int(models[name]["macs"]),
              "macs_per_unit": models[name]["macs"] / mean if mean else None}
        if unit == "icount_ticks":
            pm["instructions_per_inference"] = mean * ICOUNT_INSNS_PER_TICK
            pm["instructions_per_mac"] = mean * ICOUNT_INSNS_PER_TICK / pm["macs"] if pm["macs"] else None
        if unit == "cycles" and int(info.get("clock_hz", 0)):
            pm["ms_per_inference"] = mean / int(info["clock_hz"]) * 1e3
        if unit == "ns":
            pm["ms_per_inference"] = mean / 1e6
        per_model[name] = pm
    summary = {
        "unit": unit, "models": per_model,
        # one anonymized face = one pass through every step network
        "per_image": sum(pm["mean_per_inference"] for pm in per_model.values()),
        "macs_per_image": sum(pm["macs"] for pm in per_model.values()),
        "all_bit_exact": all(r["bit_exact"] for r in rows) and all(s["bit_exact"] for s in selftests.values()),
    }
    if unit == "icount_ticks":
        summary["instructions_per_image"] = summary["per_image"] * ICOUNT_INSNS_PER_TICK
    return {
        "tool": "toolkit bench", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(), "models": models,
        "device": {**meta, "firmware": ident.fields, "info": info},
        "timer": {"unit": unit, "note": unit_note(unit)},
        "selftest": selftests, "runs_per_input": args.runs, "results": rows, "summary": summary,
        "_previews": [(label, _preview(x)) for label, x in next(iter(floats_by_shape.values()))],
    }


def _preview(x) -> np.ndarray:
    """An RGB view of one input for the plot: the masked face crop (student) or the image channels."""
    x = np.asarray(x)[0]
    rgb = x[3:6] if x.shape[0] == 14 else x[:3] if x.shape[0] >= 3 else np.repeat(x[:1], 3, 0)
    return ((np.clip(rgb, -1, 1) + 1) * 127.5).round().astype(np.uint8).transpose(1, 2, 0)


def write_outputs(result: dict, out: Path) -> tuple[Path, Path, Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    previews = result.pop("_previews", [])
    out.write_text(json.dumps(result, indent=2) + "\n")
    csv_path, png_path = out.with_suffix(".csv"), out.with_suffix(".png")
    rows = result["results"]
    with csv_path.open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        wr.writeheader()
        wr.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit = result["timer"]["unit"]
    n = max(len(rows), len(previews))
    fig = plt.figure(figsize=(max(5, 1.6 * n + 2), 5.2 if previews else 3.8))
    grid = fig.add_gridspec(2 if previews else 1, max(n, 1), height_ratios=[3, 1.3] if previews else [1])
    ax = fig.add_subplot(grid[0, :])
    for i, (label, img) in enumerate(previews[:n]):
        pa = fig.add_subplot(grid[1, i])
        pa.imshow(img, interpolation="nearest")
        pa.set_title(f"input: {label} (masked)", fontsize=7)
        pa.axis("off")
    multi = len({r["model"] for r in rows}) > 1
    labels = [f"{r['model']}\n{r['input']}" if multi else r["input"] for r in rows]
    means = [r["mean"] for r in rows]
    errs = [[r["mean"] - r["min"] for r in rows], [r["max"] - r["mean"] for r in rows]]
    colors = ["tab:green" if r["bit_exact"] else "tab:red" for r in rows]
    ax.bar(labels, means, yerr=errs, color=colors, capsize=4)
    ax.set_ylabel(f"{unit} per inference")
    where = result["device"].get("board") or result["device"].get("port")
    names = ", ".join(result["models"])
    ax.set_title(f"{names} on {where} ({result['summary']['macs_per_image']:,} MACs per image); "
                 f"green = bit-exact", fontsize=9)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return out, csv_path, png_path


def run(args) -> int:
    # A DeviceError is a RuntimeError: the CLI reports it as a clear error (exit 2).
    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise ValueError(f"--out {out}: give a .json file name (CSV and PNG are written beside it)")
    if getattr(args, "pipeline", False):
        from toolkit.onboard import bench as onboard_bench

        args.frames = 3 if args.frames is None else args.frames
        args.seed = 0 if args.seed is None else args.seed
        return onboard_bench.run(args, out)
    given = [flag for flag in ("pose", "verifier", "frames", "frames_from", "seed", "visible_peak")
             if getattr(args, flag, None) is not None]
    if given:
        raise ValueError(", ".join("--" + f.replace("_", "-") for f in given) + " only apply with --pipeline")
    result = bench(args)
    paths = write_outputs(result, out)
    s = result["summary"]
    where = result["device"].get("board") or args.port
    for name, pm in s["models"].items():
        extra = (f" = {pm['instructions_per_inference']:,.0f} instructions ({pm['instructions_per_mac']:.1f}/MAC)"
                 if "instructions_per_inference" in pm else
                 f" = {pm['ms_per_inference']:.2f} ms" if "ms_per_inference" in pm else "")
        print(f"{name} on {where}: {pm['mean_per_inference']:,.0f} {s['unit']} per inference (min "
              f"{pm['min_per_inference']:,}, max {pm['max_per_inference']:,}){extra}; {pm['macs']:,} MACs")
    if len(s["models"]) > 1:
        print(f"per image ({len(s['models'])} networks): {s['per_image']:,.0f} {s['unit']}")
    crcs = ", ".join(f"{v['crc_device']} vs {v['crc_reference']}" for v in result["selftest"].values())
    print(f"bit-exact with the host int8 reference on {len(result['results'])} runs of real inputs: "
          f"{'yes' if s['all_bit_exact'] else 'NO'} (self-test crc {crcs})")
    print("wrote " + ", ".join(str(p) for p in paths))
    if not s["all_bit_exact"]:
        print("error: the device output differs from the host int8 reference (see max_abs_diff_lsb)",
              file=sys.stderr)
        return 1
    return 0
