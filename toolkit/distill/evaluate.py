"""Student vs guided teacher on held-out faces: PSNR, SSIM, keypoint adherence and time per face; sample grids.

Only the dataset's val split is used (never training faces): up to `n_faces` of its faces (default 64), each
with `draws` noise draws (default 1). The teacher and every student inpaint the same crops from the same noise
z (same per-image seed); the teacher with the guidance its targets were made with, at `teacher_steps` DDIM
steps (`evaluate_runs`: 50 by default; the evaluation at the end of distillation uses the targets' own steps).
With fewer than MIN_FACES held-out faces a warning goes into the output and the manifest: the figures are
then anecdotes, not estimates.

- PSNR / SSIM (skimage.metrics), student vs teacher, on the face box only (mask == 0): outside it both
  outputs are the input pixels exactly, which would only inflate the figures.
- Keypoint adherence (`toolkit.distill.probe`): a small keypoint probe, trained on the real training crops of
  the dataset at the students' resolution, reads the nose, eyes and ears of each composited output; the
  figure is the mean distance to the keypoints the generator was conditioned on, divided by the face-box side
  sqrt(w*h) (`kp_nme`, lower is better), and the fraction of points within 0.2 box sides (`kp_pck@0.2`).
  The same probe on the real held-out crops against their own keypoints gives the floor (`real` row): what real
  faces score; a generator at (or, by probe noise and its prior, slightly under) it is as adherent as the
  probe can tell. Two reference rows bracket the figure from the other
  side: the mean keypoint positions (`mean_face`, no probe: the box-relative training mean scored against the
  conditioning) and the same crops with the face box filled with noise (`noise_control`: what a generator
  that draws nothing scores through the probe).
- `kp_patch_psnr_db` (teacher-relative, kept for continuity): PSNR between student and teacher in small
  windows around the conditioning face keypoints.
- `sec_per_face`: wall time of the teacher's / student's inpainting call per face, batch of `batch_size`,
  on this machine (CPU threads as set by the caller).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

FACE_POINTS = (0, 1, 2, 3, 4)  # nose, eyes, ears: the points that fall inside the face box
MIN_FACES = 8  # fewer held-out faces than this: say so, loudly
PROBE_DIR = "keypoint_probe"  # where a student run keeps the keypoint probe its figures were measured with


# The reference the students are measured against: the guided teacher at this many DDIM steps.
EVAL_TEACHER_STEPS = 50

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


def _summary(rows: dict) -> dict:
    out = {}
    for key, vals in rows.items():
        vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
        out[key] = round(float(np.mean(vals)), 4) if vals else None
    return out


def few_faces_warning(faces: int, available: int, split: str = "val") -> str | None:
    """The warning for an evaluation on fewer than MIN_FACES held-out faces (None when there are enough)."""
    if faces >= MIN_FACES:
        return None
    if available > faces:
        why = f"of {available} in the {split} split (raise --faces)"
    else:
        why = (f"the {split} split holds no more; build the dataset with a larger val split for a real "
               "evaluation (training faces are never used)")
    return (f"only {faces} held-out face(s) evaluated, fewer than {MIN_FACES}: these figures are anecdotes, "
            f"not estimates; {why}")


@torch.no_grad()
def evaluate_against_teacher(teacher, students: dict, dataset, n_faces: int = 64, seed: int = 1234,
                             batch_size: int = 8, progress: bool = True, grid_faces: int = 6, probe=None,
                             draws: int = 1, baseline=None):
    """students: {steps: inpainter}; dataset: the held-out (val) FDFDataset; probe: a KeypointProbe for the
    adherence figures (None: no adherence figures); baseline: (7, 2) box-relative mean keypoints, scored
    against the conditioning keypoints of the same samples (the "mean_face" row, no probe involved).

    Returns {"faces", "draws", "samples", "split", "available", "warning" (None or text), "real",
    "mean_face", "noise_control" (adherence rows), "teacher": {...}, "students": {str(steps): {...}},
    "grid_rows": [[real, teacher, student_1, ...] uint8 crops]}.
    """
    from tqdm import tqdm

    from toolkit.distill import probe as kp_probe

    n = min(n_faces, len(dataset))
    if n <= 0:
        raise ValueError("evaluation set is empty")
    if draws < 1:
        raise ValueError(f"draws must be positive, got {draws}")
    jobs = [(d, i) for d in range(draws) for i in range(n)]  # (noise draw, face index)
    t_rows = {"sec": []}
    s_rows = {k: {"psnr_db": [], "ssim": [], "kp_patch_psnr_db": [], "sec": []} for k in students}
    outputs = {"real": [], "noise": [], "teacher": [], **{k: [] for k in students}}
    meta = {"keypoints": [], "visible": [], "box": []}
    grid = []
    with tqdm(total=len(jobs), desc="evaluate", unit="face", disable=not progress) as bar:
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            items = [dataset.get(i) for _, i in chunk]
            images = torch.stack([it["image"] for it in items])
            masks = torch.stack([it["mask"] for it in items])
            kps = torch.stack([it["keypoints"] for it in items])
            vis = torch.stack([it["visible"] for it in items])
            # Same per-image seeds => same initial noise z for the teacher and every student.
            seeds = [seed + d * 100_003 + i for d, i in chunk]
            t0 = time.perf_counter()
            t_out = teacher.sample(images, masks, kps, vis, seeds)
            t_rows["sec"].append((time.perf_counter() - t0, len(items)))
            s_out = {}
            for k, inp in students.items():
                t0 = time.perf_counter()
                s_out[k] = inp.inpaint(images, masks, kps, vis, seed=seeds)
                s_rows[k]["sec"].append((time.perf_counter() - t0, len(items)))
            outputs["real"].append(images)
            # Control: the face box filled with uniform noise (seeded per sample): a generator that draws nothing.
            noise = torch.cat([torch.rand((1, 3) + images.shape[2:], generator=torch.Generator().manual_seed(s_))
                               for s_ in seeds]) * 2 - 1
            outputs["noise"].append(images * masks + noise * (1 - masks))
            outputs["teacher"].append(t_out.float().cpu())
            for k in students:
                outputs[k].append(s_out[k].float().cpu())
            for j, it in enumerate(items):
                meta["keypoints"].append(it["keypoints"])
                meta["visible"].append(it["visible"])
                meta["box"].append(it["box"])
                box = box_of_mask(it["mask"])
                if box is None:
                    continue
                t_img = _to_uint8(t_out[j])
                kp, v = it["keypoints"].numpy(), it["visible"].numpy()
                row = [_to_uint8(it["image"]), t_img]
                for k in students:
                    s_img = _to_uint8(s_out[k][j])
                    psnr, ssim = box_psnr_ssim(s_img, t_img, box)
                    r = s_rows[k]
                    r["psnr_db"].append(psnr)
                    r["ssim"].append(ssim)
                    r["kp_patch_psnr_db"].append(keypoint_patch_psnr(s_img, t_img, kp, v, box))
                    row.append(s_img)
                if len(grid) < grid_faces:
                    grid.append(row)
            bar.update(len(items))

    def per_face(rows):
        total = sum(t for t, _ in rows)
        count = sum(c for _, c in rows)
        return round(total / max(count, 1), 5)

    def adherence_of(name):
        if probe is None:
            return {"kp_nme": None, f"kp_pck@{kp_probe.PCK_THRESHOLD}": None}
        a = kp_probe.adherence(probe, torch.cat(outputs[name]), torch.stack(meta["keypoints"]),
                               torch.stack(meta["visible"]), torch.stack(meta["box"]))
        return {"kp_nme": a["nme"], f"kp_pck@{kp_probe.PCK_THRESHOLD}": a[f"pck@{kp_probe.PCK_THRESHOLD}"],
                "kp_points": a["points"]}

    teacher_summary = {"steps": int(getattr(teacher, "default_steps", 0)) or None, **adherence_of("teacher"),
                       "sec_per_face": per_face(t_rows["sec"])}
    students_summary = {}
    for k, r in s_rows.items():
        s = _summary({key: v for key, v in r.items() if key != "sec"})
        s.update(adherence_of(k))
        s["sec_per_face"] = per_face(r["sec"])
        students_summary[str(k)] = s
    real = adherence_of("real") if probe is not None else None
    noise_control = adherence_of("noise") if probe is not None else None
    for row in (real, noise_control):
        if row is not None:
            row.pop("kp_points", None)
    mean_face = None
    if baseline is not None:
        S = dataset.size
        errs = [kp_probe.point_errors(kp_probe.baseline_keypoints(np.asarray(baseline), b, S), k, v, b, S)
                for k, v, b in zip(meta["keypoints"], meta["visible"], meta["box"])]
        e = kp_probe.summarize_errors(errs)
        mean_face = {"kp_nme": e["nme"], f"kp_pck@{kp_probe.PCK_THRESHOLD}": e[f"pck@{kp_probe.PCK_THRESHOLD}"]}
    return {"faces": n, "draws": draws, "samples": len(jobs), "split": getattr(dataset, "split", "val"),
            "available": len(dataset), "warning": few_faces_warning(n, len(dataset), getattr(dataset, "split", "val")),
            "real": real, "mean_face": mean_face, "noise_control": noise_control,
            "teacher": teacher_summary, "students": students_summary, "grid_rows": grid}


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
    """The comparison table (Markdown) with the face count, the probe's floor and any few-faces warning."""
    from toolkit.distill.probe import PCK_THRESHOLD

    pck = f"kp_pck@{PCK_THRESHOLD}"

    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    samples = result.get("samples", result["faces"])
    avail = result.get("available", result["faces"])
    lines = [f"student vs guided teacher on {result['faces']} held-out ({result.get('split', 'val')}) face(s)"
             + (f" of {avail}" if avail > result["faces"] else "")
             + (f", {samples} samples ({result.get('draws', 1)} noise draws each)" if samples != result["faces"] else "")
             + "; PSNR/SSIM on the face box, from the same noise"]
    if result.get("warning"):
        lines.append(f"WARNING: {result['warning']}")
    lines += [
        f"| model | steps | PSNR dB vs teacher | SSIM vs teacher | kp NME (lower=better) | PCK@{PCK_THRESHOLD} | s/face |",
        "|---|---|---|---|---|---|---|",
    ]
    real = result.get("real")
    if real:
        lines.append(f"| real crops (probe floor) | - | - | - | {f(real['kp_nme'], '.3f')} | {f(real[pck], '.2f')} | - |")
    for key, label in (("mean_face", "mean keypoints (baseline)"), ("noise_control", "noise in the box (control)")):
        row = result.get(key)
        if row:
            lines.append(f"| {label} | - | - | - | {f(row['kp_nme'], '.3f')} | {f(row[pck], '.2f')} | - |")
    t = result["teacher"]
    lines.append(f"| teacher | {f(t.get('steps'), 'd')} | - | - | {f(t.get('kp_nme'), '.3f')} | {f(t.get(pck), '.2f')} | "
                 f"{f(t.get('sec_per_face'), '.4f')} |")
    for k, s in sorted(result["students"].items(), key=lambda kv: (not str(kv[0]).isdigit(), str(kv[0]).zfill(4))):
        lines.append(
            f"| student | {k} | {f(s['psnr_db'], '.2f')} | {f(s['ssim'], '.3f')} | {f(s.get('kp_nme'), '.3f')} | "
            f"{f(s.get(pck), '.2f')} | {f(s.get('sec_per_face'), '.4f')} |"
        )
    probe = result.get("probe")
    if probe and probe.get("floor"):
        fl = probe["floor"]
        lines.append(f"keypoint probe: trained on {probe.get('train_faces')} real training faces; on "
                     f"{fl.get('faces')} real val face(s) NME {f(fl.get('nme'), '.3f')} vs mean-keypoint baseline "
                     f"{f(fl.get('baseline_nme'), '.3f')}" + (f" ({probe['cached']})" if probe.get("cached") else ""))
    return "\n".join(lines)


