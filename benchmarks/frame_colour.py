"""Colour of the faces the on-device pipeline pastes: with and without the colour split of a gray-trained student.

Runs the host reference of `anonymize_frame` (bit-exact with firmware/src/app/tk_frame.c) on the bundled photos'
96x96 frames twice, with the student's colour split off and on (`Pipeline.luma_student`), and prints per frame
the status (with the pipeline's verify pass) and the face's chroma, and on the pasted output (before the verify
pass) in the middle half of the face box (the face's skin): the |Cr| + |Cb| distance of the output's mean chroma
from the real face's, the output's and the input's mean saturation ((|Cr - 128| + |Cb - 128|) / 2), and the
high-frequency energy (mean |Y - Gaussian blur(Y, 1 px)|) of the whole box. Optionally writes a picture:
frame | split off | split on.

--swaps first prints what each input of the student step does to the generated face, one swap at a time
against the device without the split (HF of the generated crop pixels, and their saturation): BlazePose's
keypoints (`toolkit.detect`, mapped into the frame) for the pose net's, the inner face box (no cover_head),
gray input, no shoulder maps, and the float student (the quantized run's source) on identical inputs.

    python benchmarks/frame_colour.py --pose runs/pose-q --model runs/student-q [--swaps] [--png grid.png]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _ycc(img):
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(img, np.uint8), cv2.COLOR_RGB2YCrCb).reshape(-1, 3).astype(np.float64)


def _high_freq(img, where=None) -> float:
    """Mean |Y - Gaussian(Y, 1 px)| over the image, or over its pixels where `where` (H x W bool) is set."""
    import cv2

    y = _ycc(img)[:, 0].reshape(img.shape[:2]).astype(np.float32)
    hf = np.abs(y - cv2.GaussianBlur(y, (0, 0), 1.0))
    return float((hf if where is None else hf[where]).mean())


def face_colour(frame, out, box) -> dict:
    x0, y0, x1, y1 = (max(int(v), 0) for v in box)
    w, h = x1 - x0, y1 - y0
    centre = (slice(y0 + h // 4, y1 - h // 4), slice(x0 + w // 4, x1 - w // 4))
    got, real = _ycc(out[centre])[:, 1:], _ycc(frame[centre])[:, 1:]
    return {"chroma_err": float(np.abs(got.mean(0) - real.mean(0)).sum()),
            "sat_out": float(np.abs(got - 128).mean()), "sat_in": float(np.abs(real - 128).mean()),
            "hf_out": _high_freq(out[y0:y1, x0:x1]), "hf_in": _high_freq(frame[y0:y1, x0:x1])}


def student_swaps(pipe, frames, seed: int) -> None:
    """Table of the generated crop's HF and saturation per swapped input (see the module docstring)."""
    import torch

    from toolkit import assets
    from toolkit.distill.inpainter import load_student_inpainter, sample_student
    from toolkit.images import load_rgb
    from toolkit.onboard import frames as F
    from toolkit.onboard import reference as R

    inp = load_student_inpainter(pipe.meta["student_source"])
    S = pipe.size
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32)).permute(2, 0, 1)[None]  # noqa: E731

    def generate(frame, kp, vis, cover=True, gray=False, shoulders=True, float_net=False):
        box = R.face_box(kp, vis, cover_head=cover)
        crop = R.crop_box(box)
        seen = np.array(vis, bool) & (shoulders or np.arange(7) < 5)
        p = dataclasses.replace(pipe, luma_student=gray)
        img, known, maps, x, _ = R.student_inputs(frame, p, kp, seen, box, crop, seed)
        if float_net:
            z = R.noise_q16(seed, S * S * 3).reshape(S, S, 3) / 65536.0
            with torch.no_grad():
                x0, _ = sample_student(inp.student, inp.alphas, nchw(p.pixel_q16[img] / 65536.0),
                                       nchw(known[..., None]), nchw(maps / 32768.0), nchw(z))
            gen = ((x0[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        else:
            gen = R.run_student(p, img, known, maps, x)
        return _high_freq(gen, ~known), float(np.abs(_ycc(gen)[:, 1:] - 128).reshape(S, S, 2)[~known].mean())

    swaps = ("device", "blazepose keypoints", "inner box", "gray input", "no shoulder maps", "float student")
    print("| frame | " + " | ".join(swaps) + " |")
    print("|---|" + "---:|" * len(swaps))
    sums = np.zeros((len(swaps), 2))
    for label, frame in frames:
        got = F.person_frame(load_rgb(assets.sample_photo(label)), pipe.frame_size)
        kp_t = np.floor(np.asarray(got[1]) * 256 + 0.5).astype(np.int64)
        vis_t = np.asarray(got[2], bool) & (kp_t >= 0).all(1) & (kp_t < 256 * pipe.frame_size).all(1)
        kp, _, vis = R.pose_keypoints(frame, pipe)
        vals = [generate(frame, kp, vis), generate(frame, kp_t, vis_t), generate(frame, kp, vis, cover=False),
                generate(frame, kp, vis, gray=True), generate(frame, kp, vis, shoulders=False),
                generate(frame, kp, vis, float_net=True)]
        sums += np.array(vals)
        print(f"| {label} | " + " | ".join(f"{h:.2f} ({c:.1f})" for h, c in vals) + " |")
    m = sums / len(frames)
    print("| **mean** | " + " | ".join(f"{h:.2f} ({c:.1f})" for h, c in m) + " |")
    print("\nHF of the generated crop pixels (their saturation in brackets)")
    data = Path(str(inp.manifest.get("data") or ""))
    if (data / "val").is_dir():  # the same measure on the faces the student was evaluated on
        from toolkit.data.fdf import FDFDataset

        ds = FDFDataset(data, "val", size=S)
        hf_gen, hf_real = [], []
        for i in range(min(40, len(ds))):
            it = ds.get(i)
            out = inp.inpaint(it["image"][None], it["mask"][None], it["keypoints"][None], it["visible"][None], seed=i)
            unknown = it["mask"][0].numpy() < 0.5
            for img, acc in ((out[0], hf_gen), (it["image"], hf_real)):
                u8 = ((img.permute(1, 2, 0).numpy().clip(-1, 1) + 1) * 127.5).round().astype(np.uint8)
                acc.append(_high_freq(u8, unknown))
        print(f"the float student on {len(hf_gen)} of its own validation faces ({data}): HF {np.mean(hf_gen):.2f} "
              f"(the real faces {np.mean(hf_real):.2f})")
    print()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pose", required=True, help="quantized pose model run directory")
    ap.add_argument("--model", required=True, help="quantized student run directory")
    ap.add_argument("--frames", type=int, default=5, help="real frames (bundled photos)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--png", default=None, help="also write frame | split off | split on, 3x upscaled")
    ap.add_argument("--swaps", action="store_true", help="first the table of the student step's input swaps")
    args = ap.parse_args(argv)

    from toolkit.onboard import frames as F
    from toolkit.onboard import reference as R
    from toolkit.onboard.config import build_pipeline

    pipe = build_pipeline(args.pose, args.model, "pose_step0", "student")
    print(f"student trained on gray faces (colour split available): {pipe.luma_student}\n")
    frames = F.real_frames(args.frames)
    if args.swaps:
        student_swaps(pipe, frames, args.seed)
    print("| frame | colour split | status | chroma (Cr, Cb) | face chroma error | saturation out / in "
          "| HF out / in |")
    print("|---|---|---|---|---:|---:|---:|")
    sums, rows = {}, []
    for label, frame in frames:
        row = [frame]
        for split in (False, True):
            p = dataclasses.replace(pipe, luma_student=split)
            status = R.anonymize_frame(frame, p, args.seed)[1]["status"]
            # measured on what was pasted, before the verify passes judge it (a refused frame never leaves)
            out, info = R.anonymize_frame(frame, dataclasses.replace(p, verify=False, verifier=None), args.seed)
            if out is None:
                print(f"| {label} | {'on' if split else 'off'} | {status} | | | | |")
                row.append(np.zeros_like(frame))
                continue
            m = face_colour(frame, out, info["box"])
            sums.setdefault(split, []).append(m)
            print(f"| {label} | {'on' if split else 'off'} | {status} | {info['faces'][0]['chroma']} "
                  f"| {m['chroma_err']:.1f} | {m['sat_out']:.1f} / {m['sat_in']:.1f} "
                  f"| {m['hf_out']:.2f} / {m['hf_in']:.2f} |")
            row.append(out)
        rows.append(np.concatenate(row, 1))
    print()
    for split, ms in sums.items():
        mean = {k: np.mean([m[k] for m in ms]) for k in ms[0]}
        print(f"colour split {'on' if split else 'off'} ({len(ms)} frames with a face): face chroma error "
              f"{mean['chroma_err']:.1f}, saturation {mean['sat_out']:.1f} (real {mean['sat_in']:.1f}), "
              f"HF {mean['hf_out']:.2f} (real {mean['hf_in']:.2f})")
    if args.png:
        import cv2

        g = np.concatenate(rows, 0)
        cv2.imwrite(args.png, cv2.cvtColor(cv2.resize(g, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST),
                                           cv2.COLOR_RGB2BGR))
    return 0


if __name__ == "__main__":
    sys.exit(main())
