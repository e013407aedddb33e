"""Real test frames for the on-device pipeline: the bundled sample photos as a camera would see a person.

Each frame is the pose model's canonical evaluation view of the photo's most confident person (a square of
`toolkit.pose.data.EVAL_CROP_SCALE` person sizes around the visible keypoints, resampled with area
averaging), so the frames look like what the pose model learnt from. `blank_frame` and `landscape_frame` are
frames without a person, for the fail-closed path.
"""

from __future__ import annotations

import numpy as np

# Head-and-shoulders photos first (a sensor on a desk or a door); messi5 is a small player in a crowd scene.
FRAME_PHOTOS = ("astronaut", "obama", "biden", "obama2", "messi5", "obama3")


def person_frame(image: np.ndarray, size: int = 96, scale: float | None = None):
    """(frame size x size x 3 uint8, teacher keypoints in frame px (7, 2), visible (7,)) of the most confident
    person of `image`, or None when the teacher finds nobody usable."""
    from toolkit.detect.pipeline import detect
    from toolkit.pose import data as D

    labels = D.labels_from_persons(detect(image))
    if not labels:
        return None
    lab = max(labels, key=lambda p: p.ref)
    regions = D.build_regions({"img": image}, {"img": [lab]})
    center = regions.keypoints[0][regions.visible[0]].mean(axis=0)
    M = D.view_transform(D.REGION_PX, center, regions.ref[0], size, scale or D.EVAL_CROP_SCALE)
    view, kp, vis, _ = D.render_view(regions, 0, M, size, False)
    return view, kp, vis


def real_frames(count: int, size: int = 96, photos=FRAME_PHOTOS) -> list[tuple[str, np.ndarray]]:
    """`count` (label, frame) pairs from the bundled photos (mirrored copies once the photos run out)."""
    from toolkit import assets
    from toolkit.images import load_rgb

    if count < 1:
        raise ValueError("--frames must be at least 1")
    base = []
    for name in photos:
        got = person_frame(load_rgb(assets.sample_photo(name)), size)
        if got is not None:
            base.append((name, got[0]))
        if len(base) >= count:
            break
    if not base:
        raise RuntimeError("no person found on the bundled photos (are the detector models fetched? "
                           "`toolkit assets fetch`)")
    frames = list(base)
    i = 0
    while len(frames) < count:
        label, f = base[i % len(base)]
        frames.append((f"{label}_mirrored", np.ascontiguousarray(f[:, ::-1])))
        i += 1
    return frames[:count]


def blank_frame(size: int = 96, value: int = 128) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def landscape_frame(size: int = 96) -> np.ndarray:
    """A real photo without people: a patch of skimage's coffee cup/rocket-free scene (`data.coffee`)."""
    import cv2
    from skimage import data

    img = data.coffee()  # a cup of coffee on a table: real texture, no person
    h, w = img.shape[:2]
    s = min(h, w)
    sq = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    return np.ascontiguousarray(cv2.resize(sq, (size, size), interpolation=cv2.INTER_AREA))


# ------------------------------------------------------------------------------------- multi-person frames

_REGIONS: dict = {}


def _photo_regions(photos) -> list:
    """(name, toolkit.pose.data.Regions of its most confident person) of each photo with a usable person."""
    from toolkit import assets
    from toolkit.detect.pipeline import detect
    from toolkit.images import load_rgb
    from toolkit.pose import data as D

    out = []
    for name in photos:
        if name not in _REGIONS:
            image = load_rgb(assets.sample_photo(name))
            labels = D.labels_from_persons(detect(image))
            _REGIONS[name] = (D.build_regions({"img": image}, {"img": [max(labels, key=lambda p: p.ref)]})
                              if labels else None)
        if _REGIONS[name] is not None:
            out.append((name, _REGIONS[name]))
    return out


def _slot_view(regions, w: int, h: int, scale: float, flip: bool):
    """A w x h view of the person: a square view `scale` person sizes wide (side max(w, h)), centre cut."""
    from toolkit.pose import data as D

    side = max(w, h)
    center = regions.keypoints[0][regions.visible[0]].mean(axis=0)
    M = D.view_transform(D.REGION_PX, center, regions.ref[0], side, scale, flip=flip)
    view, kp, vis, _ = D.render_view(regions, 0, M, side, flip)
    x0, y0 = (side - w) // 2, (side - h) // 2
    return view[y0:y0 + h, x0:x0 + w], kp - [x0, y0], vis


