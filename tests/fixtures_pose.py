"""Shared fixtures of the pose tests: a train / held-out split of the real sample photos, the teacher's
detections on them (computed once), and a tiny pose model trained on blurred images."""

import shutil

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
