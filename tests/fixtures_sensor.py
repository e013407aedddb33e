"""Fixtures of the on-device pipeline tests: the tiny pose run quantized, the pipeline constants built from it
and the quantized student, and real 96x96 frames from the bundled photos."""

import pytest

SENSOR_POSE_TARGET = "stm32h743"
SENSOR_POSE_QAT_STEPS = 10


@pytest.fixture(scope="session")
def quantized_pose_run(tmp_path_factory, tiny_pose_run):
    """`tiny_pose_run` quantized by the `toolkit quantize` CLI (a "quantized" artifact, model_kind "pose")."""
    return _quantize_pose(tiny_pose_run, tmp_path_factory.mktemp("pose_q") / "tiny-pose-q")


def _quantize_pose(run, out):
    from toolkit.cli import main

    rc = main(["--debug", "quantize", "--model", str(run), "--target", SENSOR_POSE_TARGET, "--out", str(out),
               "--qat-steps", str(SENSOR_POSE_QAT_STEPS), "--calib", "16", "--eval", "4", "--threads", "1",
               "--no-tflite", "--no-progress"])
    assert rc == 0, f"toolkit quantize failed on {run}"
    return out


@pytest.fixture(scope="session")
def sensor_pipeline(quantized_pose_run, quantized_student_run):
    from toolkit.onboard.config import build_pipeline

    return build_pipeline(quantized_pose_run, quantized_student_run, "pose_step0", "student")


@pytest.fixture(scope="session")
def sensor_frames(sample_photos):
    """[(label, 96x96x3 uint8)]: real people from the bundled photos, framed as the pose model sees them."""
    from toolkit.onboard.frames import real_frames

    return real_frames(4)


@pytest.fixture(scope="session")
def sensor_teacher_frames(sample_photos):
    """[(label, 96x96x3 uint8 frame, teacher keypoints Q8 (7, 2) int64, visible (7,) bool)]: every bundled
    photo's person as `real_frames` frames it, with the BlazePose teacher's keypoints in frame pixels."""
    import numpy as np

    from toolkit import assets
    from toolkit.images import load_rgb
    from toolkit.onboard.frames import FRAME_PHOTOS, person_frame

    out = []
    for name in FRAME_PHOTOS:
        got = person_frame(load_rgb(assets.sample_photo(name)), 96)
        if got is not None:
            frame, kp, vis = got
            out.append((name, frame, np.round(np.asarray(kp, np.float64) * 256).astype(np.int64),
                        np.asarray(vis, bool)))
    return out


@pytest.fixture(scope="session")
def quantized_multi_pose_run(tmp_path_factory, pose_photos, pose_people):
    """A `multi_tiny` (multi-person) pose run trained on the blurred training photos, quantized by the CLI."""
    from toolkit.pose.train import TrainSettings, train_pose

    run = tmp_path_factory.mktemp("mpose") / "multi-tiny"
    train_pose(pose_photos["train"], run, method="blur", people=pose_people, progress=False,
               settings=TrainSettings(steps=400, preset="multi_tiny", seed=0, threads=1))
    return _quantize_pose(run, run.parent / "multi-tiny-q")


@pytest.fixture(scope="session")
def multi_pipeline(quantized_multi_pose_run, quantized_student_run):
    from toolkit.onboard.config import build_pipeline

    return build_pipeline(quantized_multi_pose_run, quantized_student_run, "pose_step0", "student")


@pytest.fixture(scope="session")
def multi_frames(sample_photos):
    """[(label, 96x96x3 frame, teacher people)]: 1-4 people of the bundled photos per frame."""
    from toolkit.onboard.frames import multi_person_frames

    return multi_person_frames(8)


@pytest.fixture(scope="session")
def quantized_verifier_run(tmp_path_factory, pose_photos, pose_people, quantized_multi_pose_run,
                           quantized_student_run):
    """A `heads_tiny` face-presence verifier trained on the blurred training photos and on the tiny multi-person
    pipeline's own outputs (its replaced faces as negatives), quantized by the CLI."""
    from toolkit.onboard.config import build_pipeline
    from toolkit.onboard.frames import replaced_bank
    from toolkit.pose.train import TrainSettings, train_pose

    pipe = build_pipeline(quantized_multi_pose_run, quantized_student_run, "pose_step0", "student")
    run = tmp_path_factory.mktemp("verifier") / "heads-tiny"
    train_pose(pose_photos["train"], run, method="blur", people=pose_people, progress=False,
               settings=TrainSettings(steps=VERIFIER_TRAIN_STEPS, preset="heads_tiny", seed=5, threads=1),
               replaced_from=lambda regions: replaced_bank(regions, pipe, 24, seed=5))
    return _quantize_pose(run, run.parent / "heads-tiny-q")


VERIFIER_TRAIN_STEPS = 300


@pytest.fixture(scope="session")
def verified_pipeline(quantized_multi_pose_run, quantized_student_run, quantized_verifier_run):
    """The tiny multi-person pipeline with the tiny verifier run on its output."""
    from toolkit.onboard.config import build_pipeline

    return build_pipeline(quantized_multi_pose_run, quantized_student_run, "pose_step0", "student",
                          verifier_run=quantized_verifier_run)
