"""Keypoint-conditioned diffusion: the teacher model, its training and guided sampling.

The contract other stages rely on (anonymize, distill, eval) is `load_inpainter(run_dir)`, which returns an
object with:
  - `resolution: int`                face crop size the model works at (e.g. 32, 64, 256)
  - `inpaint(images, masks, keypoints, visible, *, seed=0, **sampling) -> images`
        images   (B,3,S,S) float32 torch tensor in [-1, 1]; pixels where mask==0 are ignored
        masks    (B,1,S,S) float32, 1 = known pixel (kept), 0 = to generate (the face box)
        keypoints (B,7,2) float32 normalized to [0,1] in crop coordinates (COCO order, toolkit.keypoints)
        visible  (B,7) bool
      returns (B,3,S,S) in [-1, 1]; known pixels equal the input (RePaint-style replacement at the end).
A distilled student run implements the same contract, so `toolkit anonymize --model STUDENT_RUN` works.
"""
