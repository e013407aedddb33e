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


def write_coco(path, root, people: dict, names, edit: bool = False) -> dict:
    """The teacher's labels of the photos `names` under `root` as a COCO file (`toolkit.pose.coco.teacher_to_coco`
    on a folder of just those photos); with `edit` the hand-made edits above. Returns the written dict."""
    import json

    import numpy as np

    from toolkit.pose.coco import teacher_to_coco

    data = teacher_to_coco(root, people, progress=False)
    keep = {im["id"] for im in data["images"] if im["file_name"] in names}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    for im in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"]]
        if edit and im["file_name"] == "obama.jpg":
            anns[0]["keypoints"][5 * 3 + 2] = 1
            xs, ys = COCO_CROWD_POLYGON[0::2], COCO_CROWD_POLYGON[1::2]
            data["annotations"].append({"id": 900, "image_id": im["id"], "category_id": 1, "iscrowd": 1,
                                        "keypoints": [0] * 51, "num_keypoints": 0, "segmentation": [COCO_CROWD_POLYGON],
                                        "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
                                        "area": 60000.0})
        if edit and im["file_name"] == "vtest_200.png":
            noses = [np.asarray(a["keypoints"][:2]) for a in anns]
            j = int(np.argmin([np.linalg.norm(n - COCO_UNLABELLED_NEAR) for n in noses]))
            anns[j]["keypoints"], anns[j]["num_keypoints"] = [0] * 51, 0
        if edit and im["file_name"] == "vtest_000.png":
            anns[0]["keypoints"][3 * 3] = im["width"] + 40.0
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
