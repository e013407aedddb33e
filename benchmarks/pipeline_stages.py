"""Per-stage cost of the on-device anonymization pipeline on an MCU core under QEMU.

Runs `toolkit bench --pipeline` (export, build, real frames, bit-exact check against the host reference) and
prints one Markdown table: per stage the mean QEMU icount ticks, the instruction count (ticks x 40 under
`-icount shift=0`), its share of the frame, and the RAM per buffer and flash of the whole pipeline against
the stm32h743 / esp32s3 budgets.

    python benchmarks/pipeline_stages.py --pose runs/pose-q --model runs/student-q [--board qemu-m4] [--json FILE]

Works on a private copy of the firmware project (never touches firmware/generated/).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pose", required=True, help="quantized pose model run directory")
    ap.add_argument("--model", required=True, help="quantized student run directory")
    ap.add_argument("--board", default="qemu-m7", choices=("qemu-m7", "qemu-m4"))
    ap.add_argument("--frames", type=int, default=2, help="real frames to average over (plus one blank)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per frame")
    ap.add_argument("--json", metavar="FILE", default=None,
                    help="also write the printed tables as JSON (benchmarks/_json_tables.py)")
    args = ap.parse_args(argv)
    from _json_tables import capture_tables  # beside this script

    capture_tables(args.json)

    from toolkit.onboard import bench as pipeline

    with tempfile.TemporaryDirectory(prefix="pipeline-stages-") as tmp:
        ns = argparse.Namespace(
            pipeline=True, pose=args.pose, model=args.model, board=args.board, port=None, frames=args.frames,
            seed=args.seed, out=str(Path(tmp) / "pipe.json"), name=None, target=None, timeout=args.timeout,
            baud=115200, firmware_dir=str(Path(tmp) / "fw"), visible_peak=None)
        result = pipeline.bench_pipeline(ns)
    result.pop("_frames", None)
    s = result["summary"]
    print(f"## anonymize_frame on {args.board}: per stage")
    print(f"pose {result['pipeline']['models'][0]}, student {', '.join(result['pipeline']['models'][1:])}; "
          f"{s['faces_found']} of {s['frames']} frames with a face; bit-exact with the host: "
          f"{'yes' if s['all_bit_exact'] else 'NO'}")
    print()
    print(pipeline.stage_table(result))
    print()
    print("## networks")
    print("| network | MACs | weights (flash) | arena |")
    print("|---|---:|---:|---:|")
    for name, m in result["models"].items():
        print(f"| {name} | {m['macs']:,} | {m['weights']:,} B | {m['arena']:,} B |")
    return 0 if s["all_bit_exact"] and s["fail_closed"] else 1


if __name__ == "__main__":
    sys.exit(main())
