"""Shared fixtures of the pose tests: a train / held-out split of the real sample photos, the teacher's
detections on them (computed once), and a tiny pose model trained on blurred images."""

import shutil
from pathlib import Path

import pytest

# Held-out people are other identities than the training ones (the obama photos are all one person).
POSE_TRAIN_PHOTOS = ("obama", "obama2", "obama_partial_face", "vtest_000", "vtest_200", "vtest_400")
POSE_HELDOUT_PHOTOS = ("astronaut", "biden", "messi5", "vtest_600")
POSE_TRAIN_STEPS = 250


@pytest.fixture(scope="session")
def pose_photos(tmp_path_factory, sample_photos):
    """{"train": dir, "heldout": dir}: copies of real sample photos (never the cache files themselves)."""
    from toolkit import assets

    root = tmp_path_factory.mktemp("pose_photos")
    dirs = {}
    for split, names in (("train", POSE_TRAIN_PHOTOS), ("heldout", POSE_HELDOUT_PHOTOS)):
        d = root / split
        d.mkdir()
        for name in names:
            src = assets.sample_photo(name)
            shutil.copy(src, d / src.name)
        dirs[split] = d
    return dirs


@pytest.fixture(scope="session")
def pose_people(pose_photos):
    """str(path) -> teacher detections (toolkit.detect) for every photo of both splits."""
    from toolkit.images import list_images
    from toolkit.pose.data import detect_people

    return detect_people([str(p) for p in list_images(list(pose_photos.values()))], progress=False)


@pytest.fixture(scope="session")
def tiny_pose_run(tmp_path_factory, pose_photos, pose_people):
    """A `tiny` pose run trained POSE_TRAIN_STEPS steps on the blurred training photos (read-only)."""
    from toolkit.pose.train import TrainSettings, train_pose

    out = tmp_path_factory.mktemp("pose") / "tiny-blur"
    train_pose(pose_photos["train"], out, method="blur", people=pose_people, progress=False,
               # One thread: as fast as two for a net this small, and no thread oversubscription on a busy CI box.
               settings=TrainSettings(steps=POSE_TRAIN_STEPS, preset="tiny", seed=0, threads=1))
    return out


# ---------------------------------------------------------------------------------------------- COCO labels
# Human-label files are written from the teacher's detections on the same real photos (COCO 17-keypoint format,
# the 7 points at COCO's indices 0-6, the other 10 unlabelled), with hand-made edits the loader must respect.
COCO_TRAIN_PHOTOS = ("obama.jpg", "vtest_000.png", "vtest_200.png")
# obama.jpg: a crowd region drawn by hand in the top-left corner (background; polygon segmentation)
COCO_CROWD_POLYGON = [20.0, 20.0, 260.0, 30.0, 240.0, 300.0, 30.0, 280.0]
# vtest_200.png: the person whose nose is nearest this point is labelled num_keypoints 0 (bbox only)
COCO_UNLABELLED_NEAR = (641.0, 278.0)
# vtest_000.png, person 0: left ear moved outside the image (stays v=2: the loader must drop it)
# obama.jpg: left shoulder marked v=1 (labelled but occluded: still a label)


def coco_person(person, ann_id: int, image_id: int, width: int, height: int) -> dict:
    """One COCO person annotation from a teacher detection: 17 keypoints (7 labelled where the teacher saw
    them, v=2), a bbox around the head and shoulders and the torso below, its area."""
    import numpy as np

    kp = np.zeros((17, 3))
    kp[:7, :2] = np.where(person.visible[:, None], person.keypoints, 0.0)
    kp[:7, 2] = np.where(person.visible, 2, 0)
    pts = np.vstack([person.keypoints[person.visible], person.face_box.reshape(2, 2)])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    pad = 0.25 * (hi - lo).max()
    x0, y0 = max(lo[0] - pad, 0.0), max(lo[1] - pad, 0.0)
    x1, y1 = min(hi[0] + pad, width), min(hi[1] + 2 * (hi - lo).max(), height)
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "keypoints": [round(float(v), 2) for v in kp.reshape(-1)], "num_keypoints": int(person.visible.sum()),
            "bbox": [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
            "area": round(float((x1 - x0) * (y1 - y0)), 2), "segmentation": []}


def write_coco(path, root, people: dict, names, edit: bool = False) -> dict:
    """A COCO person-keypoints file of the photos `names` under `root`, labelled from teacher detections
    `people` (str(path) -> persons); with `edit` the hand-made edits above. Returns the written dict."""
    import json

    import numpy as np
    from PIL import Image

    from toolkit.pose.coco import COCO17_NAMES

    data = {"info": {"description": "teacher labels as COCO, for tests"}, "images": [], "annotations": [],
            "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO17_NAMES),
                            "skeleton": [[16, 14], [14, 12]]}]}
    for image_id, name in enumerate(names, start=1):
        w, h = Image.open(root / name).size
        data["images"].append({"id": image_id, "file_name": name, "width": w, "height": h})
        persons = people[str(root / name)]
        anns = [coco_person(p, len(data["annotations"]) + k + 1, image_id, w, h) for k, p in enumerate(persons)]
        if edit and name == "obama.jpg":
            anns[0]["keypoints"][5 * 3 + 2] = 1
            xs, ys = COCO_CROWD_POLYGON[0::2], COCO_CROWD_POLYGON[1::2]
            anns.append({"id": 900, "image_id": image_id, "category_id": 1, "iscrowd": 1, "keypoints": [0] * 51,
                         "num_keypoints": 0, "segmentation": [COCO_CROWD_POLYGON],
                         "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], "area": 60000.0})
        if edit and name == "vtest_200.png":
            j = int(np.argmin([np.linalg.norm(p.keypoints[0] - COCO_UNLABELLED_NEAR) for p in persons]))
            anns[j]["keypoints"], anns[j]["num_keypoints"] = [0] * 51, 0
        if edit and name == "vtest_000.png":
            anns[0]["keypoints"][3 * 3] = w + 40.0
        data["annotations"] += anns
    Path(path).write_text(json.dumps(data))
    return data


@pytest.fixture(scope="session")
def coco_train(tmp_path_factory, pose_photos, pose_people):
    """(annotation path, images root, dict): teacher labels of COCO_TRAIN_PHOTOS with the hand-made edits."""
    path = tmp_path_factory.mktemp("coco") / "person_keypoints_train.json"
    data = write_coco(path, pose_photos["train"], pose_people, COCO_TRAIN_PHOTOS, edit=True)
    return path, pose_photos["train"], data


@pytest.fixture(scope="session")
def coco_heldout(tmp_path_factory, pose_photos, pose_people):
    """(annotation path, images root, dict): teacher labels of the held-out photos, unedited."""
    names = sorted(p.name for p in pose_photos["heldout"].iterdir())
    path = tmp_path_factory.mktemp("coco") / "person_keypoints_heldout.json"
    return path, pose_photos["heldout"], write_coco(path, pose_photos["heldout"], pose_people, names)
