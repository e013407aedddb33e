"""The evaluation report: JSON + CSV figures, Markdown and HTML with image grids and plots."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path

import numpy as np

from toolkit.eval.evaluate import MIN_IDENTITY_FACE_PX
from toolkit.images import save_rgb

COLUMNS = [
    ("faces", "faces", "{:d}"),
    ("identity_faces", f"faces ≥ {MIN_IDENTITY_FACE_PX} px", "{:d}"),
    ("unrecognized_share", "unrecognized (L2 ≥ 0.6)", "{:.0%}"),
    ("identity_distance_mean", "identity L2", "{:.3f}"),
    ("keypoint_error_mean", "keypoint err / face diag", "{:.3f}"),
    ("face_redetected_share", "face re-detected", "{:.0%}"),
    ("keypoint_error_mean_large", f"keypoint err ≥ {MIN_IDENTITY_FACE_PX} px", "{:.3f}"),
    ("face_redetected_share_large", f"re-detected ≥ {MIN_IDENTITY_FACE_PX} px", "{:.0%}"),
    ("ssim_outside_mean", "SSIM outside", "{:.4f}"),
    ("psnr_outside_mean", "PSNR outside dB", "{:.1f}"),
    ("realism_faces", "faces for KID/FID", "{:d}"),
    ("kid_faces", "KID ×10³ [95% CI]", None),
    ("fid_faces", "FID (face crops)", "{:.1f}"),
    ("time_per_face_s", "s / face", "{:.3f}"),
]


def _fmt(value, pattern):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if isinstance(value, float) and np.isinf(value):
        return "∞"
    return pattern.format(value)


def _json_default(value):
    return str(value) if isinstance(value, Path) else float(value)


def _cell(figures: dict, key: str, pattern) -> str:
    if key == "kid_faces" and figures.get(key) is not None:
        lo, hi = figures["kid_faces_ci"]
        return f"{1e3 * figures[key]:.1f} [{1e3 * lo:.1f}, {1e3 * hi:.1f}]"
    return _fmt(figures.get(key), pattern)


def markdown_table(summary: dict) -> str:
    lines = ["| method | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|---|" + "---|" * len(COLUMNS)]
    for method, figures in summary.items():
        cells = [_cell(figures, key, pattern) for key, _, pattern in COLUMNS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_notes(summary: dict) -> str:
    """What the table alone does not say: faces a generator did not generate (heads seen from behind are
    blurred, `--facing-away`; faces under `--min-generate` px are pixelated), and which methods' KID
    intervals overlap (the faces do not tell them apart)."""
    why = {"blur": "heads seen from behind, `--facing-away`", "pixelate": "faces too small, `--min-generate`"}
    notes = []
    for name, f in summary.items():
        other = {m: n for m, n in (f.get("replaced_by") or {}).items() if m != "ddpm"}
        if f.get("replaced_by", {}).get("ddpm") and other:
            notes.append(f"{name}: of {f['faces']} faces, " + ", ".join(f"{n} {m} ({why.get(m, m)})"
                                                                       for m, n in other.items())
                         + "; no face generated there.")
    ci = {name: f["kid_faces_ci"] for name, f in summary.items() if f.get("kid_faces_ci")}
    names = list(ci)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
             if ci[a][0] <= ci[b][1] and ci[b][0] <= ci[a][1]]
    if len(ci) > 1 and not pairs:
        notes.append("KID: no two methods' 95% intervals overlap.")
    elif pairs:
        notes.append("KID intervals overlap, so these faces do not tell the methods apart: "
                     + ", ".join(f"{a} / {b}" for a, b in pairs) + ".")
    return " ".join(notes)


def _grid(sample, methods, size=192):
    """One row: original | each method, each scaled to `size` px high."""
    from PIL import Image

    tiles = [sample["original"]] + [sample["methods"].get(m) for m in methods]
    row = []
    for tile in tiles:
        if tile is None:
            tile = np.full_like(sample["original"], 128)
        img = Image.fromarray(tile)
        w = max(1, round(img.width * size / img.height))
        row.append(np.asarray(img.resize((w, size), Image.BILINEAR)))
    return np.concatenate(row, axis=1)


def _plots(summary, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    files = []
    for key, title in [("identity_distance_mean", "identity L2 (higher = less recognizable; 0.6 = dlib threshold)"),
                       ("keypoint_error_mean", "keypoint error / face diagonal (lower = pose kept)")]:
        values = [summary[n].get(key, np.nan) for n in names]
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.bar(names, values, color="#4a7ab5")
        if key == "identity_distance_mean":
            ax.axhline(0.6, color="red", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=9)
        fig.tight_layout()
        name = f"{key}.png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files.append(name)
    return files


def write_report(out_dir, rows, summary, samples, errors, settings) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "grids").mkdir(exist_ok=True)
    methods = list(summary)
    with open(out / "faces.csv", "w", newline="") as f:
        keys = [k for k in (rows[0] if rows else {}) if k != "face_box"]
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    grids = []
    for i, sample in enumerate(samples):
        name = f"grids/{i:03d}_{Path(sample['image']).stem}.png"
        save_rgb(_grid(sample, methods), out / name)
        grids.append((sample["image"], name))
    plots = _plots(summary, out) if summary else []
    table = markdown_table(summary)
    result = {"settings": settings, "summary": summary, "errors": errors, "faces": rows}
    # numpy numbers become floats, paths strings; inf stays JSON's Infinity (PSNR of identical pixels)
    (out / "eval.json").write_text(json.dumps(result, indent=2, default=_json_default) + "\n")

    md = ["# Anonymization evaluation", "", (f"Images: {len(samples)} evaluated, {len(errors)} problems. "
                                              f"Settings: `{json.dumps(settings, default=str)}`"), "", table, "",
          ("Columns: identity L2 between dlib ResNet embeddings of original and anonymized face at the original "
           f"box (faces of at least {MIN_IDENTITY_FACE_PX} px only); keypoint error of the pose detector on the "
           "anonymized image vs the original, over all faces and over the faces identity is measured on (blur "
           "and pixelate leave faces of a few pixels nearly untouched, so all-face figures favour them); "
           "SSIM/PSNR over pixels outside the expanded face box; KID (unbiased, x10³, 95% bootstrap interval "
           "over faces) and FID (biased upward at few faces: compare methods at the same n, not absolute "
           "values) between the original and the anonymized face crops."), "", summary_notes(summary), ""]
    md += [f"![{p}]({p})" for p in plots] + [""]
    md += ["## Images (original | " + " | ".join(methods) + ")", ""]
    md += [f"![{html.escape(src)}]({name})" for src, name in grids]
    if errors:
        md += ["", "## Problems", ""] + [f"- {e}" for e in errors]
    (out / "report.md").write_text("\n".join(md) + "\n")

    body = [f"<h1>Anonymization evaluation</h1><p>{len(samples)} images, {len(errors)} problems.</p>",
            "<table border=1 cellpadding=4><tr><th>method</th>"
            + "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in COLUMNS) + "</tr>"]
    for method, figures in summary.items():
        body.append(f"<tr><td>{html.escape(method)}</td>" + "".join(
            f"<td>{html.escape(_cell(figures, k, p))}</td>" for k, _, p in COLUMNS) + "</tr>")
    body.append(f"</table><p>{html.escape(summary_notes(summary))}</p>")
    body += [f'<img src="{p}">' for p in plots]
    body.append("<h2>Images: original | " + html.escape(" | ".join(methods)) + "</h2>")
    body += [f'<p>{html.escape(src)}<br><img src="{name}"></p>' for src, name in grids]
    if errors:
        body.append("<h2>Problems</h2><ul>" + "".join(f"<li>{html.escape(str(e))}</li>" for e in errors) + "</ul>")
    (out / "report.html").write_text("<!doctype html><meta charset=utf-8><title>toolkit eval</title>"
                                     + "\n".join(body) + "\n")
    return result
