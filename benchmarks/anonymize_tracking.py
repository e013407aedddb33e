"""Does a person keep one replacement face through a video? `toolkit anonymize` with and without tracking.

    python benchmarks/anonymize_tracking.py --model RUN --vtest vtest.avi

Videos: the crossing video of `toolkit.anonymize.sample_video` (three bundled photos entering, leaving
and crossing; one of them stands still), and the first --frames frames of OpenCV's vtest.avi (the bundled
pedestrian video; `apt-get download opencv-doc` and `dpkg -x` it, see ENVIRONMENT.md). Each video is
anonymized twice with the same model and seed: with tracking (one seed per person, smoothed boxes) and
with --no-track (seed = face index in its frame).

Figures, all on the written (lossless FFV1) frames, at the detector's own face boxes (the --no-track run
does no smoothing, so its report holds them), with people identified by the tracked run's track ids:
  same person   dlib L2 between one person's generated faces in consecutive frames (lower = steadier);
                also over only the pairs where the person's index in the frame changed (people crossing,
                entering, leaving): there --no-track changes the person's seed
  different     dlib L2 between two people's generated faces in the same frame (the scale to compare to)
  flicker       mean absolute change (0..255) of a still person's face box between consecutive frames;
                "still" = the detected box centre moved under 5 % of the face size
"""

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STILL = 0.05  # box-centre motion, in face sizes, under which a person counts as standing still


def read_frames(path, limit=None) -> list[np.ndarray]:
    from toolkit.anonymize.media import VideoReader

    reader = VideoReader(path)
    frames = []
    for chunk in reader.frames(16):
        frames.extend(chunk)
        if limit and len(frames) >= limit:
            break
    reader.close()
    return frames[:limit] if limit else frames


def anonymize(video: Path, out: Path, inpainter, model: str, seed: int, track: bool):
    from toolkit.anonymize import Options
    from toolkit.anonymize.runner import anonymize_files

    report = anonymize_files([video], out, Options(method="ddpm", seed=seed, batch_size=8), inpainter=inpainter,
                             model=model, progress=False, track=track, restart=True)
    (entry,) = report["items"]
    if entry["status"] != "ok":
        raise RuntimeError(f"{video}: {entry['status']}: {entry['reason']}")
    return entry["frame_faces"], read_frames(entry["output"])


def figures(written, detections, people) -> dict:
    """detections[t]: the detector's face boxes of frame t; people[t]: the person (track id) of each."""
    from toolkit.anonymize.baselines import box_pixels
    from toolkit.eval.metrics import face_embedding

    emb = [[face_embedding(img, box) for box in boxes] for img, boxes in zip(written, detections)]
    same, reordered, different, flicker = [], [], [], []
    for t in range(len(written)):
        for a in range(len(people[t])):
            different += [float(np.linalg.norm(emb[t][a] - emb[t][b])) for b in range(a + 1, len(people[t]))]
        if t + 1 == len(written):
            break
        for a, person in enumerate(people[t]):
            if person not in people[t + 1]:
                continue
            b = people[t + 1].index(person)
            same.append(float(np.linalg.norm(emb[t][a] - emb[t + 1][b])))
            if a != b:  # the person's index in the frame changed: without tracking, so did its seed
                reordered.append(same[-1])
            box_a, box_b = np.asarray(detections[t][a]), np.asarray(detections[t + 1][b])
            size = max(box_a[2] - box_a[0], box_a[3] - box_a[1])
            moved = np.linalg.norm((box_a[:2] + box_a[2:]) / 2 - (box_b[:2] + box_b[2:]) / 2)
            if moved < STILL * size:
                union = np.concatenate([np.minimum(box_a[:2], box_b[:2]), np.maximum(box_a[2:], box_b[2:])])
                x0, y0, x1, y1 = box_pixels(union, written[t].shape)
                diff = np.abs(written[t + 1][y0:y1, x0:x1].astype(np.float64) - written[t][y0:y1, x0:x1])
                flicker.append(float(diff.mean()))
    return {"same": same, "reordered": reordered, "different": different, "flicker": flicker}


def cell(values: list[float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(np.mean(values))} (n={len(values)})" if values else "– (n=0)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="teacher or student run")
    ap.add_argument("--vtest", help="OpenCV's vtest.avi (omit: the crossing video only)")
    ap.add_argument("--frames", type=int, default=40, help="vtest frames to use (default 40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="also write the printed tables as JSON")
    args = ap.parse_args()
    from _json_tables import capture_tables  # beside this script

    capture_tables(args.json)

    import torch

    from toolkit.anonymize.runner import load_model
    from toolkit.anonymize.sample_video import crossing_frames, write_video

    torch.set_num_threads(1)
    inpainter = load_model(args.model, "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = {"crossing (3 photos, one still)": tmp / "crossing.avi"}
        write_video(videos["crossing (3 photos, one still)"], crossing_frames(still=1)[0])
        if args.vtest:
            clip = tmp / "vtest.avi"
            write_video(clip, read_frames(args.vtest, args.frames), fps=10.0)
            videos[f"vtest.avi, first {args.frames} frames"] = clip
        print(f"model {args.model} (stage {(inpainter.manifest or {}).get('stage')}, {inpainter.resolution} px), "
              f"seed {args.seed}\n")
        print("| video | tracking | faces | face size (px, median) | same person, next frame (dlib L2) | "
              "same person, next frame, index changed | different people, same frame (dlib L2) | "
              "still-person flicker (mean abs, 0-255) |")
        print("|---|---|---|---|---|---|---|---|")
        for name, video in videos.items():
            tracked, tracked_frames = anonymize(video, tmp / "tracked", inpainter, args.model, args.seed, True)
            plain, plain_frames = anonymize(video, tmp / "plain", inpainter, args.model, args.seed, False)
            detections = [[f["face_box"] for f in fr["faces"]] for fr in plain]
            people = [[f["track_id"] for f in fr["faces"]] for fr in tracked]
            sizes = [max(b[2] - b[0], b[3] - b[1]) for boxes in detections for b in boxes]
            for label, written in (("yes", tracked_frames), ("no (--no-track)", plain_frames)):
                fig = figures(written, detections, people)
                print(f"| {name} | {label} | {len(sizes)} | {np.median(sizes):.0f} | {cell(fig['same'])} | "
                      f"{cell(fig['reordered'])} | {cell(fig['different'])} | {cell(fig['flicker'], '{:.2f}')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
