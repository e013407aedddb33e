"""`toolkit bench --pipeline`: the on-device anonymization pipeline on a board or QEMU, checked bit for bit.

    toolkit bench --pipeline --pose runs/pose-q --model runs/student-q --board qemu-m7 --frames 3 \\
        --out bench/pipeline-m7.json

Exports the pose model and every student step into the firmware's generated/ folder, writes the pipeline
constants (generated/pipeline_config.c, toolkit.onboard.config), builds, sends real frames (toolkit.onboard.
frames) and checks every device output frame, keypoint and box against the host reference
(toolkit.onboard.reference) of the same integer pipeline, plus one frame without a person that must fail
closed. Reports per-stage timing and the pipeline's RAM/flash against the stm32h743 and esp32s3 budgets.
Writes FILE (JSON), FILE with .csv (one row per frame) and .png (frames before | after) beside it.
"""

from __future__ import annotations

import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from toolkit.bench import firmware
from toolkit.bench.protocol import Device, DeviceError, ProtocolError

FIT_BOARDS = ("stm32h743", "esp32s3")
POSE_NAME = "pose"
VERIFIER_NAME = "verifier"


def fit_checks(pipe, memory: dict, weight_bytes: int, boards) -> dict:
    """Whole-pipeline RAM (frame + shared model buffers + scratch) and flash (all networks + tables) per board."""
    from toolkit.boards import load_board
    from toolkit.deploy import fit
    from toolkit.onboard.config import config_flash_bytes

    flash = int(weight_bytes) + config_flash_bytes(pipe)
    layer = fit.LayerMemory("anonymize_frame", "pipeline", (pipe.frame_size, pipe.frame_size, 3), memory["frame"],
                            memory["total"])
    est = fit.MemoryEstimate(flash, memory["total"], layer, memory["frame"], memory["frame"],
                             "pipeline: frame + max(model arena, input, output) + scratch")
    out = {}
    for name in dict.fromkeys(boards):
        board = load_board(name)
        try:
            rep = fit.check_fit(est, board, what="the anonymization pipeline")
        except fit.ModelTooLargeError as exc:
            b = fit.budgets(board)
            rep = {"target": board.name, "fits": False, "flash_budget_bytes": b["flash_bytes"],
                   "ram_budget_bytes": b["ram_bytes"], "weight_bytes": flash,
                   "peak_activation_bytes": memory["total"], "message": str(exc)}
        out[name] = {"fits": rep["fits"], "ram_bytes": memory["total"], "ram_budget_bytes": rep["ram_budget_bytes"],
                     "flash_bytes": flash, "flash_budget_bytes": rep["flash_budget_bytes"],
                     **({"message": rep["message"]} if "message" in rep else {})}
    return out


def _export(args, fw_dir: Path, target: str):
    """(pose C name, student base name, pipeline) with both models exported and the C config written."""
    from toolkit.onboard.config import build_pipeline, write_c_config

    student_base = args.name or "student"
    if student_base in (POSE_NAME, VERIFIER_NAME):
        raise ValueError(f"--name {student_base}: that name is taken by the pose model or the verifier")
    verifier = getattr(args, "verifier", None)
    for flag, path in (("--pose", args.pose), ("--model", args.model), ("--verifier", verifier)):
        if path is not None and not Path(path).is_dir():
            raise FileNotFoundError(f"{flag} {path}: no such directory (give a `toolkit quantize` output)")
    pipe = build_pipeline(args.pose, args.model, f"{POSE_NAME}_step0", student_base,
                          visible_peak=args.visible_peak, verifier_run=verifier, verifier_name=f"{VERIFIER_NAME}_step0")
    if args.port:  # the board already runs a firmware built with this pipeline: nothing to build here
        return pipe, None
    units = firmware.export_model(args.pose, target, fw_dir, POSE_NAME)
    units += firmware.export_model(args.model, target, fw_dir, student_base)
    if verifier is not None:
        units += firmware.export_model(verifier, target, fw_dir, VERIFIER_NAME)
    names = [n for n, _ in units]
    if names != pipe.model_names:
        raise RuntimeError(f"exported {names}, the pipeline expects {pipe.model_names}")
    generated = fw_dir / "generated"
    write_c_config(pipe, generated)
    firmware.write_registry(generated)
    return pipe, json.loads((generated / "toolkit.json").read_text())["models"]


