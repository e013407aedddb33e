"""End-to-end `toolkit anonymize` speed: detection, and time per face vs sampling steps and batch size.

    python benchmarks/anonymize_speed.py --model RUN               # a teacher or student run
    python benchmarks/anonymize_speed.py                           # baselines and detection only
    python benchmarks/anonymize_speed.py --model RUN --threads 1   # on a shared, busy CPU
    python benchmarks/anonymize_speed.py --model RUN --device cuda

Uses the real sample photos (astronaut, obama, biden, messi5) from the asset cache and the real detector.
"time per face" is the wall time of `anonymize_batch` (crop + generation + paste-back) divided by the
number of faces, median over --repeats after one warm-up. Prints Markdown tables.
"""

import argparse
import platform
import statistics
import sys
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
    ap.add_argument("--json", metavar="FILE", help="also write the printed tables as JSON")
    args = ap.parse_args()
    from _json_tables import capture_tables  # beside this script

    capture_tables(args.json)

    import torch

    from toolkit.anonymize import Options, anonymize_batch
    from toolkit.anonymize.runner import load_model, resolve_device
    from toolkit.assets import sample_photo
    from toolkit.detect import detect
    from toolkit.images import load_rgb

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
