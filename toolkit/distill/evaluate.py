"""Student vs guided teacher on held-out faces: PSNR, SSIM and keypoint adherence; sample grids.

Both models inpaint the same val crops from the same noise z; the teacher at its default (guided) DDIM steps.

- PSNR / SSIM (skimage.metrics) are computed on the face box only (mask == 0): outside it both outputs are the
  input pixels exactly, which would only inflate the figures.
- Keypoint adherence, two figures, because no landmark detector is reliable on a 32 px face:
  * `kp_patch_psnr_db`: PSNR between student and teacher in small windows (1/4 of the box side) centred on the
    conditioning face keypoints (nose, eyes, ears) that lie in the box: do the student's facial features sit
    where the teacher put them for the same keypoints? (teacher-relative: the teacher is the reference.)
  * `kp_detected_error` / `kp_detection_rate` (absolute, for teacher and student alike): the composited crop is
    upsampled to 256 px and run through `toolkit.detect.detect`; the detected face's points are compared with
    the conditioning points (mean distance / face box diagonal, `toolkit.eval.metrics.keypoint_error`). Faces
    the detector misses count in the rate, not in the error. Reported as null when toolkit.detect is missing.
"""

from __future__ import annotations

import math

import numpy as np
import torch

FACE_POINTS = (0, 1, 2, 3, 4)  # nose, eyes, ears: the points that fall inside the face box
DETECT_SIZE = 256


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """(3,S,S) in [-1,1] -> (S,S,3) uint8."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def box_of_mask(mask: torch.Tensor):
    """(x0, y0, x1, y1) of the unknown (mask == 0) region of a (1,S,S) mask; None when nothing is masked."""
    ys, xs = torch.nonzero(mask[0] < 0.5, as_tuple=True)
    if len(ys) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def box_psnr_ssim(a: np.ndarray, b: np.ndarray, box) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    x0, y0, x1, y1 = box
    pa, pb = a[y0:y1, x0:x1], b[y0:y1, x0:x1]
    mse = float(np.mean((pa.astype(np.float64) - pb.astype(np.float64)) ** 2))
    psnr = 100.0 if mse == 0 else float(peak_signal_noise_ratio(pa, pb, data_range=255))
    side = min(pa.shape[0], pa.shape[1])
    win = min(7, side if side % 2 else side - 1)
    ssim = float(structural_similarity(pa, pb, channel_axis=2, data_range=255, win_size=win)) if win >= 3 else float("nan")
    return psnr, ssim


def keypoint_patch_psnr(a: np.ndarray, b: np.ndarray, keypoints, visible, box) -> float:
    """Mean PSNR over windows around the visible face keypoints inside the box; nan if there are none."""
    S = a.shape[0]
    x0, y0, x1, y1 = box
    half = max(1, round(min(x1 - x0, y1 - y0) / 8))
    vals = []
    for j in FACE_POINTS:
        if not bool(visible[j]):
            continue
        px, py = float(keypoints[j][0]) * S, float(keypoints[j][1]) * S
        if not (x0 <= px < x1 and y0 <= py < y1):
            continue
        cx, cy = int(px), int(py)
        sl = (slice(max(cy - half, 0), min(cy + half + 1, S)), slice(max(cx - half, 0), min(cx + half + 1, S)))
        mse = float(np.mean((a[sl].astype(np.float64) - b[sl].astype(np.float64)) ** 2))
        vals.append(100.0 if mse == 0 else 10 * math.log10(255.0**2 / mse))
    return float(np.mean(vals)) if vals else float("nan")


def _detector():
    try:
        from toolkit.detect import detect
    except ImportError:
        return None
    return detect


def detected_keypoint_error(detect, crop: np.ndarray, keypoints, visible, box):
    """Normalized error of detected vs conditioning face points on the upsampled crop; None if no face found."""
    import cv2

    from toolkit.eval.metrics import keypoint_error

    S = crop.shape[0]
    big = cv2.resize(crop, (DETECT_SIZE, DETECT_SIZE), interpolation=cv2.INTER_CUBIC)
    try:
        found = detect(big)
    except Exception:  # a detector failure on a generated face is a miss, not an evaluation crash
        return None
    if not found:
        return None
    scale = DETECT_SIZE / S
    fb = np.array(box, float) * scale
    centre = np.array([(fb[0] + fb[2]) / 2, (fb[1] + fb[3]) / 2])

    def dist(d):
        b = np.asarray(d.face_box, float)
        return float(np.hypot((b[0] + b[2]) / 2 - centre[0], (b[1] + b[3]) / 2 - centre[1]))

    det = min(found, key=dist)
    ref = np.asarray(keypoints, float)[list(FACE_POINTS)] * DETECT_SIZE
    ref_vis = np.asarray(visible, bool)[list(FACE_POINTS)]
    got = np.asarray(det.keypoints, float)[list(FACE_POINTS), :2]
    got_vis = np.asarray(getattr(det, "visible", np.ones(7, bool)), bool)[list(FACE_POINTS)]
    err = keypoint_error(ref, ref_vis, got, got_vis, fb)
    return None if math.isnan(err) else err


def _summary(rows: dict) -> dict:
    out = {}
    for key, vals in rows.items():
        vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
        out[key] = round(float(np.mean(vals)), 4) if vals else None
    return out


@torch.no_grad()
def evaluate_against_teacher(teacher, students: dict, dataset, n_faces: int = 16, seed: int = 1234,
                             batch_size: int = 8, progress: bool = True, grid_faces: int = 6):
    """students: {steps: inpainter}. Returns {"faces", "teacher": {...}, "students": {str(steps): {...}},
    "grid_rows": [[real, teacher, student_1, ...] uint8 crops]}."""
    from tqdm import tqdm

    n = min(n_faces, len(dataset))
    if n == 0:
        raise ValueError("evaluation set is empty")
    detect = _detector()
    t_rows = {"kp_detected_error": [], "kp_detected": []}
    s_rows = {k: {"psnr_db": [], "ssim": [], "kp_patch_psnr_db": [], "kp_detected_error": [], "kp_detected": []}
              for k in students}
    grid = []
    with tqdm(total=n, desc="evaluate", unit="face", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            items = [dataset.get(i) for i in range(start, min(start + batch_size, n))]
            images = torch.stack([it["image"] for it in items])
            masks = torch.stack([it["mask"] for it in items])
            kps = torch.stack([it["keypoints"] for it in items])
            vis = torch.stack([it["visible"] for it in items])
            # Same per-image seeds => same initial noise z for the teacher and every student.
            seeds = [seed + start + j for j in range(len(items))]
            t_out = teacher.sample(images, masks, kps, vis, seeds)
            s_out = {k: inp.inpaint(images, masks, kps, vis, seed=seeds) for k, inp in students.items()}
            for j, it in enumerate(items):
                box = box_of_mask(it["mask"])
                if box is None:
                    continue
                t_img = _to_uint8(t_out[j])
                kp, v = it["keypoints"].numpy(), it["visible"].numpy()
                if detect is not None:
                    e = detected_keypoint_error(detect, t_img, kp, v, box)
                    t_rows["kp_detected_error"].append(e)
                    t_rows["kp_detected"].append(float(e is not None))
                row = [_to_uint8(it["image"]), t_img]
                for k in students:
                    s_img = _to_uint8(s_out[k][j])
                    psnr, ssim = box_psnr_ssim(s_img, t_img, box)
                    r = s_rows[k]
                    r["psnr_db"].append(psnr)
                    r["ssim"].append(ssim)
                    r["kp_patch_psnr_db"].append(keypoint_patch_psnr(s_img, t_img, kp, v, box))
                    if detect is not None:
                        e = detected_keypoint_error(detect, s_img, kp, v, box)
                        r["kp_detected_error"].append(e)
                        r["kp_detected"].append(float(e is not None))
                    row.append(s_img)
                if len(grid) < grid_faces:
                    grid.append(row)
            bar.update(len(items))
    teacher_summary = _summary(t_rows)
    teacher_summary = {"kp_detected_error": teacher_summary["kp_detected_error"],
                       "kp_detection_rate": teacher_summary["kp_detected"]}
    students_summary = {}
    for k, r in s_rows.items():
        s = _summary(r)
        s["kp_detection_rate"] = s.pop("kp_detected")
        students_summary[str(k)] = s
    return {"faces": n, "teacher": teacher_summary, "students": students_summary, "grid_rows": grid,
            "detector": "toolkit.detect" if detect is not None else None}


def save_sample_grid(path, rows, scale: int = 4) -> None:
    """Rows of [real | teacher | student ...] crops, enlarged `scale`x with nearest so pixels stay visible."""
    from toolkit.images import save_rgb

    if not rows:
        return
    pad = 2
    tiles = [np.concatenate([np.pad(t.repeat(scale, 0).repeat(scale, 1), ((pad, pad), (pad, pad), (0, 0)),
                                    constant_values=255) for t in row], axis=1) for row in rows]
    save_rgb(np.concatenate(tiles, axis=0), path)


def format_table(result: dict) -> str:
    lines = [
        f"student vs guided teacher on {result['faces']} held-out faces (face box only)",
        "| steps | PSNR dB | SSIM | kp-patch PSNR dB | kp detect rate | kp error |",
        "|---|---|---|---|---|---|",
    ]

    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    t = result["teacher"]
    lines.append(f"| teacher | - | - | - | {f(t['kp_detection_rate'], '.2f')} | {f(t['kp_detected_error'], '.3f')} |")
    for k, s in sorted(result["students"].items(), key=lambda kv: int(kv[0])):
        lines.append(
            f"| {k} | {f(s['psnr_db'], '.2f')} | {f(s['ssim'], '.3f')} | {f(s['kp_patch_psnr_db'], '.2f')} | "
            f"{f(s['kp_detection_rate'], '.2f')} | {f(s['kp_detected_error'], '.3f')} |"
        )
    return "\n".join(lines)


def evaluate_runs(runs, data=None, n_faces: int = 16, progress: bool = True, update_manifests: bool = True) -> dict:
    """Evaluate several student runs of one teacher together (one teacher pass) and store the figures."""
    from pathlib import Path

    from toolkit.artifacts import read_manifest, update_manifest
    from toolkit.data import FDFDataset
    from toolkit.distill.inpainter import STAGE, load_student_inpainter
    from toolkit.distill.teacher import load_teacher

    runs = [Path(r) for r in runs]
    manifests = [read_manifest(r, expect_stage=STAGE) for r in runs]
    teachers = {m["teacher"]["path"] for m in manifests}
    if len(teachers) != 1:
        raise ValueError(f"the runs were distilled from different teachers ({', '.join(sorted(teachers))}); "
                         "evaluate them separately")
    sampling = manifests[0]["teacher"]["sampling"]
    if any(m["teacher"]["sampling"] != sampling for m in manifests):
        raise ValueError("the runs were distilled with different teacher sampling options; evaluate them separately")
    teacher = load_teacher(teachers.pop(), cfg_scale=sampling["cfg_scale"], rg_weight=sampling["rg_weight"],
                           repaint=sampling["repaint"], steps=sampling["steps"])
    students = {}
    for r, m in zip(runs, manifests):
        if m["steps"] in students:
            raise ValueError(f"two runs with {m['steps']} step(s): {r}; evaluate them separately")
        students[m["steps"]] = load_student_inpainter(r)
    data = Path(data) if data else Path(manifests[0]["data"])
    val_set = FDFDataset(data, "val", size=teacher.resolution)
    result = evaluate_against_teacher(teacher, students, val_set, n_faces=n_faces, progress=progress)
    if update_manifests:
        for r, m in zip(runs, manifests):
            metrics = dict(m.get("metrics") or {})
            metrics.update(result["students"][str(m["steps"])])
            metrics["teacher_keypoints"] = result["teacher"]
            metrics["eval_faces"] = result["faces"]
            metrics["eval_split"] = "val"
            update_manifest(r, metrics=metrics)
    return result