def _compare(ref_out, ref_info, dev: dict, got) -> dict:
    same_kp = dev["keypoints_q8"] == ref_info["keypoints_q8"] and dev["peaks"] == ref_info["peaks"]
    row = {"status_device": dev["status"], "status_reference": ref_info["status"],
           "keypoints_exact": bool(same_kp and dev["visible"] == ref_info["visible"])}
    if ref_out is None:
        row.update(box_exact=True, frame_bit_exact=dev["status"] == ref_info["status"] and got is None,
                   mismatched_bytes=0)
        return row
    keys = ("keypoints_q8", "peaks", "visible", "box", "crop")
    row["box_exact"] = len(dev["faces"]) == len(ref_info["faces"]) and all(
        all(d.get(k) == r[k] for k in keys) for d, r in zip(dev["faces"], ref_info["faces"]))
    if got is None:
        row.update(frame_bit_exact=False, mismatched_bytes=int(ref_out.size))
    else:
        diff = got.reshape(ref_out.shape) != ref_out
        row.update(frame_bit_exact=bool(not diff.any() and dev.get("crc") == ref_info["crc"]),
                   mismatched_bytes=int(diff.sum()))
    return row


def bench_pipeline(args) -> dict:
    from toolkit.bench.transport import ICOUNT_INSNS_PER_TICK, open_device, unit_note
    from toolkit.onboard import frames as F
    from toolkit.onboard.config import memory_plan
    from toolkit.onboard.reference import anonymize_frame

    if not args.pose:
        raise ValueError("--pipeline needs --pose POSE_Q (a quantized pose model) and --model STUDENT_Q")
    if args.frames < 1:
        raise ValueError("--frames must be at least 1")
    if not 0 <= args.seed <= 0xFFFFFFFF - args.frames:
        raise ValueError("--seed must be a 32-bit unsigned integer")
    fw_dir = firmware.project_dir(args.firmware_dir)
    target = getattr(args, "target", None) or args.board or "qemu-m7"
    pipe, exported = _export(args, fw_dir, target)
    if getattr(args, "frames_from", None):  # the user's own frames, letterboxed to the pose input
        frames, truth = F.user_frames(args.frames_from, pipe.frame_size), {}
    elif pipe.multi_person:  # 1-4 people per frame, each face checked against the teacher's keypoints
        multi = F.multi_person_frames(args.frames, pipe.frame_size)
        frames, truth = [(label, f) for label, f, _ in multi], {label: people for label, _, people in multi}
    else:
        frames, truth = F.real_frames(args.frames, pipe.frame_size), {}
    empty = ("no_person_blank", F.blank_frame(pipe.frame_size))

    rows, outputs = [], []
    with open_device(args, fw_dir, timeout=min(30.0, float(args.timeout))) as (link, meta):
        dev = Device(link)
        ident = dev.identify()
        info = dev.info()
        try:
            layout = dev.pipeline()
        except ProtocolError as exc:
            raise DeviceError(f"wrong firmware: {exc} (build it with `toolkit bench --pipeline`)") from exc
        dev_models = [layout["pose"]] + layout["steps"] + ([layout["verifier"]] if layout["verifier"] else [])
        if dev_models != pipe.model_names or layout["size"] != pipe.size or layout["h"] != pipe.frame_size:
            raise DeviceError(f"wrong firmware: its pipeline runs {dev_models} on "
                              f"{layout['h']}x{layout['w']} frames, this one {pipe.model_names} on "
                              f"{pipe.frame_size}x{pipe.frame_size}")
        unit = info["timer"]
        where = meta.get("board") or args.port
        for i, (label, frame) in enumerate(tqdm(frames + [empty], desc=f"anonymize_frame on {where}", unit="frame")):
            seed = args.seed + i
            ref_out, ref_info = anonymize_frame(frame, pipe, seed)
            dev.load_frame(frame)
            t0 = time.monotonic()
            res = dev.anonymize(seed, timeout=float(args.timeout) + 30)
            wall = time.monotonic() - t0
            got = None
            if res["status"] == "ok":
                got = dev.frame_out(frame.size).reshape(frame.shape)
            else:  # fail closed: the device must refuse to send anything back
                try:
                    dev.frame_out(frame.size)
                    res["status"] = "LEAKED"
                except ProtocolError as exc:
                    if exc.code != "no_output":
                        raise
            row = {"frame": label, "seed": seed, "person": label != empty[0],
                   **_compare(ref_out, ref_info, res, got), "wall_s": round(wall, 3), "unit": res["unit"],
                   "total": res["total"]}
            row.update({f"t_{name}": t for name, t in zip(layout["stages"], res["ticks"])})
            row["box"] = ref_info.get("box")
            row["boxes"] = [f["box"] for f in res["faces"] if "box" in f]
            row["reason"] = (ref_info.get("gate") if ref_info["status"] == "no_face" else ref_info["status"])
            row["people_found"] = res["people"]
            if pipe.verifier is not None:  # cells the verifier saw outside the boxes: device and reference
                row["verifier_left"] = res.get("verifier_left", 0)
                row["verifier_left_reference"] = len(ref_info.get("verifier_left") or [])
            row["faces"] = res["faces"]  # keypoints (Q8 px), peaks, visibility, box and crop per face found
            if label in truth:  # a delivered frame must have no face left: checked on what the device sent
                row["people_truth"] = len(truth[label])
                row["faces_left"] = F.faces_left(got, row["boxes"], truth[label])
            rows.append(row)
            outputs.append((label, frame, got, [f["box"] for f in ref_info["faces"]]))

    memory = memory_plan(pipe, {n: m["arena_bytes"] for n, m in exported.items()}) if exported else {
        k: layout[k] for k in ("frame", "arena", "model_in", "model_out", "scratch", "total")}
    weights = (sum(int(exported[n]["weight_bytes"]) for n in pipe.model_names) if exported
               else sum(g.weight_bytes() for g in pipe.graphs))
    fits = fit_checks(pipe, memory, weights, list(FIT_BOARDS) + [target])
    ok_rows = [r for r in rows if r["status_reference"] == "ok" and r["status_device"] == "ok"]
    stages = []
    total_mean = float(np.mean([r["total"] for r in ok_rows])) if ok_rows else 0.0
    for name in layout["stages"]:
        # Every frame that reached a stage counts (a no_face frame still times preprocess, pose, decode).
        vals = [r[f"t_{name}"] for r in rows if f"t_{name}" in r]
        mean = float(np.mean(vals)) if vals else 0.0
        st = {"stage": name, "mean": mean, "share": mean / total_mean if total_mean else 0.0}
        if unit == "icount_ticks":
            st["instructions"] = mean * ICOUNT_INSNS_PER_TICK
        stages.append(st)
    graphs = dict(zip(pipe.model_names, pipe.graphs))
    models = {n: {"arena": int(exported[n]["arena_bytes"]) if exported else None,
                  "weights": int(exported[n]["weight_bytes"]) if exported else int(g.weight_bytes()),
                  "macs": int(exported[n]["macs"]) if exported else None,
                  "input": int(g.tensors[g.input].size), "output": int(g.tensors[g.output].size)}
              for n, g in graphs.items()}
    summary = {
        "unit": unit, "frames": len(rows), "faces_found": sum(r["status_reference"] == "ok" for r in rows),
        "delivered_with_face_left": sum(bool(r.get("faces_left")) for r in rows),
        "stages": stages, "per_frame": total_mean,
        "all_bit_exact": all(r["frame_bit_exact"] and r["keypoints_exact"] and r["box_exact"]
                             and r["status_device"] == r["status_reference"]
                             and r.get("verifier_left") == r.get("verifier_left_reference") for r in rows),
        "verifier_refusals": sum(bool(r.get("verifier_left")) for r in rows),
        "fail_closed": all(r["status_device"] in Device.REFUSALS for r in rows if not r["person"]),
        "memory": {**memory, "device": {k: layout[k] for k in ("frame", "arena", "model_in", "model_out", "scratch",
                                                                "total", "pool")}},
        "memory_matches_device": all(memory[k] == layout[k] for k in ("frame", "arena", "model_in", "model_out",
                                                                       "scratch", "total")),
        "flash_bytes": fits[target]["flash_bytes"], "fit": fits,
    }
    if unit == "icount_ticks":
        summary["instructions_per_frame"] = total_mean * ICOUNT_INSNS_PER_TICK
    return {
        "tool": "toolkit bench --pipeline", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(), "pose": str(Path(args.pose).resolve()), "student": str(Path(args.model).resolve()),
        "verifier": str(Path(args.verifier).resolve()) if getattr(args, "verifier", None) else None,
        "pipeline": {"models": pipe.model_names, "frame_size": pipe.frame_size, "size": pipe.size,
                     "visible_min": pipe.visible_min, "max_faces": pipe.max_faces, **{k: v for k, v in pipe.meta.items() if k != "student_source"}},
        "models": models, "device": {**meta, "firmware": ident.fields, "info": info, "pipeline": layout},
        "timer": {"unit": unit, "note": unit_note(unit)}, "results": rows, "summary": summary,
        "_frames": outputs,
    }


