"""Anonymize at the sensor, measured: frames of 1-4 people from the bundled photos and frames without anyone.

    python benchmarks/multi_person_frames.py --pose POSE_Q --model STUDENT_Q [--verifier VERIFIER_Q] \
        [--frames 24] [--blank 8]

Runs the host integer reference `toolkit.onboard.reference.anonymize_frame` (bit-exact with the firmware:
`toolkit bench --pipeline` and tests/test_sensor_multi.py check that on qemu-m7) on
`toolkit.onboard.frames.multi_person_frames` (1-4 people side by side or 2x2, three scales, every other person
mirrored) and on blank and background frames, and prints a Markdown table:

- delivered: frames that left the device (status ok)
- delivered with a face left: delivered frames where a person's teacher (BlazePose) nose or eye lies outside
  every replaced box. The product requires 0.
- refused: no_face / too_many_faces / verify_failed (the pose net's re-run on the output, or with --verifier
  the independent face-presence net (toolkit.pose.heads), sees a face outside the replaced boxes; the column
  "by the verifier" counts the frames only the verifier refused). A verify_failed frame is a rightful refusal
  when the same frame without the verify passes would have left with a face (column "refused, a face would
  have been left"), else a false refusal; a no_face / too_many_faces frame with people is a false refusal when
  it held no more people than the device replaces; frames without anyone are always refused (the pipeline
  only releases frames with a replaced face).
- RAM and flash of the whole pipeline (frame + shared model buffers + scratch; all networks + tables).
Per-stage instructions come from `toolkit bench --pipeline --board qemu-m7` (docs/firmware.md).
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np


def background_frames(n: int, size: int = 96):
    """Frames without a person: a flat grey, and crops of skimage's coffee / rocket-free scenes."""
    import cv2
    from skimage import data

    from toolkit.onboard.frames import blank_frame

    out = [("blank", blank_frame(size))]
    scenes = [data.coffee(), data.chelsea(), data.rocket()]
    for i in range(n - 1):
        img = scenes[i % len(scenes)]
        h, w = img.shape[:2]
        s = min(h, w) // (1 + i // len(scenes) % 2)  # whole scene, then a zoomed corner
        crop = img[:s, (w - s) * (i % 2):(w - s) * (i % 2) + s]
        out.append((f"scene{i}", np.ascontiguousarray(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA))))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pose", required=True, help="quantized multi-person pose run (toolkit quantize output)")
    ap.add_argument("--model", required=True, help="quantized student run")
    ap.add_argument("--verifier", default=None, help="quantized face-presence verifier run (toolkit.pose.heads)")
    ap.add_argument("--frames", type=int, default=24, help="multi-person frames (1-4 people, cycling)")
    ap.add_argument("--blank", type=int, default=8, help="frames without a person")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import dataclasses

    from toolkit.onboard import frames as F
    from toolkit.onboard import reference as R
    from toolkit.onboard.config import build_pipeline, config_flash_bytes, memory_plan

    pipe = build_pipeline(args.pose, args.model, "pose_step0", "student", verifier_run=args.verifier)
    graphs = pipe.graphs
    unverified = dataclasses.replace(pipe, verify=False, verifier=None)
    by_people: dict[int, Counter] = {}
    for i, (label, frame, people) in enumerate(F.multi_person_frames(args.frames, pipe.frame_size)):
        out, info = R.anonymize_frame(frame, pipe, args.seed + i)
        c = by_people.setdefault(len(people), Counter())
        c["frames"] += 1
        c[info["status"]] += 1
        c["by_verifier"] += bool(info.get("verifier_left"))
        if out is not None:
            c["left"] += F.faces_left(out, [f["box"] for f in info["faces"]], people) > 0
        elif info["status"] == R.STATUS_VERIFY_FAILED:  # would it have left with a face without the checks?
            out0, info0 = R.anonymize_frame(frame, unverified, args.seed + i)
            if F.faces_left(out0, [f["box"] for f in info0["faces"]], people):
                c["rightly_refused"] += 1
            else:
                c["false_refusal"] += 1
        elif len(people) <= pipe.max_faces:
            c["false_refusal"] += 1
    empty = Counter()
    for i, (label, frame) in enumerate(background_frames(args.blank, pipe.frame_size)):
        _, info = R.anonymize_frame(frame, pipe, i)
        empty["frames"] += 1
        empty[info["status"]] += 1
        empty["by_verifier"] += bool(info.get("verifier_left"))

    print(f"## Multi-person frames (host reference = firmware), pose {args.pose}")
    print()
    print("| people per frame | frames | delivered | delivered with a face left | refused, a face would have been left "
          "| false refusals | no_face | too_many_faces | verify_failed | by the verifier |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    total = Counter()
    for n in sorted(by_people):
        c = by_people[n]
        total.update(c)
        print(f"| {n} | {c['frames']} | {c['ok']} ({c['ok'] / c['frames']:.0%}) | {c['left']} | {c['rightly_refused']} | "
              f"{c['false_refusal']} | "
              f"{c['no_face']} | {c['too_many_faces']} | {c['verify_failed']} | {c['by_verifier']} |")
    t = total
    print(f"| **1-4** | {t['frames']} | {t['ok']} ({t['ok'] / max(t['frames'], 1):.0%}) | **{t['left']}** "
          f"({t['left'] / max(t['ok'], 1):.0%} of delivered) | {t['rightly_refused']} | {t['false_refusal']} | {t['no_face']} | "
          f"{t['too_many_faces']} | {t['verify_failed']} | {t['by_verifier']} |")
    print(f"| none (blank, scenes) | {empty['frames']} | {empty['ok']} | - | - | (refused by design: {empty['frames'] - empty['ok']}) | "
          f"{empty['no_face']} | {empty['too_many_faces']} | {empty['verify_failed']} | {empty['by_verifier']} |")
    from toolkit.deploy.codegen import plan_arena

    # the export's own arena plan (with the int16-weight convolutions' scratch, as stm32h743's fit check picks)
    arenas = {n: plan_arena(g, wide=True)["size"] for n, g in zip(pipe.model_names, graphs)}
    mem = memory_plan(pipe, arenas)
    flash = sum(g.weight_bytes() for g in graphs) + config_flash_bytes(pipe)
    print()
    print(f"RAM (frame + model arena, in, out + scratch, the export's plan): "
          f"{mem['total'] / 1024:.1f} KiB; flash (int8 weights + tables, before int16 expansion): {flash / 1024:.1f} KiB; "
          f"faces per frame at most {pipe.max_faces}; verify pass: {'on' if pipe.verify else 'off'}; verifier: "
          + (f"{args.verifier} (int8 output >= {pipe.verifier.min_value}, probability {pipe.verifier.threshold:.3f})"
             if pipe.verifier else "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
