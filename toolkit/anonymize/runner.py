"""The `toolkit anonymize` run over files: plan inputs, detect, replace faces, write, and report.

Status of each input in the report:
  ok                 every detected face was replaced (or masked by --on-miss mask); written
  no_face_detected   the detector found nobody; written unchanged (refused with --require-face)
  refused            a detected face could not be replaced (or no face with --require-face); NOT written
  error              the input could not be read (corrupt / missing file); NOT written
"""

from __future__ import annotations

import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from toolkit import __version__
from toolkit.anonymize.media import (
    REPORT_NAME,
    Item,
    VideoReader,
    VideoWriter,
    coco_face_points,
    plan_coco,
    plan_paths,
)
from toolkit.anonymize.baselines import mask_box
from toolkit.anonymize.pipeline import Options, anonymize_batch, face_record
from toolkit.anonymize.resume import Journal, model_fingerprint, settings_hash
from toolkit.anonymize.shard import Shard
from toolkit.anonymize.tracking import FaceTracker
from toolkit.artifacts import write_json_atomic
from toolkit.images import ImageReadError, load_rgb, save_rgb

WRITTEN = ("ok", "no_face_detected")


def load_model(run_dir, device: str):
    """The inpainter of a teacher or student run, on `device`; errors name the run and the reason."""
    import inspect

    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"--model {run_dir}: no such run directory")
    from toolkit.artifacts import load_inpainter

    params = inspect.signature(load_inpainter).parameters
    try:
        if "device" in params:
            inpainter = load_inpainter(run_dir, device=device)
        else:
            inpainter = load_inpainter(run_dir)
    except (ValueError, FileNotFoundError, RuntimeError):
        raise
    except Exception as exc:  # noqa: BLE001 - a broken artifact must end the run with a clear message
        raise RuntimeError(f"--model {run_dir}: cannot load the model ({type(exc).__name__}: {exc})") from exc
    if not hasattr(inpainter, "inpaint") or not int(getattr(inpainter, "resolution", 0)) > 0:
        raise RuntimeError(f"--model {run_dir}: the loaded model does not provide inpaint()/resolution")
    return inpainter


def check_sampling(inpainter, sampling: dict) -> None:
    """Catch settings the model cannot use before any image is processed (else every face would fail)."""
    stage = (getattr(inpainter, "manifest", None) or {}).get("stage")
    if stage == "teacher" and "scheduler" in sampling:
        from toolkit.diffusion.sampling import SCHEDULERS

        if sampling["scheduler"] not in SCHEDULERS:
            raise ValueError(f"unknown --scheduler {sampling['scheduler']!r}; choose one of {', '.join(SCHEDULERS)}")
    if stage not in ("student", "quantized"):  # a quantized run is an int8 student
        return
    ignored = [k for k in ("scheduler", "cfg_scale", "rg_weight") if k in sampling]
    if ignored:
        flags = ", ".join("--" + k.replace("_", "-") for k in ignored)
        print(f"toolkit anonymize: note: a distilled student ignores {flags} (its guidance is baked in)",
              file=sys.stderr)
    steps = sampling.get("steps")
    own = getattr(inpainter, "steps", None)
    if steps is not None and own is not None and int(steps) != int(own):
        raise ValueError(f"this student was distilled for {own} step(s); drop --steps or pass --steps {own}")


def face_covered(points: np.ndarray, faces: list[dict], margin: float = 0.25) -> bool:
    """Some detected face box (grown by `margin` of its size) contains at least one of `points`."""
    for f in faces:
        box = np.asarray([np.nan if v is None else v for v in (f.get("face_box") or [])], dtype=np.float64)
        if box.shape != (4,) or not np.isfinite(box).all():
            continue
        x0, y0, x1, y1 = box
        mx, my = margin * (x1 - x0), margin * (y1 - y0)
        inside = ((points[:, 0] >= x0 - mx) & (points[:, 0] <= x1 + mx)
                  & (points[:, 1] >= y0 - my) & (points[:, 1] <= y1 + my))
        if inside.any():
            return True
    return False