def write_outputs(result: dict, out: Path) -> tuple[Path, Path, Path]:
    out.parent.mkdir(parents=True, exist_ok=True)
    outputs = result.pop("_frames", [])
    out.write_text(json.dumps(result, indent=2) + "\n")
    csv_path, png_path = out.with_suffix(".csv"), out.with_suffix(".png")
    rows = result["results"]
    # every frame in and out as PNG (a refused frame's "out" is the zeroed buffer: nothing left the device)
    from toolkit.images import save_rgb

    frames_dir = out.with_name(out.stem + "_frames")
    frames_dir.mkdir(exist_ok=True)
    for i, (label, before, after, _) in enumerate(outputs):
        stem = f"{i:03d}_" + "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
        save_rgb(before, frames_dir / f"{stem}_in.png")
        save_rgb(after if after is not None else np.zeros_like(before), frames_dir / f"{stem}_out.png")
    keys = list(dict.fromkeys(k for r in rows for k in r if k != "faces"))
    with csv_path.open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        wr.writeheader()
        wr.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(outputs)
    fig, axes = plt.subplots(n, 2, figsize=(4.4, 2.2 * n), squeeze=False)
    for (label, before, after, boxes), row, (a, b) in zip(outputs, rows, axes):
        a.imshow(before, interpolation="nearest")
        a.set_title(f"{label}: frame in", fontsize=7)
        if after is not None:
            b.imshow(after, interpolation="nearest")
            for box in boxes:
                b.add_patch(Rectangle((box[0] - 0.5, box[1] - 0.5), box[2] - box[0], box[3] - box[1], fill=False,
                                      edgecolor="lime" if row["frame_bit_exact"] else "red", linewidth=0.8))
            b.set_title(f"out ({'bit-exact' if row['frame_bit_exact'] else 'DIFFERS'})", fontsize=7)
        else:
            b.imshow(np.zeros_like(before))
            b.set_title(f"{row['status_device']}: wiped, nothing sent", fontsize=7)
        a.axis("off"), b.axis("off")
    where = result["device"].get("board") or result["device"].get("port")
    fig.suptitle(f"anonymize_frame on {where}", fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path, dpi=130)
    plt.close(fig)
    return out, csv_path, png_path


