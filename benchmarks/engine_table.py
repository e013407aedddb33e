"""The int8 engine on Cortex-M: instructions per network and per layer, MAC/instruction, RAM and flash, for the
demo's networks (mcu32 student step, mcu96 pose net), next to TFLM's arena for the same model.

    python benchmarks/engine_table.py                 # both networks, qemu-m4 and qemu-m7
    python benchmarks/engine_table.py --layers        # plus a per-layer table
    python benchmarks/engine_table.py --markdown FILE

How it measures (the same way the firmware is measured):
- the networks are the distill / pose stages' architectures (untrained weights: instruction counts depend on
  the architecture, not on weight values) quantized with NNCF as the quantize stage does, on real photo crops;
- `toolkit export`'s code generator writes the C code (int16 "wide" weights where the fit check allows);
- it is compiled with the firmware's own flags (`toolkit.bench.pio.cortex_m_flags`, i.e. the local
  platform's build_flags.json) for mps2-an386 (Cortex-M4F) and mps2-an500 (Cortex-M7), as the DSP build and
  as the portable C build (-DTK_NO_DSP);
- each runs once under `qemu-system-arm -icount shift=0,align=off,sleep=off` on one real input; SysTick
  ticks x 40 = instructions (the ratio firmware/test/unit checks); the output must equal the Python int8
  reference (toolkit.deploy.int8ref) byte for byte, else the script fails;
- RAM: our arena + model input + output buffers vs TFLM's `arena used` (tflite-micro Python interpreter) for
  the same network's int8 .tflite (which includes its input and output); flash: .text+.rodata+.data of the
  generated model plus the engine, measured with arm-none-eabi-size.
TFLM's own instruction counts are not measured by this script (only its arena): docs/firmware.md quotes the
TFLM + CMSIS-NN figures measured for issue 15.
Not a test: prints Markdown tables.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # real photo crops and student inputs from the test fixtures
sys.path.insert(0, str(Path(__file__).resolve().parent))

TKENGINE = ROOT / "firmware" / "lib" / "tkengine"
HARNESS = ROOT / "tests" / "export_c"
BOARDS = {"qemu-m4": ("mps2_an386", "mps2-an386"), "qemu-m7": ("mps2_an500", "mps2-an500")}
INSTRUCTIONS_PER_TICK = 40  # SysTick at 25 MHz, 1 instruction = 1 ns under -icount shift=0


def pose_model(preset: str, work: Path):
    """The pose stage's PoseNet (untrained) quantized like the quantize stage, plus its TFLite twin."""
    import torch

    import fixtures_export as fx
    from export_table import quantize_net
    from toolkit.pose.model import PoseNet, get_preset

    torch.manual_seed(0)
    net = PoseNet(get_preset(preset)).export_module()
    calib = np.stack(fx.astronaut_crops(16, size=net.resolution, seed=1)).astype(np.float32)
    qdq, tfl = quantize_net(net, calib, work, f"pose_{preset}")
    return (f"PoseNet {preset} (untrained)", qdq, tfl, calib[:1])


def build(gen: Path, name: str, board: str, dsp: bool, work: Path, profile: bool) -> Path:
    from toolkit.bench.pio import cortex_m_flags

    elf = work / f"{name}_{board}_{'dsp' if dsp else 'portable'}{'_layers' if profile else ''}.elf"
    cmd = ["arm-none-eabi-gcc", *cortex_m_flags(BOARDS[board][0]), "--specs=rdimon.specs", "-T",
           str(HARNESS / "mps2.ld"), "-DTK_HARNESS_SYSTICK", *([] if dsp else ["-DTK_NO_DSP"]),
           *(["-DTK_PROFILE_LAYERS"] if profile else []), f"-I{TKENGINE / 'include'}", f"-I{gen}",
           f"-DTK_MODEL={name}_model", f'-DTK_MODEL_HEADER="{name}.h"', str(HARNESS / "mps2_startup.c"),
           str(HARNESS / "harness.c"), str(gen / f"{name}.c"), str(gen / f"{name}_weights.c"),
           *map(str, sorted((TKENGINE / "src").glob("*.c"))), "-o", str(elf)]
    subprocess.run(cmd, check=True)
    return elf


def run_qemu(elf: Path, board: str, q_input: np.ndarray, work: Path) -> tuple[dict, np.ndarray]:
    (work / "in.bin").write_bytes(q_input.tobytes())
    res = subprocess.run(["qemu-system-arm", "-M", BOARDS[board][1], "-nographic", "-monitor", "none", "-serial",
                          "none", "-icount", "shift=0,align=off,sleep=off", "-semihosting-config",
                          "enable=on,target=native,arg=harness,arg=in.bin,arg=out.bin", "-kernel", str(elf)],
                         check=True, capture_output=True, text=True, cwd=work, timeout=900)
    info = dict(kv.split("=") for kv in res.stdout.split())
    return info, np.frombuffer((work / "out.bin").read_bytes(), np.int8)