def evaluate_runs(runs, data=None, n_faces: int = 64, progress: bool = True, update_manifests: bool = True,
                  draws: int = 1, probe_iters: int | None = None, keypoints: bool = True,
                  teacher_steps: int | None = EVAL_TEACHER_STEPS) -> dict:
    """Evaluate several student runs of one teacher together (one teacher pass) and store the figures.

    The reference is the teacher with the guidance its students were distilled with, sampled with
    `teacher_steps` DDIM steps (default 50; None = the steps of the distillation targets).

    The keypoint probe is looked up in each run's `keypoint_probe/` folder (trained once on the data's
    training split and saved there when none matches).
    """
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
                           repaint=sampling["repaint"], steps=teacher_steps or sampling["steps"])
    students = {}
    for r, m in zip(runs, manifests):
        if m["steps"] in students:
            raise ValueError(f"two runs with {m['steps']} step(s): {r}; evaluate them separately")
        students[m["steps"]] = load_student_inpainter(r)
    data = Path(data) if data else Path(manifests[0]["data"])
    try:
        val_set = FDFDataset(data, "val", size=teacher.resolution)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"no held-out (val) split to evaluate on: {exc}. The evaluation never uses "
                                "training faces") from exc
    result = evaluate_with_probe(teacher, students, val_set, data, [r / PROBE_DIR for r in runs], n_faces=n_faces,
                                 draws=draws, probe_iters=probe_iters, keypoints=keypoints, progress=progress)
    if update_manifests:
        for r, m in zip(runs, manifests):
            update_manifest(r, metrics=merge_metrics(m.get("metrics"), result, m["steps"]))
    return result