def _kib(n) -> str:
    return f"{n / 1024:.1f} KiB"


def stage_table(result: dict) -> str:
    """Markdown table: per stage mean ticks, instructions (QEMU), share; then memory and fit lines."""
    s = result["summary"]
    icount = s["unit"] == "icount_ticks"
    lines = [f"| stage | {s['unit']} | " + ("instructions | " if icount else "") + "share |",
             "|---|---:|" + ("---:|" if icount else "") + "---:|"]
    for st in s["stages"]:
        lines.append(f"| {st['stage']} | {st['mean']:,.0f} | " + (f"{st['instructions']:,.0f} | " if icount else "")
                     + f"{100 * st['share']:.1f}% |")
    if s["faces_found"]:
        lines.append(f"| **total** | {s['per_frame']:,.0f} | "
                     + (f"{s['instructions_per_frame']:,.0f} | " if icount else "") + "100% |")
    else:
        lines += ["", "No frame had a face (nose) the pose model could see: every frame failed closed, so the "
                      "stages after decode did not run."]
    m = s["memory"]
    lines.append("")
    lines.append(f"RAM: frame {_kib(m['frame'])} + model arena {_kib(m['arena'])} + model in {_kib(m['model_in'])} "
                 f"+ model out {_kib(m['model_out'])} + scratch {_kib(m['scratch'])} = {_kib(m['total'])} "
                 f"(device reports {_kib(m['device']['total'])}); flash {_kib(s['flash_bytes'])} "
                 "(weights + pipeline tables)")
    for name, f in s["fit"].items():
        lines.append(f"fit {name}: {'fits' if f['fits'] else 'DOES NOT FIT'} (RAM {_kib(f['ram_bytes'])} of "
                     f"{_kib(f['ram_budget_bytes'])}, flash {_kib(f['flash_bytes'])} of "
                     f"{_kib(f['flash_budget_bytes'])})")
    return "\n".join(lines)


