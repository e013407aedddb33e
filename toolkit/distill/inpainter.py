"""Sampling with a trained student, and `load_student_inpainter(run_dir)` (the `load_inpainter` contract).

The student runs its fixed timesteps t_0 > t_1 > ... > t_{N-1} (a subset of the teacher's DDIM timesteps):
  x = z  (unit Gaussian from the per-image seed; the teacher starts from the same z for that seed), with the
         known pixels set to sqrt(abar_0) * image + sqrt(1 - abar_0) * z
  step k: x0_k = student_k([x, image*mask, mask, keypoint maps])
          k < N-1: deterministic DDIM update (eta = 0) to t_{k+1} with the eps implied by x0_k, where x0_k
                   is replaced by the known image on known pixels (a deterministic RePaint)
          k = N-1: the result is clamp(x0_k, -1, 1)
  out = image*mask + x0*(1-mask)   (known pixels are the input's, exactly)
Everything it needs (timesteps, alpha_bar at them, keypoint heatmap sigma) is in the student's config.json,
so a student run does not need its teacher's weights at inference time — nor does the microcontroller.
"""

from __future__ import annotations

from pathlib import Path

import torch

from toolkit.artifacts import read_manifest
from toolkit.diffusion.prior import START_OPTIONS, start_index
from toolkit.distill.student import Student

STAGE = "student"


def ddim_step(x_t, x0, alpha_bar_t: float, alpha_bar_next: float):
    """Deterministic DDIM (eta=0) from x_t to the next timestep, given the predicted clean image x0."""
    a_t = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype)
    a_n = torch.as_tensor(alpha_bar_next, dtype=x_t.dtype)
    eps = (x_t - a_t.sqrt() * x0) / (1 - a_t).sqrt()
    return a_n.sqrt() * x0 + (1 - a_n).sqrt() * eps


def ddim_target_x0(x_t, x_next, alpha_bar_t: float, alpha_bar_next: float):
    """The x0 for which `ddim_step(x_t, x0, ...)` lands exactly on `x_next` (progressive-distillation target)."""
    a_t = torch.as_tensor(alpha_bar_t, dtype=x_t.dtype)
    a_n = torch.as_tensor(alpha_bar_next, dtype=x_t.dtype)
    ratio = (1 - a_n).sqrt() / (1 - a_t).sqrt()
    return (x_next - ratio * x_t) / (a_n.sqrt() - ratio * a_t.sqrt())


def student_input(x_t, images, masks, kp_maps):
    """The student's single input tensor: x_t(3) + masked context(3) + mask(1) + keypoint maps(7)."""
    return torch.cat([x_t, images * masks, masks, kp_maps], dim=1)


def sample_student(student: Student, alphas: list, images, masks, kp_maps, noise, *, grad: bool = False,
                   init_image=None, first_step: int = 0):
    """Run the student's steps from `noise`; returns (x0, list of x_t fed to each step).

    Known pixels follow a deterministic RePaint: at t_0 they are sqrt(abar) * image + sqrt(1 - abar) * z,
    and every DDIM update uses the known image as x0 there, so they stay the known image noised with the
    *same* z at every step (in distribution for the network, and no random generator needed on a device).
    init_image / first_step: SDEdit — start at step `first_step` from init_image noised to its timestep
    (the face box) instead of from pure noise.
    """
    a0 = torch.as_tensor(alphas[first_step], dtype=noise.dtype)
    start = noise if init_image is None else a0.sqrt() * init_image + (1 - a0).sqrt() * noise
    x = masks * (a0.sqrt() * images + (1 - a0).sqrt() * noise) + (1 - masks) * start
    inputs = []
    with torch.set_grad_enabled(grad):
        for k in range(first_step, student.num_steps):
            inputs.append(x)
            x0 = student(student_input(x, images, masks, kp_maps), k)
            if k + 1 < student.num_steps:
                # Intermediate x0 is not clamped: the DDIM jump target may leave [-1, 1].
                x = ddim_step(x, masks * images + (1 - masks) * x0, alphas[k], alphas[k + 1])
            else:
                x0 = x0.clamp(-1, 1)
    return x0, inputs


def noise_for_seeds(seeds, resolution: int) -> torch.Tensor:
    """Initial noise, one generator per image: the teacher's convention, so equal seeds give equal z."""
    return torch.cat([torch.randn((1, 3, resolution, resolution), generator=torch.Generator("cpu").manual_seed(int(s)))
                      for s in seeds])


