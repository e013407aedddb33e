"""CPU time per face: the guided teacher at its default steps vs the distilled student at 1, 2 and 4 steps.

    python benchmarks/student_speed.py                          # untrained nets of the presets (timing only)
    python benchmarks/student_speed.py --teacher RUN --students RUN1 RUN2 RUN4
    python benchmarks/student_speed.py --teacher-preset small64 --student-preset mcu64

Weights do not change the arithmetic, so without runs the script times freshly built networks of the
presets (teacher: toolkit.diffusion presets + its SAMPLING_DEFAULTS; student: toolkit.distill presets) on a
real face crop (skimage's astronaut). Prints a Markdown table: milliseconds per face at batch 1 (one face at a
time, as on a device) and at batch 16 (throughput), network passes per face, and speed-up over the teacher.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toolkit.assets import ASTRONAUT_KEYPOINTS  # noqa: E402

# The astronaut's face in a 240 px square crop at (110, 20) of skimage.data.astronaut().
_CROP = (110, 20, 350, 260)
_BOX = (170, 60, 290, 190)


def face_batch(size: int, batch: int):
    """A real face crop at `size` px, as the inpainter contract wants it, repeated `batch` times."""
    import cv2
    import skimage.data

    x0, y0, x1, y1 = _CROP
    crop = skimage.data.astronaut()[y0:y1, x0:x1]
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    side = x1 - x0
    image = torch.from_numpy(crop).permute(2, 0, 1).float() / 127.5 - 1
    kp = torch.from_numpy((ASTRONAUT_KEYPOINTS - [x0, y0]) / side).float()
    vis = ((kp >= 0) & (kp <= 1)).all(1)
    mask = torch.ones(1, size, size)
    bx0, by0, bx1, by1 = (int(round((v - o) / side * size)) for v, o in zip(_BOX, (x0, y0, x0, y0)))
    mask[:, by0:by1, bx0:bx1] = 0
    rep = lambda t: t[None].repeat(batch, *([1] * t.ndim))  # noqa: E731
    return rep(image), rep(mask), rep(kp), rep(vis)


def teacher_from_preset(name: str):
    from diffusers import DDPMScheduler

    from toolkit.diffusion.model import build_unet, conditioning_spec
    from toolkit.diffusion.presets import get_preset
    from toolkit.diffusion.sampling import SAMPLING_DEFAULTS, TeacherInpainter

    preset = get_preset(name)
    torch.manual_seed(0)
    unet = build_unet(preset)
    sched = DDPMScheduler(**preset["noise"])
    manifest = {"stage": "teacher", "preset": preset, "conditioning": conditioning_spec(preset),
                "sampling_defaults": SAMPLING_DEFAULTS}
    return TeacherInpainter(unet, dict(sched.config), manifest, device="cpu")


def student_from_preset(name: str, steps: int, resolution: int):
    from toolkit.distill.inpainter import StudentInpainter
    from toolkit.distill.student import Student, get_preset

    torch.manual_seed(0)
    ts = list(np.linspace(960, 0, steps, endpoint=False).round().astype(int))
    student = Student(get_preset(name), ts, resolution, [0.01 + 0.9 * k / steps for k in range(steps)],
                      {"kind": "gaussian", "sigma_px": 1.0})
    return StudentInpainter(student)


def time_per_face(model, size: int, batch: int, repeats: int) -> float:
    images, masks, kps, vis = face_batch(size, batch)
    model.inpaint(images, masks, kps, vis, seed=0)  # warm-up (allocations, lazy init)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        model.inpaint(images, masks, kps, vis, seed=r)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / batch * 1000.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, help="teacher run (default: untrained --teacher-preset)")
    ap.add_argument("--students", type=Path, nargs="*", default=[], help="student runs (default: --student-preset)")
    ap.add_argument("--teacher-preset", default="tiny32")
    ap.add_argument("--student-preset", default="mcu32")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", metavar="FILE", help="also write the printed tables as JSON")
    args = ap.parse_args(argv)
    from _json_tables import capture_tables  # beside this script

    capture_tables(args.json)
    if args.threads:
        torch.set_num_threads(args.threads)

    from toolkit.artifacts import load_inpainter

    teacher = load_inpainter(args.teacher, device="cpu") if args.teacher else teacher_from_preset(args.teacher_preset)
    S = teacher.resolution
    d = teacher.defaults
    passes = d["steps"] * (1 if d["cfg_scale"] in (0.0, 1.0) else 2)
    rows = [(f"teacher ({args.teacher.name if args.teacher else args.teacher_preset}, {d['scheduler']} "
             f"{d['steps']} steps, cfg {d['cfg_scale']}, rg {d['rg_weight']})", teacher,
             f"{passes}{' + backward' if d['rg_weight'] > 0 else ''}")]
    if args.students:
        for run in args.students:
            s = load_inpainter(run)
            rows.append((f"student {run.name} ({s.steps} step)", s, str(s.steps)))
    else:
        for n in (1, 2, 4):
            rows.append((f"student {args.student_preset}, {n} step", student_from_preset(args.student_preset, n, S), str(n)))

    print(f"CPU: {torch.get_num_threads()} torch threads, torch {torch.__version__}; face crops {S}x{S}; "
          f"median of {args.repeats} runs")
    cols = " | ".join(f"ms/face (batch {b})" for b in args.batches)
    print(f"\n| model | net passes / face | {cols} | speed-up (batch {args.batches[0]}) |")
    print("|---|---|" + "---|" * len(args.batches) + "---|")
    base = None
    for name, model, npass in rows:
        ms = [time_per_face(model, S, b, args.repeats) for b in args.batches]
        base = base or ms[0]
        print(f"| {name} | {npass} | " + " | ".join(f"{v:.2f}" for v in ms) + f" | {base / ms[0]:.1f}x |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