# Person scales of the multi-person frames: the view is this many person sizes wide (larger = smaller person).
MULTI_SCALES = (2.5, 3.5, 5.0)


def multi_person_frames(count: int, size: int = 96, photos=FRAME_PHOTOS, max_people: int = 4):
    """`count` frames of 1..max_people people from the bundled photos, side by side (2x2 for 4), at the scales
    MULTI_SCALES, every other person mirrored: [(label, frame, people)] with people = [(teacher keypoints in
    frame px (7, 2), visible (7,))] (the truth a replaced face is checked against)."""
    from toolkit.pose.multi import _layout

    base = _photo_regions(photos)
    if not base:
        raise RuntimeError("no person found on the bundled photos (`toolkit assets fetch`)")
    frames = []
    k = 0
    for i in range(count):
        n = 1 + i % max_people
        frame = np.zeros((size, size, 3), np.uint8)
        people, names = [], []
        for j, (x0, y0, w, h) in enumerate(_layout(n, size)):
            name, regions = base[k % len(base)]
            scale, flip = MULTI_SCALES[(i + j) % len(MULTI_SCALES)], bool((k + i) % 2)
            view, kp, vis = _slot_view(regions, w, h, scale, flip)
            frame[y0:y0 + h, x0:x0 + w] = view
            inside = (kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h)
            people.append((kp + [x0, y0], vis & inside))
            names.append(name + ("_m" if flip else ""))
            k += 1
        frames.append((f"{n}p_" + "+".join(names), frame, people))
    return frames


def outside_boxes(x: float, y: float, boxes) -> bool:
    """The pixel holding point (x, y) lies in none of the replaced boxes (x0, y0, x1, y1, end exclusive)."""
    x, y = int(np.floor(x)), int(np.floor(y))
    return not any(b[0] <= x < b[2] and b[1] <= y < b[3] for b in boxes)


def faces_left(out: np.ndarray | None, boxes, people) -> int:
    """Faces of `people` (truth) not replaced in a delivered frame: a person whose visible nose or eye lies
    outside every replaced box counts (a partly covered face is a face left). 0 for a refused frame."""
    if out is None:
        return 0
    n = 0
    for kp, vis in people:
        n += any(vis[k] and outside_boxes(kp[k, 0], kp[k, 1], boxes) for k in (0, 1, 2))  # nose, eyes
    return n


def user_frames(folder, size: int) -> list[tuple[str, np.ndarray]]:
    """(file name, letterboxed frame) of every image in a folder (`toolkit bench --pipeline --frames-from`)."""
    from pathlib import Path

    from toolkit.images import letterbox, list_images, load_rgb

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--frames-from {folder}: no such folder")
    files = list_images([folder])
    if not files:
        raise ValueError(f"--frames-from {folder}: no images found")
    return [(p.stem, letterbox(load_rgb(p), size)[0]) for p in files]


def replaced_bank(regions, pipe, count: int, seed: int):
    """The pipeline's own outputs on `count` frames of 1-4 people composed from training regions (the verifier's
    training frames, toolkit.pose.heads.compose_frame; the pose net's verify off): ((images (n, s, s, 3),
    faces: per frame the face points left outside every replaced box), description). Frames the pipeline
    refuses are skipped. The verifier learns from these that a replaced face is no face, and that a face the
    pose net missed is one."""
    import dataclasses

    from toolkit.onboard.reference import anonymize_frame
    from toolkit.pose.heads import compose_frame

    if count < 1:
        raise ValueError("the replaced-face bank needs at least one frame")
    pipe = dataclasses.replace(pipe, verify=False, verifier=None)
    rng = np.random.default_rng(seed)
    images, faces, tried = [], [], 0
    while len(images) < count and tried < 4 * count:
        frame, pts, _ = compose_frame(regions, rng, pipe.frame_size, n=1 + tried % 4)
        out, info = anonymize_frame(frame, pipe, tried)
        tried += 1
        if out is None:
            continue
        boxes = [f["box"] for f in info["faces"]]
        left = [p[[outside_boxes(x, y, boxes) for x, y in p]] for p in pts]
        images.append(out)
        faces.append([p for p in left if len(p)])
    if not images:
        raise ValueError("the pipeline refused every frame composed from the training regions")
    note = {"frames": len(images), "composed": tried, "seed": seed, "pose": pipe.meta.get("pose_run"),
            "student": pipe.meta.get("student_run"), "frames_with_a_face_left": sum(bool(f) for f in faces)}
    return (np.stack(images), faces), note