def people_table(result: dict) -> str:
    """Per number of people in the frame (multi-person frames, where the truth is known): frames, delivered,
    delivered with a face left (must be 0), false refusals (refused though every face could have been
    replaced) and the refusals by reason. Empty when no frame has a known truth."""
    from collections import Counter

    rows = [r for r in result["results"] if "people_truth" in r]
    if not rows:
        return ""
    max_faces = result["pipeline"].get("max_faces")
    by = {}
    for r in rows:
        c = by.setdefault(r["people_truth"], Counter())
        delivered = r["status_device"] == "ok"
        counts = {"frames": 1, "delivered": delivered, "left": delivered and bool(r.get("faces_left")),
                  "false_refusal": not delivered and (max_faces is None or r["people_truth"] <= max_faces),
                  r["status_device"]: not delivered}
        c.update({k: int(v) for k, v in counts.items()})
    lines = ["| people per frame | frames | delivered | delivered with a face left | false refusals | no_face | "
             "too_many_faces | verify_failed |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    total = Counter()
    for n in sorted(by):
        total.update(by[n])
    for label, c in [(str(n), by[n]) for n in sorted(by)] + [("**all**", total)]:
        lines.append(f"| {label} | {c['frames']} | {c['delivered']} ({c['delivered'] / c['frames']:.0%}) | {c['left']} | "
                     f"{c['false_refusal']} | {c['no_face']} | {c['too_many_faces']} | {c['verify_failed']} |")
    return "\n".join(lines)


def run(args, out: Path) -> int:
    """`toolkit bench --pipeline` (called by toolkit.bench.cli.run, which checked `out`)."""
    result = bench_pipeline(args)
    paths = write_outputs(result, out)
    s = result["summary"]
    where = result["device"].get("board") or args.port
    print(f"anonymize_frame on {where}: {', '.join(result['pipeline']['models'])}; "
          f"{s['faces_found']} of {s['frames']} frames with a face")
    print(stage_table(result))
    print(f"bit-exact with the host reference (frame, keypoints, box) on {s['frames']} frames: "
          f"{'yes' if s['all_bit_exact'] else 'NO'}; no-person frame failed closed: {'yes' if s['fail_closed'] else 'NO'}")
    if result.get("verifier"):
        print(f"refused by the verifier (a face outside the replaced boxes): {s['verifier_refusals']} frame(s)")
    if any("faces_left" in r for r in result["results"]):
        print(people_table(result))
        print(f"delivered frames with a face left untouched: {s['delivered_with_face_left']} "
              f"(of {sum(r['status_device'] == 'ok' for r in result['results'])} delivered)")
    print("wrote " + ", ".join(str(p) for p in paths))
    bad = []
    if not s["all_bit_exact"]:
        bad.append("the device differs from the host reference (see the CSV)")
    if not s["fail_closed"]:
        bad.append("the device did not fail closed on a frame without a person")
    if s["delivered_with_face_left"]:
        bad.append("a delivered frame kept a face the teacher sees (see faces_left in the CSV)")
    if not s["memory_matches_device"]:
        bad.append("the device's memory layout differs from the host's plan")
    if bad:
        print("error: " + "; ".join(bad), file=sys.stderr)
        return 1
    return 0
