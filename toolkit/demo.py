"""`toolkit demo`: the whole chain on the bundled real photos, one command, resumable.

The generator (teacher, then student) learns from the 100 LFW faces only; the sample photos it anonymizes
(astronaut, obama*, biden, messi5, vtest frames) are other people, so a memorizing model cannot paste anyone
back. The pose model trains on most sample photos as the student anonymizes them and is measured on the
held-out rest against the teacher on the originals.

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

# Steps per stage: the default aims at <= 30 minutes on 2 CPU cores; --fast is CI's smoke size (the chain, not
# the quality). eval_images: how many of the anonymized photos `toolkit eval` measures (None = all).
SIZES = {
    "default": {"train_steps": 1500, "distill_steps": 600, "qat_steps": 200, "teacher_steps": 25, "bench_runs": 3,
                "pose_steps": 2000, "pose_preset": "mcu96", "pose_qat_steps": 100, "eval_images": None,
                "multi_preset": "multi96", "multi_steps": 3000, "verifier_preset": "heads96",
                "verifier_steps": 3000, "verifier_qat_steps": 300, "sensor_frames": 24},
    "fast": {"train_steps": 100, "distill_steps": 40, "qat_steps": 10, "teacher_steps": 10, "bench_runs": 1,
             "pose_steps": 30, "pose_preset": "tiny", "pose_qat_steps": 5, "eval_images": 3,
             "multi_preset": "multi_tiny", "multi_steps": 400, "verifier_preset": "heads_tiny",
             "verifier_steps": 300, "verifier_qat_steps": 5, "sensor_frames": 4},
}
VERIFIER_SEED = 7  # the verifier is trained apart from the pose net it checks: its own seed, too
TARGET = "stm32h743"
BENCH_BOARD = "qemu-m7"
EVAL_METHODS = "ddpm,student,student-int8,blur,pixelate,mask"
# LFW crops are 25 px photos whose face fills the frame, so the FDF-style crop (2x the face box) is only ~30 %
# inside the photo; the data builder's default (0.4) would drop them all. The rest is filled from real scenes.
TRAIN_MIN_INSIDE = 0.2
TRAIN_VARIANTS = 4  # crops per LFW face, each on another scene
MIN_TRAINING_FACES = 50  # fewer and the teacher learns next to nothing in the default step budget
# The pose model is evaluated on people it never saw (other identities: the obama photos are all one person).
POSE_HELDOUT = ("astronaut", "biden", "messi5", "vtest_600")


def register(sub):
    p = sub.add_parser("demo", help="run the whole chain on the bundled real photos",
                       description="assets → dataset (LFW faces) → teacher → anonymize the sample photos → "
                                   "distill → pose model on anonymized photos → quantize → export → firmware + "
                                   "QEMU bench → eval → report. The faces the generator learns from are never "
                                   "among the photos it anonymizes. Resumes where it stopped when run again "
                                   "with the same --out.")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default: %(default)s)")
    p.add_argument("--fast", action="store_true", help="fewest steps (CI smoke test): the chain, not the quality")
    p.add_argument("--restart", action="store_true", help="forget finished stages and run everything again")
    p.add_argument("--sensor", action="store_true",
                   help="also the multi-person sensor: train the multi-person pose net and the independent "
                        "verifier, and run frames of 1-4 people through the on-device pipeline on QEMU "
                        "(~15 more minutes at the default size)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads for every stage (default: $OMP_NUM_THREADS if set, else 1: steady on "
                        "a shared machine; 2 threads are ~1.5x faster on idle cores, up to 10x slower on busy ones)")
    p.set_defaults(func=run)


def demo_threads(requested=None) -> int:
    """Threads for the demo's torch work: --threads, else $OMP_NUM_THREADS, else 1.

    Measured on the 2-core dev machine (tiny32 teacher step at batch 16 / mcu32 student step at batch 8):
    1 thread 127-135 / 51-55 ms every time; 2 threads 78-105 / 34-62 ms when the other core was free, but
    1282-1533 ms for the teacher when another process used it. One thread is predictable and keeps the default
    demo inside its 30 minutes; on a dedicated machine `--threads 2` is up to ~1.5x faster for training."""
    import os

    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be >= 1, got {requested}")
        return int(requested)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    return 1


def _stages(out: Path, size: dict, threads: int, sensor: bool = False):
    photos, training, data, teacher = out / "photos", out / "training-photos", out / "dataset", out / "teacher"
    backgrounds = out / "training-backgrounds"
    student, quant, export = out / "student", out / "student-int8", out / "export"
    pose_photos, pose, pose_quant = out / "pose-photos", out / "pose", out / "pose-int8"
    firmware = out / "firmware"  # the demo builds its own copy, so the repository's firmware/ stays clean
    teacher_flags = ["--steps", str(size["teacher_steps"])]
    eval_limit = ["--max-images", str(size["eval_images"])] if size["eval_images"] else []
    return [
        ("assets", ["assets", "fetch"], None),
        ("photos", _copy_photos, photos),
        ("training-photos", _copy_training_photos, training),
        ("training-backgrounds", _copy_backgrounds, backgrounds),
        # LFW faces are cut tightly: their crops are mostly padding, filled from real scenes.
        ("dataset", ["data", "build", "--images", str(training), "--out", str(data), "--size", "64",
                     "--min-face", "12", "--min-inside", str(TRAIN_MIN_INSIDE), "--backgrounds", str(backgrounds),
                     "--variants", str(TRAIN_VARIANTS), "--quiet"], data),
        ("teacher", ["train", "--data", str(data), "--preset", "tiny32", "--out", str(teacher),
                     "--max-steps", str(size["train_steps"]), "--checkpoint-every", "100"], teacher),
        ("anonymize-teacher", ["anonymize", str(photos), "--out", str(out / "anonymized-teacher"),
                               "--model", str(teacher), *teacher_flags], out / "anonymized-teacher"),
        ("student", ["distill", "--teacher", str(teacher), "--out", str(student), "--steps", "2",
                     "--preset", "mcu32", "--max-steps", str(size["distill_steps"]),
                     "--teacher-steps", str(size["teacher_steps"])], student),
        ("anonymize-student", ["anonymize", str(photos), "--out", str(out / "anonymized-student"),
                               "--model", str(student)], out / "anonymized-student"),
        ("pose-photos", _split_pose_photos, pose_photos),
        # Trained on the training photos as the student anonymizes them; labels from the originals.
        ("pose", ["pose", "train", "--images", str(pose_photos / "train"), "--model", str(student),
                  "--out", str(pose), "--steps", str(size["pose_steps"]), "--preset", size["pose_preset"],
                  "--threads", str(threads)], pose),
        ("pose-eval", ["pose", "eval", "--images", str(pose_photos / "heldout"), "--model", str(pose),
                       "--json", str(out / "pose-eval" / "pose_eval.json")], out / "pose-eval"),
        ("quantize", ["quantize", "--model", str(student), "--target", TARGET, "--out", str(quant),
                      "--qat-steps", str(size["qat_steps"]), "--threads", str(threads)], quant),
        ("quantize-pose", ["quantize", "--model", str(pose), "--target", TARGET, "--out", str(pose_quant),
                           "--qat-steps", str(size["pose_qat_steps"]), "--threads", str(threads)], pose_quant),
        ("export", ["export", "--model", str(quant), "--target", TARGET, "--out", str(export)], export),
        ("firmware", _copy_firmware, firmware),
        ("bench", ["bench", "--board", BENCH_BOARD, "--model", str(quant), "-n", str(size["bench_runs"]),
                   "--firmware-dir", str(firmware), "--out", str(out / "bench" / "results.json")], out / "bench"),
        # The on-device frame pipeline: pose -> face box -> student -> paste, bit-exact against the host.
        ("pipeline", ["bench", "--pipeline", "--pose", str(pose_quant), "--model", str(quant),
                      "--board", BENCH_BOARD, "--out", str(out / "pipeline" / "results.json"),
                      "--firmware-dir", str(firmware)], out / "pipeline"),
        ("eval", ["eval", "--images", str(photos), "--methods", EVAL_METHODS,
                  "--teacher", str(teacher), "--student", str(student), "--student-int8", str(quant),
                  *teacher_flags, *eval_limit, "--out", str(out / "eval")], out / "eval"),
    ] + (_sensor_stages(out, size, threads) if sensor else [])


def _sensor_stages(out: Path, size: dict, threads: int):
    """Every face in the frame: the multi-person pose net, the verifier trained on that pipeline's outputs, and
    frames of 1-4 people through the device (last: a leak makes this stage fail, after everything else ran)."""
    pose_photos, student, quant = out / "pose-photos", out / "student", out / "student-int8"
    multi, multi_quant = out / "pose-multi", out / "pose-multi-int8"
    verifier, verifier_quant = out / "verifier", out / "verifier-int8"
    return [
        ("pose-multi", ["pose", "train", "--images", str(pose_photos / "train"), "--model", str(student),
                        "--out", str(multi), "--steps", str(size["multi_steps"]), "--preset", size["multi_preset"],
                        "--threads", str(threads)], multi),
        ("quantize-pose-multi", ["quantize", "--model", str(multi), "--target", TARGET, "--out", str(multi_quant),
                                 "--qat-steps", str(size["pose_qat_steps"]), "--threads", str(threads)], multi_quant),
        ("verifier", ["pose", "train", "--images", str(pose_photos / "train"), "--model", str(student),
                      "--out", str(verifier), "--steps", str(size["verifier_steps"]),
                      "--preset", size["verifier_preset"], "--seed", str(VERIFIER_SEED),
                      "--replaced-by", str(multi_quant), str(quant), "--threads", str(threads)], verifier),
        ("quantize-verifier", ["quantize", "--model", str(verifier), "--target", TARGET, "--out",
                               str(verifier_quant), "--qat-steps", str(size["verifier_qat_steps"]),
                               "--threads", str(threads)], verifier_quant),
        ("sensor", ["bench", "--pipeline", "--pose", str(multi_quant), "--model", str(quant),
                    "--verifier", str(verifier_quant), "--board", BENCH_BOARD, "--frames", str(size["sensor_frames"]),
                    "--out", str(out / "sensor" / "results.json"), "--firmware-dir", str(out / "firmware")],
         out / "sensor"),
    ]


def _copy_firmware(dest: Path):
    """copy the firmware project (built and run by the bench stage)"""
    from toolkit.bench.firmware import copy_project

    copy_project(dest)


def _copy_photos(dest: Path):
    """copy the bundled sample photos, the ones the demo anonymizes (the inputs are never touched)"""
    from toolkit import assets

    dest.mkdir(parents=True, exist_ok=True)
    for src in assets.sample_photos():
        shutil.copy2(src, dest / src.name)


def _content_hashes(folder: Path) -> dict:
    from toolkit.assets import sha256_file
    from toolkit.images import list_images

    return {sha256_file(p): p.name for p in list_images([folder])}


def _copy_training_photos(dest: Path):
    """copy the 100 LFW faces the generator learns from: other people than the photos it anonymizes"""
    from toolkit import assets

    dest.mkdir(parents=True, exist_ok=True)
    for src in assets.lfw_faces():
        shutil.copy2(src, dest / f"lfw_{src.name}")
    _refuse_photos_to_anonymize(dest)


def _refuse_photos_to_anonymize(training: Path):
    # A generator trained on the very faces it replaces could paste the person back (a tiny model memorizes).
    shared = set(_content_hashes(training)) & set(_content_hashes(training.parent / "photos"))
    if shared:
        raise RuntimeError(f"{training.name} includes {len(shared)} of the photos to anonymize; refusing to train "
                           "on them")


def _copy_backgrounds(dest: Path):
    """copy the scenes without people that surround the LFW faces in training (scikit-image, LFW non-faces)"""
    from toolkit import assets

    dest.mkdir(parents=True, exist_ok=True)
    for src in assets.backgrounds():
        shutil.copy2(src, dest / src.name)
    _refuse_photos_to_anonymize(dest)


def _split_pose_photos(dest: Path):
    """split the sample photos: the pose model trains on most, held-out people measure it"""
    from toolkit import assets

    for split in ("train", "heldout"):
        (dest / split).mkdir(parents=True, exist_ok=True)
    for src in assets.sample_photos():
        split = "heldout" if src.stem in POSE_HELDOUT else "train"
        shutil.copy2(src, dest / split / src.name)


def _report_dataset(data: Path):
    """The dataset's counts, and a clear stop when the detector found too few faces to train on."""
    from toolkit.artifacts import read_manifest

    m = read_manifest(data, expect_stage="dataset")
    print(f"  training faces: {m['num_faces']} from {m['num_photos']} of {m['num_files']} LFW photos, "
          f"{m.get('variants', 1)} crops each on other scenes "
          f"(train {m['splits'].get('train', 0)}, val {m['splits'].get('val', 0)}); "
          "none of them is among the photos anonymized", flush=True)
    if m["num_faces"] < MIN_TRAINING_FACES:
        raise RuntimeError(f"{data}: only {m['num_faces']} training faces (need {MIN_TRAINING_FACES}); "
                           "check the detector models with `toolkit assets list`")