def _annotated_face_box(points: np.ndarray, image_shape) -> list[float]:
    """A generous face box around a COCO person's labelled face points (for masking a missed face)."""
    H, W = image_shape[:2]
    lo, hi = points.min(axis=0), points.max(axis=0)
    centre = (lo + hi) / 2.0
    # Face points span about half a face; at least 1/20 of the image's smaller side as a floor.
    side = max(2.0 * float((hi - lo).max()), min(H, W) / 20.0, 8.0)
    return [float(centre[0] - side / 2), float(centre[1] - side / 2), float(centre[0] + side / 2),
            float(centre[1] + side / 2)]


class Runner:
    def __init__(self, opts: Options, *, inpainter=None, detector=None, require_face: bool = False,
                 progress: bool = True, fourcc: str | None = None, jpeg_quality: int = 95, track: bool = True,
                 shard: Shard | None = None, journal: Journal | None = None):
        self.opts = opts
        self.inpainter = inpainter
        self.detector = detector
        self.require_face = require_face
        self.progress = progress
        self.fourcc = fourcc
        self.jpeg_quality = jpeg_quality
        self.track = track
        self.shard = shard or Shard()
        self.journal = journal
        self.coco_points: dict = {}

    # -- detection -------------------------------------------------------------------------------
    def detect(self, image: np.ndarray) -> list:
        if self.detector is None:
            from toolkit.detect import detect

            self.detector = detect
        return list(self.detector(image))

    # -- images ----------------------------------------------------------------------------------
    def load_images(self, items: list[Item]) -> tuple[list[dict], list[tuple]]:
        """Read and detect each image (runs on the prefetch thread while the previous group generates)."""
        entries, loaded = [], []
        for item in items:
            entry = {"input": str(item.src), "output": None, "kind": "image", "status": "error", "reason": "",
                     "faces": []}
            if item.coco_image_id is not None:
                entry["coco_image_id"] = item.coco_image_id
            entries.append(entry)
            t0 = time.perf_counter()
            try:
                image = load_rgb(item.src)
            except ImageReadError as exc:
                entry["reason"] = str(exc)
                continue
            try:
                persons = self.detect(image)
            except Exception as exc:  # noqa: BLE001 - a detector failure on one file must not end the run
                entry["reason"] = f"detection failed: {type(exc).__name__}: {exc}"
                continue
            persons = self._add_missed_annotated(item, image, persons, entry)
            loaded.append((item, entry, image, persons, time.perf_counter() - t0))
        return entries, loaded

    def replace_faces(self, entries: list[dict], loaded: list[tuple]) -> list[dict]:
        """Replace the faces of loaded images in shared generation batches; write what may be written."""
        if not loaded:
            return entries
        t0 = time.perf_counter()
        results = anonymize_batch([x[2] for x in loaded], [x[3] for x in loaded], self.opts, self.inpainter)
        shared = (time.perf_counter() - t0) / len(loaded)
        for (item, entry, _image, _persons, own), result in zip(loaded, results):
            t1 = time.perf_counter()
            entry["faces"], entry["status"], entry["reason"] = result.faces, result.status, result.reason
            self._apply_missed(entry, result)
            if result.status == "no_face_detected" and self.require_face:
                entry["status"], entry["reason"] = "refused", "no face detected and --require-face is set"
            if entry["status"] in WRITTEN:
                self._write_image(result.image, item.dst)
                entry["output"] = str(item.dst)
            entry["time_s"] = own + shared + (time.perf_counter() - t1)
        return entries

    def _add_missed_annotated(self, item: Item, image, persons, entry) -> list:
        """COCO mode: a labelled face that no detection covers is a missed face (fail closed)."""
        annotated = self.coco_points.get(item.coco_image_id, []) if item.coco_image_id is not None else []
        if not annotated:
            return persons
        detected = [face_record(k, p) for k, p in enumerate(persons)]
        missed = [(ann_id, pts) for ann_id, pts in annotated if not face_covered(pts, detected)]
        entry["_missed"] = [{"annotation_id": ann_id, "face_box": _annotated_face_box(pts, image.shape)}
                            for ann_id, pts in missed]
        return persons

    def _apply_missed(self, entry: dict, result) -> None:
        missed = entry.pop("_missed", [])
        if not missed:
            return
        for m in missed:
            entry["faces"].append({"index": len(entry["faces"]), "face_box": m["face_box"],
                                   "annotation_id": m["annotation_id"], "status": "failed", "method": None,
                                   "reason": "a face labelled in the COCO annotation was not detected",
                                   "time_s": None})
        if result.image is None:
            return  # already refused
        if self.opts.on_miss == "mask":
            for f in entry["faces"][-len(missed):]:
                mask_box(result.image, f["face_box"], self.opts.mask_color)
                f["status"], f["method"] = "masked", "mask"
            if entry["status"] == "no_face_detected":
                entry["status"] = "ok"
        else:
            result.image = None
            entry["status"] = "refused"
            entry["reason"] = "; ".join(f"annotation {m['annotation_id']}: labelled face not detected"
                                        for m in missed)

    def _write_image(self, image: np.ndarray, dst: Path) -> None:
        save_rgb(image, dst, quality=self.jpeg_quality)

    # -- one video -------------------------------------------------------------------------------
    def process_video(self, item: Item) -> dict:
        entry = {"input": str(item.src), "output": None, "kind": "video", "status": "error", "reason": "",
                 "frames": 0, "frames_no_face": 0, "frame_faces": []}
        t0 = time.perf_counter()
        try:
            reader = VideoReader(item.src)
        except ValueError as exc:
            entry["reason"] = str(exc)
            return entry
        entry.update(fps=reader.fps, width=reader.width, height=reader.height)
        writer = None
        try:
            writer = VideoWriter(item.dst, reader.fps, (reader.width, reader.height), self.fourcc)
            bar = self._bar(total=reader.frame_count or None, desc=item.src.name, unit="frame", leave=False)
            tracker = FaceTracker() if self.track else None
            status, reason = "ok", ""
            for frames in reader.frames(max(1, int(self.opts.batch_size))):
                try:
                    persons = [self.detect(f) for f in frames]
                except Exception as exc:  # noqa: BLE001
                    status, reason = "error", f"detection failed at frame {entry['frames']}: {exc}"
                    break
                seeds = None
                if tracker is not None:
                    tracked = [tracker.update(ps, f.shape) for ps, f in zip(persons, frames)]
                    # One seed per person for the whole video: the replacement stays the same person.
                    seeds = [[self.opts.seed + i for i in ids] for ids, _ in tracked]
                    persons = [ps for _, ps in tracked]
                results = anonymize_batch(frames, persons, self.opts, self.inpainter, seeds=seeds)
                refused = None
                for j, r in enumerate(results):
                    n = entry["frames"]
                    if seeds is not None:
                        for face, track_id in zip(r.faces, tracked[j][0]):
                            face["track_id"] = track_id
                    entry["frame_faces"].append({"frame": n, "status": r.status, "faces": r.faces})
                    if r.status == "no_face_detected":
                        entry["frames_no_face"] += 1
                        if self.require_face:
                            refused = f"frame {n}: no face detected and --require-face is set"
                    if r.image is None:
                        refused = f"frame {n}: {r.reason}"
                    if refused:
                        break
                    writer.write(r.image)
                    entry["frames"] += 1
                bar.update(len(frames))
                if refused:
                    # Fail closed: stop at the first frame that cannot be written, keep nothing.
                    status, reason = "refused", refused
                    break
            bar.close()
            if status == "ok" and entry["frames"] == 0:
                status, reason = "error", "the video has no readable frames"
            if status == "ok":
                writer.commit()
                entry["output"] = str(item.dst)
            else:
                writer.abort()
            entry["status"], entry["reason"] = status, reason
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            reader.close()
        entry["time_s"] = time.perf_counter() - t0
        return entry

    def _bar(self, **kw):
        from tqdm import tqdm

        return tqdm(disable=not self.progress, file=sys.stderr, dynamic_ncols=True, **kw)

    # -- whole run -------------------------------------------------------------------------------
    def run(self, items: list[Item], report_path: Path, header: dict) -> dict:
        """Process this process's share of `items` (skipping those the journal has), merge, report.

        Every process returns the merged report; the main process writes it.
        """
        mine = [(i, it) for i, it in enumerate(items) if self.shard.owns(i)]
        done = self.journal.load() if self.journal is not None else {}
        entries: dict[int, dict] = {}
        todo = []
        for i, it in mine:
            rec = done.get(str(it.src))
            if rec is not None and Journal.still_valid(rec):
                entries[i] = rec["entry"]
            else:
                todo.append((i, it))
        bar = self._bar(total=len(mine), initial=len(mine) - len(todo), desc="anonymize", unit="file")
        try:
            for chunk, chunk_entries in self._process(todo):
                for (i, it), entry in zip(chunk, chunk_entries):
                    if self.journal is not None:
                        self.journal.record(entry)
                    entries[i] = entry
                    bar.set_postfix_str(f"{entry['status']}: {it.src.name}", refresh=False)
                    bar.update(1)
        except BaseException:
            if self.shard.world_size == 1:  # the others of a group cannot join a merge now
                self._write_report(report_path, header, [entries[i] for i in sorted(entries)], len(items))
            raise
        finally:
            bar.close()
        gathered = self.shard.gather((entries, len(mine) - len(todo)))
        report = None
        if self.shard.is_main:
            merged = {i: e for part, _ in gathered for i, e in part.items()}
            header = {**header, "resumed_inputs": sum(skipped for _, skipped in gathered)}
            report = self._write_report(report_path, header, [merged[i] for i in sorted(merged)], len(items))
        return self.shard.broadcast(report)

    def _process(self, todo: list[tuple[int, Item]]):
        """Yield (chunk, entries): videos one by one, images in groups of --batch-size.

        The next image group is read and detected on a prefetch thread while this one generates.
        Videos detect on the calling thread, and never while a prefetch runs (one detector at a time).
        """
        group = max(1, int(self.opts.batch_size))
        chunks, i = [], 0
        while i < len(todo):
            j = i + 1
            if todo[i][1].kind == "image":
                while j < len(todo) and j - i < group and todo[j][1].kind == "image":
                    j += 1
            chunks.append(todo[i:j])
            i = j
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="anonymize-prefetch") as pool:
            def prefetch(k):
                if k < len(chunks) and chunks[k][0][1].kind == "image":
                    return pool.submit(self.load_images, [it for _, it in chunks[k]])
                return None

            pending = prefetch(0)
            for k, chunk in enumerate(chunks):
                if chunk[0][1].kind == "video":
                    yield chunk, [self.process_video(chunk[0][1])]
                    pending = prefetch(k + 1)
                else:
                    loaded = pending.result()
                    pending = prefetch(k + 1)
                    yield chunk, self.replace_faces(*loaded)

    def _write_report(self, report_path: Path, header: dict, entries: list[dict], planned: int) -> dict:
        report = {"toolkit_version": __version__, "command": "anonymize",
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **header,
                  "summary": summarize(entries), "complete": len(entries) == planned, "items": entries}
        write_json_atomic(report_path, report)
        return report


