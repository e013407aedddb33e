"""Shared fixture: `tiny_student_run`, a 2-step tiny student distilled from `tiny_teacher_run`."""

import pytest

TINY_STUDENT_STEPS = 2
TINY_STUDENT_ITERS = 60
TINY_PROBE_ITERS = 300  # the keypoint probe behind the adherence figures: a quick one, for test time


@pytest.fixture(scope="session")
def tiny_student_run(tmp_path_factory, tiny_teacher_run):
    """Path of a finished 2-step `tiny` student run distilled from `tiny_teacher_run` (read-only).

    Made by `toolkit.distill.distill.distill` (the code behind `toolkit distill`): teacher targets at 8 DDIM
    steps, 2 noise draws per training face, TINY_STUDENT_ITERS optimizer steps; its held-out evaluation trained
    a keypoint probe (TINY_PROBE_ITERS iterations, cached in `keypoint_probe/`). Loads with
    `toolkit.artifacts.load_inpainter(path)` / `toolkit.distill.load_student_inpainter(path)`.
    """
    from toolkit.distill.distill import distill

    out = tmp_path_factory.mktemp("student") / "tiny-2step"
    distill(tiny_teacher_run, out, TINY_STUDENT_STEPS, preset="tiny", max_steps=TINY_STUDENT_ITERS,
            batch_size=8, pairs_per_image=2, teacher_steps=8, checkpoint_every=20, eval_faces=4,
            probe_iters=TINY_PROBE_ITERS, seed=0, progress=False)
    return out