AFTER = {"dataset": _report_dataset}  # checks run when a stage has finished
# Stages whose verb writes one file into the stage's folder without creating it.
MAKE_FOLDER = ("pose-eval",)


def run(args) -> int:
    import torch

    from toolkit.cli import main as toolkit_main

    out: Path = args.out
    threads = demo_threads(getattr(args, "threads", None))
    done_dir = out / ".done"
    if args.restart and done_dir.exists():
        shutil.rmtree(done_dir)
    done_dir.mkdir(parents=True, exist_ok=True)
    size = SIZES["fast" if args.fast else "default"]
    timings = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
    stages = _stages(out, size, threads, getattr(args, "sensor", False))
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)  # the stages run in this process
    print(f"demo: torch uses {threads} thread(s) (--threads / OMP_NUM_THREADS)", flush=True)
    try:
        for i, (name, action, target) in enumerate(stages, 1):
            marker = done_dir / name
            if marker.exists():
                print(f"[{i}/{len(stages)}] {name}: done earlier, skipped")
                continue
            resumable = name == "teacher" and (target / "checkpoints").exists()
            if target is not None and target.exists() and not resumable:
                shutil.rmtree(target)  # a half-written stage output is redone from scratch
            if name in MAKE_FOLDER:
                target.mkdir(parents=True)
            start = time.perf_counter()
            try:
                if callable(action):
                    print(f"[{i}/{len(stages)}] {name}: {action.__doc__}", flush=True)
                    action(target)
                    rc = 0
                else:
                    action = action + ["--resume"] if resumable else action
                    print(f"[{i}/{len(stages)}] {name}: toolkit " + " ".join(action), flush=True)
                    rc = toolkit_main(action)
                if rc == 0 and name in AFTER:
                    AFTER[name](target)
            except BaseException as exc:
                why = "interrupted" if isinstance(exc, KeyboardInterrupt) else "an exception, below"
                _say_failed(name, why, args)
                raise
            if rc != 0:
                _say_failed(name, f"exit {rc}, the reason is printed above", args)
                return rc
            timings[name] = round(time.perf_counter() - start, 1)
            (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
            marker.touch()
    finally:
        torch.set_num_threads(threads_before)
    _write_summary(out, timings, threads, "fast" if args.fast else "default")
    print(f"demo finished: {out / 'README.md'}")
    return 0


def _say_failed(stage: str, why: str, args):
    again = " ".join(["toolkit demo", "--out", str(args.out)] + (["--fast"] if args.fast else [])
                     + (["--sensor"] if getattr(args, "sensor", False) else []))
    print(f"demo: stage '{stage}' failed ({why}). The stages before it are kept: fix the cause and run "
          f"`{again}` again to resume from '{stage}'.", file=sys.stderr, flush=True)


def _write_summary(out: Path, timings: dict, threads: int, size: str):
    total = sum(timings.values()) / 60
    lines = ["# Demo run", "", (f"Size: {size}; torch threads: {threads}; total: {total:.1f} min "
                                "(the stages of earlier, resumed runs included)"), "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in timings.items()]
    lines += ["", "- Generator training faces: `training-photos/` (LFW), never the anonymized photos",
              "- Anonymized photos: `anonymized-teacher/`, `anonymized-student/` (each with its JSON report)",
              "- Evaluation report: [eval/report.md](eval/report.md)",
              "- Pose model trained on student-anonymized photos: `pose/`, int8: `pose-int8/`",
              "- Generated C code: `export/`", "- On-device (QEMU) benchmark: `bench/`"]
    bench = out / "bench" / "results.json"
    if bench.exists():
        summary = json.loads(bench.read_text())["summary"]
        lines += ["", f"## On-device benchmark ({BENCH_BOARD}, unit: {summary['unit']})", "",
                  f"Every output bit-exact with the host int8 reference: {summary['all_bit_exact']}", "",
                  "| model | MACs | mean per inference | MAC / instruction |", "|---|---|---|---|"]
        for model, fig in summary["models"].items():
            per_mac = fig.get("instructions_per_mac")
            lines.append(f"| {model} | {fig['macs']:,} | {fig['mean_per_inference']:,.0f} | "
                         f"{1 / per_mac if per_mac else float('nan'):.2f} |")
    lines += _pipeline_section(out / "pipeline" / "results.json")
    lines += _sensor_section(out / "sensor" / "results.json")
    pose = out / "pose-eval" / "pose_eval.json"
    if pose.exists():
        r = json.loads(pose.read_text())
        lines += ["", "## Pose model vs the BlazePose teacher on held-out original photos", "",
                  (f"Trained on photos anonymized by the student ({r.get('method')}); evaluated on {r['images']} "
                   f"photos of other people ({r['people']} people, {r['views']} views)."), "",
                  "| PCK@0.2 | PCK@0.1 | OKS | mean error (person sizes) |", "|---|---|---|---|",
                  f"| {r['pck@0.2']:.3f} | {r['pck@0.1']:.3f} | {r['oks']:.3f} | {r['mean_error']:.3f} |"]
    evaluation = out / "eval" / "eval.json"
    if evaluation.exists():
        from toolkit.eval.report import summary_notes, markdown_table

        summary = json.loads(evaluation.read_text())["summary"]
        lines += ["", "## Evaluation (details, grids and plots: eval/report.html)", "", markdown_table(summary),
                  "", summary_notes(summary)]
    (out / "README.md").write_text("\n".join(lines) + "\n")


def _pipeline_section(path: Path) -> list[str]:
    """The on-device frame pipeline's figures, as `toolkit bench --pipeline` prints them."""
    if not path.exists():
        return []
    from toolkit.onboard.bench import stage_table

    result = json.loads(path.read_text())
    s = result["summary"]
    return ["", f"## On-device frame pipeline ({BENCH_BOARD}: frame → pose → face box → student → paste)", "",
            f"{s['faces_found']} of {s['frames']} frames with a face; bit-exact with the host reference: "
            f"{s['all_bit_exact']}; the frame without a person failed closed: {s['fail_closed']}", "",
            stage_table(result), "", "Frames in and out: `pipeline/results.png`"]


def _sensor_section(path: Path) -> list[str]:
    """Multi-person frames through the device (`toolkit demo --sensor`): what left it, and whether a face did."""
    if not path.exists():
        return ["", "## Anonymize at the sensor: multi-person frames", "",
                "Not run: `toolkit demo --sensor` adds the multi-person pose net, the independent verifier and "
                "frames of 1-4 people through the device (docs/firmware.md)."]
    from toolkit.onboard.bench import people_table

    result = json.loads(path.read_text())
    s = result["summary"]
    fit = s["fit"].get(TARGET, {})
    return ["", f"## Anonymize at the sensor: multi-person frames ({BENCH_BOARD})", "",
            (f"Frames of 1-4 people from the bundled photos; a delivered frame with a face left (a BlazePose nose "
             f"or eye outside every replaced box) must not exist: {s['delivered_with_face_left']} here. Refused "
             f"by the verifier: {s['verifier_refusals']} frame(s). Bit-exact with the host reference: "
             f"{s['all_bit_exact']}; RAM {s['memory']['total'] / 1024:.1f} KiB, flash "
             f"{s['flash_bytes'] / 1024:.1f} KiB, fits {TARGET}: {fit.get('fits')}."), "",
            people_table(result), "", "Frames in and out: `sensor/results_frames/`"]