def _all_faces(entry: dict) -> list[dict]:
    if entry.get("kind") == "video":
        return [f for fr in entry.get("frame_faces", []) for f in fr["faces"]]
    return entry.get("faces", [])


def summarize(entries: list[dict]) -> dict:
    faces = [f for e in entries for f in _all_faces(e)]
    times = [f["time_s"] for f in faces if f.get("time_s") is not None and f.get("status") == "anonymized"]
    by_status = {s: sum(e["status"] == s for e in entries) for s in ("ok", "no_face_detected", "refused", "error")}
    return {
        "inputs": len(entries),
        "written": sum(e.get("output") is not None for e in entries),
        **by_status,
        "faces": len(faces),
        "faces_anonymized": sum(f.get("status") == "anonymized" for f in faces),
        "faces_masked": sum(f.get("status") == "masked" for f in faces),
        "faces_failed": sum(f.get("status") == "failed" for f in faces),
        "mean_time_per_face_s": (sum(times) / len(times)) if times else None,
    }


def anonymize_files(inputs, out_dir, opts: Options, *, coco=None, images_root=None, inpainter=None,
                    detector=None, model=None, require_face: bool = False, image_format: str = "lossless",
                    report_path=None, progress: bool = True, fourcc: str | None = None, track: bool = True,
                    restart: bool = False, shard: Shard | None = None) -> dict:
    """Anonymize files/folders/videos (or a COCO set) into `out_dir`; returns the report (also written).

    Everything that can be checked before work starts (inputs exist, --out is safe, model given for ddpm)
    raises; per-file problems are recorded in the report instead. Under a multi-process launcher, `shard`
    (see `toolkit.anonymize.shard.current_shard`) says which inputs this process does; every process
    returns the merged report. Inputs a previous run into the same `out_dir` finished with the same
    settings are skipped (see `toolkit.anonymize.resume`) unless `restart`.
    """
    out_dir = Path(out_dir)
    shard = shard or Shard()
    if opts.method == "ddpm" and inpainter is None:
        raise ValueError("--method ddpm needs --model RUN (a trained teacher or distilled student run); "
                         "or choose --method blur, pixelate or mask")
    coco_data = ann_dst = None
    if coco is not None:
        if inputs:
            raise ValueError("give either INPUT paths or --coco ann.json --images-root DIR, not both")
        items, coco_data, ann_dst = plan_coco(coco, images_root, out_dir)
    else:
        if images_root is not None:
            raise ValueError("--images-root is only used with --coco")
        items = plan_paths(inputs, out_dir, image_format)
    report_path = Path(report_path) if report_path else out_dir / REPORT_NAME
    sources = {it.src.resolve() for it in items} | ({Path(coco).resolve()} if coco else set())
    if report_path.resolve() in sources:
        raise ValueError(f"--report {report_path} is an input file")
    out_dir.mkdir(parents=True, exist_ok=True)

    # What decides the outputs: a change in any of these makes a re-run redo every input.
    settings = {
        "method": opts.method, "seed": opts.seed, "sampling": dict(opts.sampling), "on_miss": opts.on_miss,
        "require_face": require_face, "feather": opts.feather, "format": "keep (coco)" if coco else image_format,
        "track": track, "fourcc": fourcc,
    }
    if inpainter is not None and opts.method == "ddpm":
        manifest = getattr(inpainter, "manifest", None) or {}
        preset = manifest.get("preset")
        settings["model_info"] = {
            "stage": manifest.get("stage"), "resolution": int(inpainter.resolution),
            "preset": preset.get("name") if isinstance(preset, dict) else preset,
            "sampling_defaults": getattr(inpainter, "defaults", None),
        }
        if getattr(inpainter, "face_prior", None) is not None:  # the prior file is in the model's fingerprint
            settings["prior_strength"] = opts.prior_strength
        settings["facing_away"] = opts.facing_away
        settings["min_generate"] = opts.min_generate
    if opts.method == "blur" or (opts.method == "ddpm" and opts.facing_away == "blur"):
        settings["blur_sigma"] = opts.blur_sigma if opts.blur_sigma is not None else "auto (face side / 8)"
    if opts.method == "pixelate" or (opts.method == "ddpm" and opts.min_generate > 0):
        settings["pixel_blocks"] = opts.pixel_blocks
    if opts.method == "mask" or opts.on_miss == "mask":
        settings["mask_color"] = list(opts.mask_color)
    if coco is not None:
        settings["coco"] = {"annotation": str(coco), "images_root": str(images_root), "annotation_out": str(ann_dst)}
    fingerprint = {"toolkit_version": __version__, **settings}
    # A model handed over in memory, without its run folder, cannot be identified: such runs do not resume.
    resumable = opts.method != "ddpm" or (model is not None and Path(model).is_dir())
    if opts.method == "ddpm" and resumable:
        fingerprint["model_sha256"] = model_fingerprint(model)
    digest = settings_hash(fingerprint)
    header = {"model": None if model is None else str(model), **settings, "settings_hash": digest,
              "batch_size": opts.batch_size, "device": shard.device, "processes": shard.world_size,
              "out": str(out_dir)}

    journal = Journal(out_dir, shard.rank, digest) if resumable else None
    if shard.is_main:
        if restart and journal is not None:
            journal.clear()
        if coco is not None:
            # The annotation is copied byte for byte; it stays valid because images keep their names/sizes.
            ann_dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = ann_dst.with_name(f".{ann_dst.name}.tmp")
            shutil.copyfile(coco, tmp)
            tmp.replace(ann_dst)
    shard.barrier()  # nobody reads the journal before --restart has cleared it
    runner = Runner(opts, inpainter=inpainter, detector=detector, require_face=require_face, progress=progress,
                    fourcc=fourcc, track=track, shard=shard, journal=journal)
    if coco is not None:
        runner.coco_points = coco_face_points(coco_data)
    return runner.run(items, report_path, header)


def exit_code(report: dict) -> int:
    """0 when every input was written; 1 when any was refused or could not be read."""
    s = report["summary"]
    return 1 if (s["refused"] or s["error"] or not report.get("complete", True)) else 0
