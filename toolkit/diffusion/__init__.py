"""Keypoint-conditioned diffusion: the teacher model, its training and guided sampling.

The contract other stages rely on (anonymize, distill, eval) is `toolkit.artifacts.load_inpainter(run_dir)`
(the loader of the run's stage: `load_teacher` here, the student's in toolkit.distill), which returns an
object with:
  - `resolution: int`                face crop size the model works at (e.g. 32, 64, 256)
  - `inpaint(images, masks, keypoints, visible, *, seed=0, **sampling) -> images`
        images   (B,3,S,S) float32 torch tensor in [-1, 1]; pixels where mask==0 are ignored
        masks    (B,1,S,S) float32, 1 = known pixel (kept), 0 = to generate (the face box)
        keypoints (B,7,2) float32 normalized to [0,1] in crop coordinates (COCO order, toolkit.keypoints)
        visible  (B,7) bool
      returns (B,3,S,S) in [-1, 1]; known pixels equal the input (RePaint-style replacement at the end).
A distilled student run implements the same contract, so `toolkit anonymize --model STUDENT_RUN` works.
Every inpainter also has `face_prior` (toolkit.diffusion.prior: the mean face and the colour mode of its
training data, or None), which `toolkit.anonymize` uses to start sampling and to colour gray-trained faces;
`inpaint` takes `init_image` and `strength` for that start (SDEdit).

The teacher also accepts, as keyword arguments of `inpaint`: seed (int: image i uses seed+i, or one seed per
image, so results do not depend on batch composition), scheduler ("ddim" | "ddpm" | "dpm"), steps, cfg_scale
(classifier-free guidance; 1 = plain conditional), rg_weight (reconstruction guidance; 0 = off), repaint
(bool), eta (DDIM), return_info (also return per-image "known_error"), progress, max_batch. Unknown keys raise
ValueError. The teacher additionally has `.manifest` (its toolkit.json) and `.defaults` (sampling defaults).
"""


def load_teacher(run_dir, device=None):
    """The inpainter of a `teacher` run directory (`toolkit.artifacts.LOADERS["teacher"]`).

    `device`: torch device string (default: CUDA when present, else CPU)."""
    from toolkit.artifacts import read_manifest
    from toolkit.diffusion.prior import load_prior
    from toolkit.diffusion.sampling import TeacherInpainter

    inpainter = TeacherInpainter.from_run(run_dir, read_manifest(run_dir, expect_stage="teacher"), device=device)
    inpainter.face_prior = load_prior(run_dir)  # None for artifacts made before the prior existed
    return inpainter


__all__ = ["load_teacher"]
