"""`toolkit demo`: the whole chain on the bundled real photos, one command, resumable.

Every stage is the ordinary CLI verb a user would type (printed before it runs), writing its artifact under
--out. A stage that finished leaves a marker in OUT/.done/, so an interrupted demo picks up where it stopped;
training resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

# Steps per stage: the default finishes in well under 30 minutes on 2 CPU cores; --fast is CI's smoke size.
SIZES = {
    "default": {"train_steps": 1500, "distill_steps": 600, "qat_steps": 200, "teacher_steps": 25, "bench_runs": 3},
    "fast": {"train_steps": 150, "distill_steps": 40, "qat_steps": 10, "teacher_steps": 10, "bench_runs": 1},
}
TARGET = "stm32h743"
BENCH_BOARD = "qemu-m7"


def register(sub):
    p = sub.add_parser("demo", help="run the whole chain on the bundled real photos",
                       description="assets → dataset → teacher → anonymize → distill → quantize → export → "
                                   "firmware + QEMU bench → eval → report, on the bundled real photos. "
                                   "Resumes where it stopped when run again with the same --out.")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default: %(default)s)")
    p.add_argument("--fast", action="store_true", help="fewest steps (CI smoke test): the chain, not the quality")
    p.add_argument("--restart", action="store_true", help="forget finished stages and run everything again")
    p.set_defaults(func=run)


def _stages(out: Path, size: dict):
    photos, data, teacher = out / "photos", out / "dataset", out / "teacher"
    student, quant, export = out / "student", out / "student-int8", out / "export"
    firmware = out / "firmware"  # the demo builds its own copy, so the repository's firmware/ stays clean
    teacher_flags = ["--steps", str(size["teacher_steps"])]
    return [
        ("assets", ["assets", "fetch"], None),
        ("photos", _copy_photos, photos),
        ("dataset", ["data", "build", "--images", str(photos), "--out", str(data), "--size", "64",
                     "--min-face", "12", "--quiet"], data),
        ("teacher", ["train", "--data", str(data), "--preset", "tiny32", "--out", str(teacher),
                     "--max-steps", str(size["train_steps"]), "--checkpoint-every", "100"], teacher),
        ("anonymize-teacher", ["anonymize", str(photos), "--out", str(out / "anonymized-teacher"),
                               "--model", str(teacher), *teacher_flags], out / "anonymized-teacher"),
        ("student", ["distill", "--teacher", str(teacher), "--out", str(student), "--steps", "2",
                     "--preset", "mcu32", "--max-steps", str(size["distill_steps"]),
                     "--teacher-steps", str(size["teacher_steps"])], student),
        ("anonymize-student", ["anonymize", str(photos), "--out", str(out / "anonymized-student"),
                               "--model", str(student)], out / "anonymized-student"),
        ("quantize", ["quantize", "--model", str(student), "--target", TARGET, "--out", str(quant),
                      "--qat-steps", str(size["qat_steps"])], quant),
        ("export", ["export", "--model", str(quant), "--target", TARGET, "--out", str(export)], export),
        ("firmware", _copy_firmware, firmware),
        ("bench", ["bench", "--board", BENCH_BOARD, "--model", str(quant), "-n", str(size["bench_runs"]),
                   "--firmware-dir", str(firmware), "--out", str(out / "bench" / "results.json")], out / "bench"),
        ("eval", ["eval", "--images", str(photos), "--methods", "ddpm,student,blur,pixelate,mask",
                  "--teacher", str(teacher), "--student", str(student), *teacher_flags,
                  "--out", str(out / "eval")], out / "eval"),
    ]


def _copy_firmware(dest: Path):
    """copy the firmware project (built and run by the bench stage)"""
    from toolkit.bench.firmware import copy_project

    copy_project(dest)


def _copy_photos(dest: Path):
    """copy the bundled sample photos (the inputs are never touched)"""
    from toolkit import assets

    dest.mkdir(parents=True, exist_ok=True)
    for src in assets.sample_photos():
        shutil.copy2(src, dest / src.name)


def run(args) -> int:
    from toolkit.cli import main as toolkit_main

    out: Path = args.out
    done_dir = out / ".done"
    if args.restart and done_dir.exists():
        shutil.rmtree(done_dir)
    done_dir.mkdir(parents=True, exist_ok=True)
    size = SIZES["fast" if args.fast else "default"]
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
    stages = _stages(out, size)
    for i, (name, action, target) in enumerate(stages, 1):
        marker = done_dir / name
        if marker.exists():
            print(f"[{i}/{len(stages)}] {name}: done earlier, skipped")
            continue
        resumable = name == "teacher" and (target / "checkpoints").exists()
        if target is not None and target.exists() and not resumable:
            shutil.rmtree(target)  # a half-written stage output is redone from scratch
        start = time.perf_counter()
        if callable(action):
            print(f"[{i}/{len(stages)}] {name}: {action.__doc__}", flush=True)
            action(target)
            rc = 0
        else:
            action = action + ["--resume"] if resumable else action
            print(f"[{i}/{len(stages)}] {name}: toolkit " + " ".join(action), flush=True)
            rc = toolkit_main(action)
        if rc != 0:
            print(f"demo: stage '{name}' failed (exit {rc}); fix the cause and run the same command again "
                  "to resume from this stage", file=sys.stderr)
            return rc
        timings[name] = round(time.perf_counter() - start, 1)
        (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
        marker.touch()
    _write_summary(out, timings)
    print(f"demo finished: {out / 'README.md'}")
    return 0


def _write_summary(out: Path, timings: dict):
    lines = ["# Demo run", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in timings.items()]
    lines += ["", "- Anonymized photos: `anonymized-teacher/`, `anonymized-student/` (each with its JSON report)",
              "- Evaluation report: [eval/report.md](eval/report.md)",
              "- Generated C code: `export/`", "- On-device (QEMU) benchmark: `bench/`"]
    bench = out / "bench" / "results.json"
    if bench.exists():
        summary = json.loads(bench.read_text())["summary"]
        lines += ["", f"## On-device benchmark ({BENCH_BOARD}, unit: {summary['unit']})", "",
                  f"Every output bit-exact with the host int8 reference: {summary['all_bit_exact']}", "",
                  "| model | MACs | mean per inference | instructions / MAC |", "|---|---|---|---|"]
        for model, fig in summary["models"].items():
            lines.append(f"| {model} | {fig['macs']:,} | {fig['mean_per_inference']:,.0f} | "
                         f"{fig.get('instructions_per_mac', float('nan')):.2f} |")
    evaluation = out / "eval" / "eval.json"
    if evaluation.exists():
        from toolkit.eval.report import markdown_table

        lines += ["", "## Evaluation (details, grids and plots: eval/report.html)", "",
                  markdown_table(json.loads(evaluation.read_text())["summary"])]
    (out / "README.md").write_text("\n".join(lines) + "\n")
