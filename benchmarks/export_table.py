"""Per model: MACs, flash bytes and arena of the generated C code vs the TFLite Micro arena of the same model.

    python benchmarks/export_table.py                      # the two demo models of the export tests
    python benchmarks/export_table.py --model RUN_OR_ONNX  # quantize artifacts (their .tflite is used)

Columns:
- MACs: multiply-accumulates per inference (from the integer graph);
- const B: weights + int32 bias/multiplier/shift arrays emitted by `toolkit export`;
- flash B (M4): .text + .rodata + .data of the generated model plus the tkengine kernels, compiled with
  the firmware's flags for Cortex-M4 (toolkit.bench.pio.cortex_m_flags) (measured with arm-none-eabi-size; the whole engine, no interpreter);
- arena B: our static plan (model input/output buffers excluded, as TFLM's arena includes them: see the
  "+I/O" column for the like-for-like figure);
- TFLM arena B: `arena used` of the tflite-micro Python interpreter (allocation recording) for the model's
  int8 .tflite; .tflite B: the flatbuffer TFLM must keep in flash besides its interpreter code;
- M4 ticks: SysTick ticks of one invoke of the generated code on QEMU mps2-an386 with `-icount shift=0`
  (proportional to instructions executed, not cycles), portable C vs the DSP (SMLAD) build; for the demo
  models only (with --model there is no sample input: n/a).
For the demo models the .tflite is made from the same float ONNX (onnx2tf + TFLiteConverter, calibrated on
the same kind of real crops), so the graphs match but the scales are recalibrated.
Not a test: prints a Markdown table (and writes it to --markdown if given).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the demo models are built by the export tests' fixtures

TKENGINE = ROOT / "firmware" / "lib" / "tkengine"


def flash_bytes_m4(gen_dir: Path, name: str, work: Path) -> int | None:
    """text+data of the generated model + kernels compiled for Cortex-M4 (None without the toolchain)."""
    import shutil

    from toolkit.bench.pio import cortex_m_flags

    if shutil.which("arm-none-eabi-gcc") is None:
        return None
    objs = []
    for src in [gen_dir / f"{name}.c", gen_dir / f"{name}_weights.c", *sorted((TKENGINE / "src").glob("*.c"))]:
        obj = work / f"{name}_{src.stem}.o"
        subprocess.run(["arm-none-eabi-gcc", *cortex_m_flags("mps2_an386"), f"-I{TKENGINE / 'include'}", f"-I{gen_dir}", "-c",
                        str(src), "-o", str(obj)], check=True)
        objs.append(str(obj))
    out = subprocess.run(["arm-none-eabi-size", "-t", *objs], check=True, capture_output=True, text=True).stdout
    text, data = out.strip().splitlines()[-1].split()[:2]
    return int(text) + int(data)


def qemu_ticks(gen_dir: Path, name: str, q_input: np.ndarray, dsp: bool, work: Path) -> int | None:
    """SysTick ticks of one invoke on QEMU mps2-an386 (Cortex-M4) with -icount: an instruction-count proxy."""
    import shutil

    from toolkit.bench.pio import cortex_m_flags

    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        return None
    harness = ROOT / "tests" / "export_c"
    elf = work / f"{name}_{'dsp' if dsp else 'portable'}.elf"
    subprocess.run(["arm-none-eabi-gcc", *cortex_m_flags("mps2_an386"), "--specs=rdimon.specs", "-T", str(harness / "mps2.ld"),
                    "-DTK_HARNESS_SYSTICK", *([] if dsp else ["-DTK_NO_DSP"]), f"-I{TKENGINE / 'include'}",
                    f"-I{gen_dir}", f"-DTK_MODEL={name}_model", f'-DTK_MODEL_HEADER="{name}.h"',
                    str(harness / "mps2_startup.c"), str(harness / "harness.c"), str(gen_dir / f"{name}.c"),
                    str(gen_dir / f"{name}_weights.c"), *map(str, sorted((TKENGINE / "src").glob("*.c"))),
                    "-o", str(elf)], check=True)
    (work / "in.bin").write_bytes(q_input.tobytes())
    res = subprocess.run(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none", "-serial", "none",
                          "-icount", "shift=0,align=off,sleep=off", "-semihosting-config",
                          "enable=on,target=native,arg=harness,arg=in.bin,arg=out.bin", "-kernel", str(elf)],
                         check=True, capture_output=True, text=True, cwd=work, timeout=600)
    return int(dict(kv.split("=") for kv in res.stdout.split())["ticks"])


def tflm_arena(tflite_path: Path) -> int:
    from toolkit.deploy.tflite_export import TflmModel

    return TflmModel(tflite_path, arena_size=8 * 1024 * 1024).arena_used_bytes


def demo_models(work: Path, student_presets=()) -> list:
    """[(label, qdq onnx, tflite, sample input)] for the demo models of the export tests (32x32) and the
    given StudentNet presets."""
    import fixtures_export as fx
    from toolkit.deploy.tflite_export import onnx_to_saved_model, saved_model_to_int8_tflite

    # onnx2tf checks 3-channel models on a sample-image file it downloads into the working folder unless the
    # file is already there (no internet here): provide it, made of real photo crops
    sample = np.stack([c.transpose(1, 2, 0) * 0.5 + 0.5 for c in fx.astronaut_crops(20, size=128, seed=7)])
    np.save(work / "calibration_image_sample_data_20x128x128x3_float32.npy", sample.astype(np.float32))
    rows = []
    for kind, label in (("student", "student-like 14x32x32"), ("every", "every-kernel 3x32x32")):
        qdq = fx.build_qdq_model(kind, work)
        calib = (fx.student_inputs(32, seed=1) if kind == "student"
                 else [c[None] for c in fx.astronaut_crops(32, seed=1)])
        saved = onnx_to_saved_model(work / f"{kind}32_float.onnx", work / f"saved_{kind}")
        tfl = saved_model_to_int8_tflite(saved, np.concatenate(calib), work / f"{kind}.tflite")
        rows.append((label, qdq, Path(tfl), calib[0]))
    for preset in student_presets:
        rows.append(student_preset_model(preset, work))
    return rows


def student_preset_model(preset: str, work: Path):
    """The distill stage's StudentNet architecture (untrained weights) quantized with NNCF the way the
    quantize stage does, plus its TFLite twin."""
    import torch

    import fixtures_export as fx
    from toolkit.distill.student import PRESETS, StudentNet

    p = PRESETS[preset]
    torch.manual_seed(0)
    net = StudentNet(p.channels, p.res_blocks, p.activation).eval()
    calib = np.concatenate(fx.student_inputs(16, size=p.resolution, seed=1))
    qdq, tfl = quantize_net(net, calib, work, f"student_{preset}")
    return (f"StudentNet {preset} (untrained)", qdq, tfl, calib[:1])


def quantize_net(net, calib: np.ndarray, work: Path, tag: str) -> tuple[Path, Path]:
    """(QDQ .onnx, int8 .tflite) of a torch network: NNCF as the quantize stage does it (MIXED, per-tensor
    activations, quantized output) calibrated on `calib`, and the TFLite converter on the same inputs."""
    import copy

    import torch

    from toolkit.deploy import quantize as Q
    from toolkit.deploy.tflite_export import onnx_to_saved_model, saved_model_to_int8_tflite

    nncf = Q._nncf()
    from nncf.quantization.advanced_parameters import QuantizationParameters

    advanced = nncf.AdvancedQuantizationParameters(
        overflow_fix=nncf.OverflowFix.DISABLE, quantize_outputs=True,
        activations_quantization_params=QuantizationParameters(per_channel=False))
    t = torch.from_numpy(calib)
    with torch.no_grad():
        qnet = nncf.quantize(copy.deepcopy(net), nncf.Dataset([t[i:i + 1] for i in range(len(t))]),
                             preset=nncf.QuantizationPreset.MIXED, subset_size=len(t), advanced_parameters=advanced)
    qdq = Q.export_qdq_onnx(qnet, t[:1], work / f"{tag}_qdq.onnx")
    float_onnx = Q.export_float_onnx(net, t[:1], work / f"{tag}_float.onnx")
    saved = onnx_to_saved_model(float_onnx, work / f"saved_{tag}")
    tfl = saved_model_to_int8_tflite(saved, calib, work / f"{tag}.tflite")
    return Path(qdq), Path(tfl)


def measure(label: str, onnx_path: Path, tflite_path: Path | None, sample, work: Path) -> dict:
    from toolkit.deploy import codegen, int8ref
    from toolkit.deploy.ir import load_qdq

    graph = load_qdq(onnx_path)
    name = codegen.c_name(label)[:40]
    files, report = codegen.generate(graph, name, source_name=onnx_path.name)
    gen = work / f"gen_{name}"
    codegen.write_files(files, gen)
    io_bytes = graph.tensors[graph.input].size + graph.tensors[graph.output].size
    return {
        "model": label, "macs": report["macs"], "const": report["weight_bytes"],
        "flash": flash_bytes_m4(gen, name, work), "arena": report["arena_bytes"],
        "arena_io": report["arena_bytes"] + io_bytes,
        "tflm": tflm_arena(tflite_path) if tflite_path else None,
        "tflite": tflite_path.stat().st_size if tflite_path else None,
        "ticks_portable": None if sample is None else qemu_ticks(gen, name, int8ref.quantize_input(graph, sample), False, work),
        "ticks_dsp": None if sample is None else qemu_ticks(gen, name, int8ref.quantize_input(graph, sample), True, work),
    }


def table(rows: list) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:,}"

    lines = ["| model | MACs | const B | flash B (M4, engine+model) | arena B | arena+I/O B | TFLM arena B | "
             ".tflite B | M4 ticks portable | M4 ticks DSP |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {f(r['macs'])} | {f(r['const'])} | {f(r['flash'])} | {f(r['arena'])} | "
                     f"{f(r['arena_io'])} | {f(r['tflm'])} | {f(r['tflite'])} | {f(r['ticks_portable'])} | "
                     f"{f(r['ticks_dsp'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", default=[],
                    help="quantize artifact directory or QDQ .onnx (repeatable); default: the demo models")
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--student-preset", action="append", default=None,
                    help="StudentNet preset(s) to add to the demo models (default: mcu32; 'none' for none)")
    ap.add_argument("--json", metavar="FILE", help="also write the printed tables as JSON")
    args = ap.parse_args(argv)
    from _json_tables import capture_tables  # beside this script

    capture_tables(args.json)
    from toolkit.deploy.export import model_units

    with tempfile.TemporaryDirectory(prefix="export-table-") as tmp:
        work = Path(tmp)
        if args.model:
            models = []
            for m in args.model:
                units, manifest = model_units(m)
                label = manifest.get("name") or Path(m).name
                for k, onnx_path, tflite_path in units:
                    models.append((label if k is None else f"{label} step {k}", onnx_path, tflite_path, None))
        else:
            presets = [p for p in (args.student_preset or ["mcu32"]) if p != "none"]
            models = demo_models(work, presets)
        rows = [measure(label, onnx_path, tflite_path, sample, work)
                for label, onnx_path, tflite_path, sample in models]
    text = table(rows)
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
