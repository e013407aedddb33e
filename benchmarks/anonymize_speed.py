"""End-to-end `toolkit anonymize` speed: detection, and time per face vs sampling steps and batch size.

    python benchmarks/anonymize_speed.py --model RUN               # a teacher or student run
    python benchmarks/anonymize_speed.py                           # baselines and detection only
    python benchmarks/anonymize_speed.py --model RUN --threads 1   # on a shared, busy CPU
    python benchmarks/anonymize_speed.py --model RUN --device cuda
    python benchmarks/anonymize_speed.py --model RUN --throughput 1,2 --batches 1,4,16

Uses the real sample photos (astronaut, obama, biden, messi5) from the asset cache and the real detector.
"time per face" is the wall time of `anonymize_batch` (crop + generation + paste-back) divided by the
number of faces, median over --repeats after one warm-up. Prints Markdown tables.

--throughput N,M runs the whole `toolkit anonymize` command (one process, or N under torchrun: gloo on
CPU, one GPU each with CUDA) on a folder of --images copies of the sample photos and reports images/s and
faces/s from the command's wall time (start-up and model loading included), per batch size.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PHOTOS = ("astronaut", "obama", "biden", "messi5")


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up (model kernels, detector interpreters)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="teacher or student run directory (omit: baselines only)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--steps", default="4,25", help="comma-separated sampling steps (teacher)")
    ap.add_argument("--batches", default="1,8", help="comma-separated faces per batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--throughput", metavar="N,M", help="comma-separated process counts for the end-to-end table")
    ap.add_argument("--images", type=int, default=24, help="images in the end-to-end folder (default 24)")
    ap.add_argument("--method", default="ddpm", help="end-to-end method (ddpm needs --model; or pixelate, blur)")
    ap.add_argument("--json", metavar="FILE", help="also write the printed tables as JSON")
    args = ap.parse_args()
    from _json_tables import capture_tables  # beside this script

    capture_tables(args.json)

    import torch

    from toolkit.anonymize import Options, anonymize_batch
    from toolkit.anonymize.runner import load_model
    from toolkit.anonymize.shard import current_shard
    from toolkit.assets import sample_photo
    from toolkit.detect import detect
    from toolkit.images import load_rgb

    if args.threads:
        torch.set_num_threads(args.threads)
    device = current_shard(args.device).device
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"device {device}" + (f" ({torch.cuda.get_device_name()})" if device.startswith("cuda") else ""))

    images = [load_rgb(sample_photo(name)) for name in PHOTOS]
    print("\n| photo | size | faces | detection (s) |\n|---|---|---|---|")
    persons = []
    for name, img in zip(PHOTOS, images):
        found = detect(img)
        persons.append(found)
        t = median_time(lambda img=img: detect(img), args.repeats)
        print(f"| {name} | {img.shape[1]}x{img.shape[0]} | {len(found)} | {t:.3f} |")
    with_face = [(img, ps) for img, ps in zip(images, persons) if ps]
    if not with_face:
        print("no faces detected in the sample photos; nothing to time")
        return 1
    one_img, one_persons = with_face[0][0], with_face[0][1][:1]

    print("\n| method | steps | faces per batch | time per face (s) |\n|---|---|---|---|")
    for method in ("blur", "pixelate", "mask"):
        opts = Options(method=method)
        t = median_time(lambda: anonymize_batch([one_img], [one_persons], opts), args.repeats)
        print(f"| {method} | - | 1 | {t:.4f} |")
    if args.model:
        inpainter = load_model(args.model, device)
        stage = (getattr(inpainter, "manifest", None) or {}).get("stage", "?")
        steps_list = [None] if stage == "student" else [int(s) for s in args.steps.split(",")]
        for steps in steps_list:
            for batch in (int(b) for b in args.batches.split(",")):
                sampling = {} if steps is None else {"steps": steps}
                opts = Options(method="ddpm", batch_size=batch, sampling=sampling)
                frames, ps = [one_img] * batch, [one_persons] * batch
                t = median_time(lambda: anonymize_batch(frames, ps, opts, inpainter), args.repeats) / batch
                label = getattr(inpainter, "steps", "?") if steps is None else steps
                print(f"| ddpm ({stage} {inpainter.resolution}px) | {label} | {batch} | {t:.3f} |")
    if args.throughput:
        throughput_table(args, device)
    return 0


def throughput_table(args, device: str) -> None:
    """End-to-end `toolkit anonymize` on a folder of photos: 1 process, and N under torchrun."""
    from toolkit.assets import sample_photo

    method_args = ["--method", args.method] + (["--model", args.model] if args.method == "ddpm" else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    print(f"\n### end to end: {args.images} photos, --method {args.method}, device {device}\n")
    print("| processes | batch size | faces | wall (s) | images/s | faces/s |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for k in range(args.images):
            src = sample_photo(PHOTOS[k % len(PHOTOS)])
            shutil.copy(src, photos / f"{k:04d}_{src.name}")
        for procs in (int(n) for n in args.throughput.split(",")):
            launch = [sys.executable] + (["-m", "torch.distributed.run", "--nproc_per_node", str(procs)]
                                         if procs > 1 else [])
            for batch in (int(b) for b in args.batches.split(",")):
                out = Path(tmp) / f"out_{procs}_{batch}"
                t = time.perf_counter()
                subprocess.run([*launch, "-m", "toolkit.cli", "anonymize", str(photos), "--out", str(out),
                                "--quiet", "--device", args.device, "--batch-size", str(batch), *method_args],
                               env=env, check=True, stdout=subprocess.DEVNULL)
                wall = time.perf_counter() - t
                summary = json.loads((out / "anonymize_report.json").read_text())["summary"]
                print(f"| {procs} | {batch} | {summary['faces']} | {wall:.1f} | {args.images / wall:.2f} | "
                      f"{summary['faces'] / wall:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