def evaluate_with_probe(teacher, students: dict, val_set, data, probe_dirs, n_faces: int = 64, draws: int = 1,
                        probe_iters: int | None = None, keypoints: bool = True, progress: bool = True) -> dict:
    """Load (or train once and cache in `probe_dirs`) the keypoint probe, then `evaluate_against_teacher`."""
    from toolkit.distill.probe import ProbeConfig, load_or_train_probe

    probe, probe_info, baseline = None, None, None
    if keypoints:
        config = ProbeConfig(resolution=teacher.resolution, **({"iters": probe_iters} if probe_iters else {}))
        probe, info = load_or_train_probe(data, teacher.resolution, probe_dirs, config, progress=progress,
                                          any_iters=probe_iters is None)
        probe_info = {"floor": info["floor"], "train_faces": info["key"]["train_faces"],
                      "config": info["key"]["config"], "cached": info.get("cached"),
                      "path": str(probe_dirs[0]) if probe_dirs else None}
        baseline = info["baseline_keypoints"]
    result = evaluate_against_teacher(teacher, students, val_set, n_faces=n_faces, progress=progress, probe=probe,
                                      draws=draws, baseline=baseline)
    result["probe"] = probe_info
    return result


def merge_metrics(old: dict | None, result: dict, steps) -> dict:
    """A student's metrics with this evaluation: its own figures flat, the whole comparison under "evaluation"."""
    metrics = dict(old or {})
    for stale in ("kp_detected_error", "kp_detection_rate"):  # the old detector-based figures
        metrics.pop(stale, None)
    metrics.update(result["students"][str(steps)])
    metrics["teacher_keypoints"] = result["teacher"]
    metrics["eval_faces"] = result["faces"]
    metrics["eval_samples"] = result.get("samples", result["faces"])
    metrics["eval_split"] = result.get("split", "val")
    metrics["eval_warning"] = result.get("warning")
    metrics["evaluation"] = {k: v for k, v in result.items() if k != "grid_rows"}
    return metrics
