"""Fixtures for `toolkit anonymize` tests: real photos laid out as folders, a short video, a COCO set."""

import json

import numpy as np
import pytest

COCO17 = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
          "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
          "right_knee", "left_ankle", "right_ankle"]


@pytest.fixture(scope="session")
def astronaut_rgb():
    """The real astronaut photo (512x512 RGB uint8) from the asset cache."""
    from toolkit.assets import sample_photo
    from toolkit.images import load_rgb

    return load_rgb(sample_photo("astronaut"))


@pytest.fixture(scope="session")
def astronaut_persons(astronaut_rgb):
    """The detector's persons on the astronaut photo (exactly one is expected)."""
    from toolkit.detect import detect

    persons = detect(astronaut_rgb)
    assert len(persons) == 1, f"expected one person on astronaut.png, got {len(persons)}"
    return persons


def write_face_video(path, frames, fps=5.0, fourcc="FFV1"):
    """Write RGB frames to a (lossless FFV1) video with OpenCV; returns the path."""
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path} with {fourcc}"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="session")
def face_video(tmp_path_factory, astronaut_rgb):
    """A 4-frame 320x256 video made from the real astronaut photo, panning a few pixels per frame."""
    d = tmp_path_factory.mktemp("anon_video")
    frames = [np.ascontiguousarray(astronaut_rgb[20 + 4 * i : 276 + 4 * i, 60 + 6 * i : 380 + 6 * i]) for i in range(4)]
    return write_face_video(d / "walk.avi", frames), frames


@pytest.fixture(scope="session")
def coco_set(tmp_path_factory):
    """A tiny COCO keypoint set on real photos: images/ (PNG + JPEG) and person_keypoints.json.

    Person annotations carry the detector's 7 points in COCO-17 order (the other 10 unlabelled), so the
    annotation is realistic: what a user labelled with a pose tool.
    """
    from PIL import Image

    from toolkit.assets import sample_photo
    from toolkit.detect import detect
    from toolkit.images import load_rgb

    root = tmp_path_factory.mktemp("coco")
    (root / "images" / "sub").mkdir(parents=True)
    names = {"astronaut": "images/astro.png", "obama": "images/sub/obama.jpg"}
    images, annotations = [], []
    for image_id, (asset, rel) in enumerate(names.items(), start=1):
        rgb = load_rgb(sample_photo(asset))
        rel_in_root = rel.split("/", 1)[1]
        Image.fromarray(rgb).save(root / "images" / rel_in_root, quality=92)
        rgb = load_rgb(root / "images" / rel_in_root)  # label what is in the file (JPEG-decoded pixels)
        images.append({"id": image_id, "file_name": rel_in_root, "width": rgb.shape[1], "height": rgb.shape[0]})
        for p in detect(rgb):
            kps = np.zeros((17, 3))
            kps[:7, :2] = np.asarray(p.keypoints)
            kps[:7, 2] = np.where(np.asarray(p.visible), 2, 0)
            x0, y0, x1, y1 = (float(v) for v in p.face_box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                                "keypoints": [round(float(v), 2) for v in kps.reshape(-1)],
                                "num_keypoints": int((kps[:, 2] > 0).sum()), "iscrowd": 0,
                                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)})
    data = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "person", "keypoints": COCO17, "skeleton": []}]}
    ann = root / "person_keypoints.json"
    ann.write_text(json.dumps(data, indent=1))
    return ann, root / "images"
