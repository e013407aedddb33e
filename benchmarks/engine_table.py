"""The int8 engine on Cortex-M: instructions per network and per layer, MAC/instruction, RAM and flash, for the
demo's networks (mcu32 student step, mcu96 pose net), next to TFLM's arena for the same model.

    python benchmarks/engine_table.py                 # both networks, qemu-m4 and qemu-m7
    python benchmarks/engine_table.py --layers        # plus a per-layer table
    python benchmarks/engine_table.py --markdown FILE
    python benchmarks/engine_table.py --tflm ~/tflite-micro   # plus TFLM + CMSIS-NN measured side by side

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
- RAM: our arena, which holds the model input and output too (the harness runs them there, at the plan's
  offsets), vs TFLM's `arena used` (tflite-micro Python interpreter) for the same network's int8 .tflite
  (which includes its input and output as well); flash: .text+.rodata+.data of the
  generated model plus the engine, measured with arm-none-eabi-size.
With --tflm DIR (a tflite-micro checkout with its third-party downloads, CMSIS-NN included; see TFLM_HOWTO) it
also builds TFLM + CMSIS-NN for qemu-m4 with TFLM's own Makefile and the same arm-none-eabi-gcc, links
benchmarks/tflm_harness.cc around each network's int8 .tflite, runs it the same way (-icount shift=0, SysTick
around Invoke() only), checks its output byte for byte against the host tflite-micro interpreter on the same
int8 input, and prints TFLM's instructions and on-device arena next to ours. Nothing of TFLM enters the
repository: it is built inside DIR (DIR/gen) and linked in a temporary folder.
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
TFLM_HARNESS = Path(__file__).resolve().parent / "tflm_harness.cc"
TFLM_BOARD = "qemu-m4"
TFLM_MAKE = ["TARGET=cortex_m_generic", "TARGET_ARCH=cortex-m4+fp", "OPTIMIZED_KERNEL_DIR=cmsis_nn",
             "BUILD_TYPE=release"]
TFLM_HOWTO = """TFLM + CMSIS-NN side by side needs a tflite-micro checkout with its third-party downloads:
    git clone https://github.com/tensorflow/tflite-micro ~/tflite-micro
    cd ~/tflite-micro && make -f tensorflow/lite/micro/tools/make/Makefile TARGET=cortex_m_generic \\
        TARGET_ARCH=cortex-m4+fp OPTIMIZED_KERNEL_DIR=cmsis_nn TARGET_TOOLCHAIN_ROOT=$(dirname $(which arm-none-eabi-gcc))/ \\
        third_party_downloads      # fetches flatbuffers, gemmlowp, ruy, kissfft, pigweed, CMSIS, CMSIS-NN