def seeds_for(seed, batch: int) -> list[int]:
    """An int gives seed, seed+1, ... (image i uses seed+i); a sequence is one seed per image."""
    if isinstance(seed, int) or (isinstance(seed, torch.Tensor) and seed.ndim == 0):
        return [int(seed) + i for i in range(batch)]
    seeds = [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for {batch} images")
    return seeds


def heatmaps(keypoints, visible, size: int, sigma_px: float):
    """Keypoint maps exactly as the teacher builds them (its own function: the two can never disagree)."""
    from toolkit.diffusion.model import keypoint_heatmaps

    return keypoint_heatmaps(torch.as_tensor(keypoints), torch.as_tensor(visible), size, float(sigma_px))


class StudentInpainter:
    """A distilled student behind the same interface as the teacher's inpainter.

    `student` is a `Student`, or anything callable the same way with the same sampling constants
    (`toolkit.distill.int8_inpainter.Int8StepNetworks`: the quantized step networks, run bit-exactly as on the MCU).
    """

    def __init__(self, student: Student, run_dir=None, manifest=None):
        if student.alphas_cumprod is None or len(student.alphas_cumprod) != student.num_steps:
            raise ValueError("student config lacks alpha_bar values for its timesteps (not a distilled student?)")
        self.student = student.eval()
        self.alphas = list(student.alphas_cumprod)
        self.sigma_px = float(student.keypoint_maps["sigma_px"])
        self.resolution = student.resolution
        self.run_dir = Path(run_dir) if run_dir else None
        self.manifest = manifest or {}
        self.steps = student.num_steps
        self.defaults = {"steps": self.steps}

    @torch.no_grad()
    def inpaint(self, images, masks, keypoints, visible, *, seed=0, noise=None, return_info=False,
                progress=False, max_batch: int = 256, **sampling):
        """images (B,3,S,S) in [-1,1], masks (B,1,S,S) 1=known, keypoints (B,7,2) in [0,1], visible (B,7).

        seed: int (image i uses seed+i) or one seed per image, as for the teacher: equal seeds, equal noise.
        cfg_scale / rg_weight / scheduler / repaint / eta are accepted and ignored: the guidance is baked in.
        """
        unknown = set(sampling) - {"steps", "cfg_scale", "rg_weight", "scheduler", "repaint", "eta", *START_OPTIONS}
        if unknown:
            raise ValueError(f"unknown sampling option(s): {', '.join(sorted(unknown))}")
        steps = sampling.get("steps")
        if steps not in (None, self.steps):
            raise ValueError(
                f"this student was distilled for {self.steps} step(s); it cannot sample with {steps} "
                "(distill another student with `toolkit distill --steps N`)"
            )
        S = self.resolution
        for name, t in (("images", images), ("masks", masks), ("keypoints", keypoints), ("visible", visible)):
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        B = images.shape[0]
        expected = {"images": (B, 3, S, S), "masks": (B, 1, S, S), "keypoints": (B, 7, 2), "visible": (B, 7)}
        for name, t in zip(expected, (images, masks, keypoints, visible)):
            if tuple(t.shape) != expected[name]:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, this student needs {expected[name]}")
        images = images.float().cpu()
        masks = masks.float().cpu()
        if noise is None:
            noise = noise_for_seeds(seeds_for(seed, B), S)
        init_image, first = sampling.get("init_image"), 0
        if init_image is not None:
            init_image = init_image.float().cpu()
            first = start_index(self.student.timesteps, float(sampling.get("strength", 1.0)))
        outs = []
        for i in range(0, B, max_batch):
            sl = slice(i, i + max_batch)
            maps = heatmaps(keypoints[sl].cpu(), visible[sl].cpu(), S, self.sigma_px)
            x0, _ = sample_student(self.student, self.alphas, images[sl], masks[sl], maps, noise[sl],
                                   init_image=None if init_image is None else init_image[sl], first_step=first)
            outs.append(images[sl] * masks[sl] + x0 * (1 - masks[sl]))
        out = torch.cat(outs)
        if return_info:
            return out, {}
        return out


def load_student_inpainter(run_dir, device=None) -> StudentInpainter:
    """The inpainter of a `student` run (`toolkit.artifacts.LOADERS["student"]`); runs on the CPU (`device`
    is accepted for the loader signature)."""
    from toolkit.diffusion.prior import load_prior

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir, expect_stage=STAGE)
    inpainter = StudentInpainter(Student.from_pretrained(run_dir), run_dir, manifest)
    inpainter.face_prior = load_prior(run_dir)  # None for artifacts made before the prior existed
    return inpainter
