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