then: python benchmarks/engine_table.py --tflm ~/tflite-micro"""


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
    row = {"model": label, "macs": report["macs"], "ram": report["arena_bytes"], "tflm": tflm_arena(tflite) if tflite else None,
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
        row["banded"] = [tuple(c["ops"]) for c in report.get("banded", [])]
    return row


# ---------------------------------------------------------------------------------------------------------
# TFLM + CMSIS-NN on the same .tflite (--tflm DIR)

def tflm_library(tflm: Path) -> tuple[Path, list]:
    """Build libtensorflow-microlite.a with CMSIS-NN kernels for Cortex-M4F inside the checkout (TFLM's own
    Makefile, our arm-none-eabi-gcc); returns (library, include flags)."""
    make = tflm / "tensorflow/lite/micro/tools/make"
    downloads = make / "downloads"
    missing = [d for d in ("flatbuffers", "gemmlowp", "ruy", "cmsis", "cmsis_nn") if not (downloads / d).is_dir()]
    if not (make / "Makefile").is_file() or missing:
        raise SystemExit(f"{tflm} is not a tflite-micro checkout with its downloads (missing: "
                         f"{', '.join(missing) or 'Makefile'})\n{TFLM_HOWTO}")
    gcc_root = str(Path(shutil.which("arm-none-eabi-gcc")).parent) + "/"
    args = ["make", "-f", "tensorflow/lite/micro/tools/make/Makefile", *TFLM_MAKE, f"TARGET_TOOLCHAIN_ROOT={gcc_root}"]
    res = subprocess.run([*args, "-j2", "microlite"], cwd=tflm, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"the TFLM build failed:\n{(res.stdout + res.stderr)[-3000:]}")
    lib = tflm / "gen" / "cortex_m_generic_cortex-m4+fp_release_cmsis_nn_gcc" / "lib" / "libtensorflow-microlite.a"
    if not lib.is_file():
        raise SystemExit(f"the TFLM build did not produce {lib}")
    incs = [f"-I{tflm}", f"-I{downloads / 'flatbuffers/include'}", f"-I{downloads / 'gemmlowp'}",
            f"-I{downloads / 'ruy'}"]
    return lib, incs


def tflite_ops(tflite: Path) -> list:
    """MicroMutableOpResolver method names (AddConv2D, ...) for the builtin ops a .tflite uses."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(tflite.read_bytes(), 0)
    ops = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        ops.add(names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    return ["Add" + "".join(w.upper() if w[0].isdigit() else w.capitalize() for w in op.split("_"))
            for op in sorted(ops)]


def tflm_measure(tflite: Path, sample: np.ndarray, lib: Path, incs: list, work: Path) -> dict:
    """Instructions and on-device arena of TFLM + CMSIS-NN for one .tflite on qemu-m4; its output must equal
    the host tflite-micro interpreter's on the same int8 input."""
    from toolkit.bench.pio import cortex_m_flags
    from toolkit.deploy.tflite_export import TflmModel, nchw_to_nhwc

    host = TflmModel(tflite, arena_size=8 * 1024 * 1024)
    qp = host.input["quantization_parameters"]
    x = nchw_to_nhwc(sample.astype(np.float32))[:1]
    q_in = np.clip(np.round(x / qp["scales"][0]) + qp["zero_points"][0], -128, 127).astype(np.int8)
    host.interpreter.set_input(q_in, 0)
    host.interpreter.invoke()
    expected = host.interpreter.get_output(0).astype(np.int8).reshape(-1)

    tag = tflite.stem
    data = work / f"tflm_{tag}_data.cc"
    body = ",".join(str(b) for b in tflite.read_bytes())
    data.write_text(f"alignas(16) extern const unsigned char tflm_model_data[] = {{{body}}};\n")
    ops = "".join(f"r.{op}();" for op in tflite_ops(tflite))
    machine = [f for f in cortex_m_flags(BOARDS[TFLM_BOARD][0]) if f.startswith("-m")]
    elf = work / f"tflm_{tag}.elf"
    startup = work / "tflm_startup.o"
    subprocess.run(["arm-none-eabi-gcc", *machine, "-O2", "-c", str(HARNESS / "mps2_startup.c"), "-o", str(startup)],
                   check=True)
    cmd = ["arm-none-eabi-g++", *machine, "-O2", "-std=c++17", "-fno-rtti", "-fno-exceptions",
           "-fno-threadsafe-statics", "-ffunction-sections", "-fdata-sections", "-DTF_LITE_STATIC_MEMORY",
           "-DNDEBUG", "-DTF_LITE_STRIP_ERROR_STRINGS", f"-DTFLM_ADD_OPS(r)={ops}", *incs,
           "--specs=rdimon.specs", "-T", str(HARNESS / "mps2.ld"), "-Wl,--gc-sections",
           str(startup), str(TFLM_HARNESS), str(data), str(lib), "-lm", "-o", str(elf)]
    subprocess.run(cmd, check=True)
    info, got = run_qemu(elf, TFLM_BOARD, q_in, work)
    if int(info["rc"]) != 0 or not np.array_equal(got, expected):
        raise SystemExit(f"TFLM on {TFLM_BOARD} for {tflite.name}: output differs from the host tflite-micro "
                         "interpreter")
    return {"instr": int(info["ticks"]) * INSTRUCTIONS_PER_TICK, "arena": int(info["arena_used"])}


def tflm_table(rows: list) -> str:
    lines = [f"Same .tflite / same network, {TFLM_BOARD} (Cortex-M4F), `-icount shift=0`, SysTick x 40; TFLM + "
             "CMSIS-NN output equal to the host tflite-micro interpreter, ours equal to the int8 reference:", "",
             "| model | MACs | ours: instructions (MAC/instr) | TFLM + CMSIS-NN: instructions (MAC/instr) | "
             "TFLM / ours | our RAM B (arena incl. I/O) | TFLM arena B (on device) | RAM ours / TFLM |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ours, peer = r["instr"][(TFLM_BOARD, True)], r["tflm_run"]
        lines.append(f"| {r['model']} | {r['macs']:,} | {ours:,} ({r['macs'] / ours:.2f}) | {peer['instr']:,} "
                     f"({r['macs'] / peer['instr']:.2f}) | {peer['instr'] / ours:.2f}x | {r['ram']:,} | "
                     f"{peer['arena']:,} | {r['ram'] / peer['arena']:.2f} |")
    return "\n".join(lines)


def table(rows: list, boards: list) -> str:
    head = "| model | MACs |"
    sep = "|---|---:|"
    for board in boards:
        for build_name in ("portable", "DSP"):
            head += f" {board} {build_name}: instructions (MAC/instr) |"
            sep += "---:|"
    head += " RAM B (arena incl. I/O) | TFLM arena B | RAM / TFLM | flash B (model + engine) |"
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
    chain_at = {first: last for first, last in row.get("banded", [])}
    layers, i = row["layers"], 0
    while i < len(layers):  # a chain run in row bands is one row: its layers are timed together
        last = chain_at.get(i, i)
        group = layers[i:last + 1]
        layer, n = group[-1][0], sum(t for _, t in group)
        macs = sum(g["macs"] for g, _ in group)
        shape = "x".join(map(str, layer["output"]["shape"][1:]))
        ratio = f"{macs / n:.2f}" if macs and n else "-"
        index = f"{i}-{last}" if last > i else str(i)
        name = " + ".join(g["name"] for g, _ in group) + (" (row bands)" if last > i else "")
        kernel = " + ".join(dict.fromkeys(g["kernel"] for g, _ in group))
        lines.append(f"| {index} | {name} | {kernel} | {shape} | {macs:,} | {n:,} | {ratio} |")
        i = last + 1
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", action="append", choices=sorted(BOARDS), help="default: qemu-m4 and qemu-m7")
    ap.add_argument("--layers", action="store_true", help="also a per-layer table (first board, DSP build)")
    ap.add_argument("--tflm", metavar="DIR", type=Path,
                    help="a tflite-micro checkout with its downloads: also measure TFLM + CMSIS-NN on qemu-m4")
    ap.add_argument("--markdown", help="also write the tables to this file")
    args = ap.parse_args(argv)
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed (scripts/setup.sh installs the embedded toolchain)")
    boards = args.board or sorted(BOARDS)
    if args.tflm and TFLM_BOARD not in boards:
        boards.append(TFLM_BOARD)
    tflm = tflm_library(args.tflm.expanduser().resolve()) if args.tflm else None
    from export_table import student_preset_model

    with tempfile.TemporaryDirectory(prefix="engine-table-") as tmp:
        work = Path(tmp)
        models = [student_preset_model("mcu32", work), pose_model("mcu96", work)]
        rows = [measure(*m, boards, work, args.layers) for m in models]
        if tflm:
            for row, (_, _, tfl, sample) in zip(rows, models):
                row["tflm_run"] = tflm_measure(Path(tfl), sample, *tflm, work)
    text = table(rows, boards)
    if args.layers:
        text += "\n\n" + "\n\n".join(layer_table(r, boards[0]) for r in rows)
    if tflm:
        text += "\n\n" + tflm_table(rows)
    print(text)
    if not tflm:
        print("\n(TFLM's instructions not measured: pass --tflm DIR.)\n" + TFLM_HOWTO)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
