"""Shared fixture: `tiny_teacher_run`, a tiny32 teacher trained on `fdf_dir` (used by anonymize/distill tests)."""

import pytest

TINY_TEACHER_STEPS = 300
TINY_TEACHER_BATCH = 16


@pytest.fixture(scope="session")
def tiny_teacher_run(tmp_path_factory, fdf_dir):
    """Path of a finished tiny32 teacher run (artifact: unet/, scheduler/, toolkit.json, log.csv).

    Trained once per test session: TINY_TEACHER_STEPS steps at batch TINY_TEACHER_BATCH on `fdf_dir`, seed 0,
    through `toolkit.diffusion.train.train` (the code behind `toolkit train`). Load it with
    `toolkit.artifacts.load_inpainter(path)`. Read-only: do not modify it.
    """
    from toolkit.diffusion.train import make_config, train

    out = tmp_path_factory.mktemp("teacher") / "tiny32"
    cfg = make_config(fdf_dir, out, "tiny32", max_steps=TINY_TEACHER_STEPS, batch_size=TINY_TEACHER_BATCH,
                      seed=0, checkpoint_every=0, sample_every=0, progress=False)
    return train(cfg)