def flash_bytes(elf_objs: list) -> int:
    out = subprocess.run(["arm-none-eabi-size", "-t", *map(str, elf_objs)], check=True, capture_output=True,
                         text=True).stdout
    text, data = out.strip().splitlines()[-1].split()[:2]
    return int(text) + int(data)


def model_flash(gen: Path, name: str, board: str, work: Path) -> int:
    from toolkit.bench.pio import cortex_m_flags

    objs = []
    for src in [gen / f"{name}.c", gen / f"{name}_weights.c", *sorted((TKENGINE / "src").glob("tk_*.c"))]:
        obj = work / f"{name}_{board}_{src.stem}.o"
        subprocess.run(["arm-none-eabi-gcc", *cortex_m_flags(BOARDS[board][0]), f"-I{TKENGINE / 'include'}",
                        f"-I{gen}", "-c", str(src), "-o", str(obj)], check=True)
        objs.append(obj)
    return flash_bytes(objs)


def measure(label: str, qdq: Path, tflite: Path | None, sample: np.ndarray, boards: list, work: Path,
            layers: bool) -> dict:
    from export_table import tflm_arena
    from toolkit.deploy import codegen, int8ref
    from toolkit.deploy.ir import load_qdq

    graph = load_qdq(qdq)
    name = codegen.c_name(label)[:40]
    files, report = codegen.generate(graph, name, source_name=qdq.name)
    gen = work / f"gen_{name}"
    codegen.write_files(files, gen)
    q_in = int8ref.quantize_input(graph, sample)
    expected = int8ref.run(graph, q_in).reshape(-1)
    row = {"model": label, "macs": report["macs"], "ram": report["arena_bytes"] + graph.tensors[graph.input].size
           + graph.tensors[graph.output].size, "tflm": tflm_arena(tflite) if tflite else None,
           "flash": model_flash(gen, name, boards[0], work), "instr": {}, "layers": None}
    for board in boards:
        for dsp in (False, True):
            info, got = run_qemu(build(gen, name, board, dsp, work, False), board, q_in, work)
            if int(info["rc"]) != 0 or not np.array_equal(got, expected):
                raise SystemExit(f"{label} on {board} ({'DSP' if dsp else 'portable'}): output differs from the "
                                 "Python int8 reference")
            row["instr"][(board, dsp)] = int(info["ticks"]) * INSTRUCTIONS_PER_TICK
    if layers:
        info, _ = run_qemu(build(gen, name, boards[0], True, work, True), boards[0], q_in, work)
        ticks = [int(t) for t in info["layer_ticks"].split(",")]
        row["layers"] = [(layer, t * INSTRUCTIONS_PER_TICK) for layer, t in zip(report["layers"], ticks)]
    return row


def table(rows: list, boards: list) -> str:
    head = "| model | MACs |"
    sep = "|---|---:|"
    for board in boards:
        for build_name in ("portable", "DSP"):
            head += f" {board} {build_name}: instructions (MAC/instr) |"
            sep += "---:|"
    head += " RAM B (arena + I/O) | TFLM arena B | RAM / TFLM | flash B (model + engine) |"
    sep += "---:|---:|---:|---:|"
    lines = [head, sep]
    for r in rows:
        cells = [r["model"], f"{r['macs']:,}"]
        for board in boards:
            for dsp in (False, True):
                n = r["instr"][(board, dsp)]
                cells.append(f"{n:,} ({r['macs'] / n:.2f})")
        tflm = r["tflm"]
        cells += [f"{r['ram']:,}", "n/a" if tflm is None else f"{tflm:,}",
                  "n/a" if tflm is None else f"{r['ram'] / tflm:.2f}", f"{r['flash']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def layer_table(row: dict, board: str) -> str:
    lines = [f"{row['model']}, {board} DSP build, per layer:", "",
             "| # | layer | kernel | output | MACs | instructions | MAC/instr |", "|---:|---|---|---|---:|---:|---:|"]
    for layer, n in row["layers"]:
        shape = "x".join(map(str, layer["output"]["shape"][1:]))
        ratio = f"{layer['macs'] / n:.2f}" if layer["macs"] and n else "-"
        lines.append(f"| {layer['index']} | {layer['name']} | {layer['kernel']} | {shape} | {layer['macs']:,} | {n:,} | "
                     f"{ratio} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", action="append", choices=sorted(BOARDS), help="default: qemu-m4 and qemu-m7")
    ap.add_argument("--layers", action="store_true", help="also a per-layer table (first board, DSP build)")
    ap.add_argument("--markdown", help="also write the tables to this file")
    args = ap.parse_args(argv)
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (scripts/setup.sh installs the embedded toolchain)")
    boards = args.board or sorted(BOARDS)
    from export_table import student_preset_model

    with tempfile.TemporaryDirectory(prefix="engine-table-") as tmp:
        work = Path(tmp)
        models = [student_preset_model("mcu32", work), pose_model("mcu96", work)]
        rows = [measure(*m, boards, work, args.layers) for m in models]
    text = table(rows, boards)
    if args.layers:
        text += "\n\n" + "\n\n".join(layer_table(r, boards[0]) for r in rows)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
