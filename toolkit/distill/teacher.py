"""The teacher as the distillation sees it: guided DDIM trajectories recorded at the student's timesteps.

Built on the teacher's own sampler (`toolkit.diffusion.sampling.guided_inpaint`: CFG + reconstruction
guidance + RePaint replacement, DDIM eta = 0, the teacher's default options unless overridden), so the targets
are exactly what `toolkit anonymize --model TEACHER` produces for the same seed.

Note on RePaint: the teacher re-noises the known pixels with fresh noise from the image's seeded generator at
every step, so its result depends on the seed, not only on the initial noise z the student sees; the student
learns the average over that extra noise (a little smoother than any single teacher sample). Turning
replacement off (`--no-teacher-repaint`) makes the teacher a deterministic map z -> x0, but an imperfect
teacher then lets the known region drift and its faces get worse, so it is not the default.
"""

from __future__ import annotations

from pathlib import Path

import torch

from toolkit.artifacts import ArtifactError, read_manifest
from toolkit.assets import sha256_file
from toolkit.distill.inpainter import noise_for_seeds

TEACHER_STAGE = "teacher"


def pair_seed(seed: int, draw: int, index: int) -> int:
    """Seed of the teacher noise for image `index`, noise draw `draw` (independent of batching)."""
    return (seed * 1_000_003 + draw * 100_003 + index) % (2**63 - 1)


class DistillTeacher:
    def __init__(self, run_dir, *, cfg_scale=None, rg_weight=None, repaint=None, steps=None):
        from toolkit.diffusion.sampling import TeacherInpainter

        self.run_dir = Path(run_dir)
        try:
            manifest = read_manifest(self.run_dir)
        except ArtifactError as exc:
            raise ArtifactError(f"--teacher {exc}") from exc
        if manifest.get("stage") != TEACHER_STAGE:
            raise ArtifactError(
                f"--teacher {self.run_dir}: is a '{manifest.get('stage')}' artifact, not a teacher; "
                "distill from a run made by `toolkit train`"
            )
        self.inpainter = TeacherInpainter.from_run(self.run_dir, manifest, device="cpu")
        self.manifest = manifest
        self.resolution = self.inpainter.resolution
        self.keypoint_sigma = self.inpainter.keypoint_sigma
        d = self.inpainter.defaults
        if d.get("scheduler", "ddim") != "ddim":
            print(f"note: the teacher's default scheduler is {d['scheduler']}; distilling from its DDIM trajectory")
        self.sampling_options = {
            "scheduler": "ddim",
            "steps": int(steps or d["steps"]),
            "cfg_scale": float(d["cfg_scale"] if cfg_scale is None else cfg_scale),
            "rg_weight": float(d["rg_weight"] if rg_weight is None else rg_weight),
            "repaint": bool(d.get("repaint", True) if repaint is None else repaint),
            "eta": 0.0,
        }
        self.default_steps = self.sampling_options["steps"]
        weights = self.run_dir / "unet" / "diffusion_pytorch_model.safetensors"
        self.weights_sha256 = sha256_file(weights) if weights.exists() else None
        data = (manifest.get("data") or {}).get("path") if isinstance(manifest.get("data"), dict) else manifest.get("data")
        self.data_dir = Path(data) if data else None

    def _scheduler(self, steps: int):
        from toolkit.diffusion.sampling import make_scheduler

        s = make_scheduler("ddim", self.inpainter.scheduler_config)
        s.set_timesteps(int(steps))
        return s

    def timesteps(self, steps: int | None = None) -> list[int]:
        return [int(t) for t in self._scheduler(steps or self.default_steps).timesteps]

    def alpha_bar(self, t: int) -> float:
        return float(self._scheduler(self.default_steps).alphas_cumprod[int(t)])

    def heatmaps(self, keypoints, visible):
        from toolkit.diffusion.model import keypoint_heatmaps

        return keypoint_heatmaps(keypoints, visible, self.resolution, self.keypoint_sigma)

    @torch.no_grad()
    def trajectory(self, images, masks, keypoints, visible, seeds, record):
        """Guided sample from the per-image seeds; returns (x0 with known pixels pasted, {t: x_t}, z).

        x_t is the state the scheduler steps from at timestep t (what the UNet saw, after RePaint replacement);
        z is the initial noise.
        """
        from toolkit.diffusion.sampling import guided_inpaint

        opts = self.sampling_options
        sched = self._scheduler(opts["steps"])
        first = int(sched.timesteps[0])
        wanted = {int(t) for t in record} | {first}
        states = {}
        step = sched.step

        def recording_step(model_output, timestep, sample, *args, **kwargs):
            if int(timestep) in wanted:
                states[int(timestep)] = sample.detach().float().cpu().clone()
            return step(model_output, timestep, sample, *args, **kwargs)

        sched.step = recording_step  # this scheduler instance only
        out, _ = guided_inpaint(
            self.inpainter.unet, sched, images, masks, keypoints, visible,
            keypoint_sigma=self.keypoint_sigma, seed=list(seeds), steps=opts["steps"],
            cfg_scale=opts["cfg_scale"], rg_weight=opts["rg_weight"], repaint=opts["repaint"], eta=0.0,
        )
        missing = wanted - set(states)
        if missing:
            raise RuntimeError(f"teacher trajectory has no state at timesteps {sorted(missing)}")
        # The initial noise z: the first draw of each image's generator (the student's convention too).
        # Face pixels of the first state are z untouched; if not, the teacher's noise convention changed.
        z = noise_for_seeds(seeds, self.resolution)
        hole = (masks < 0.5).expand_as(z).cpu()
        if not torch.allclose(states[first][hole], z[hole], atol=1e-5):
            raise RuntimeError("the teacher's initial noise does not follow the per-image seed convention; "
                               "teacher and student would not start from the same z")
        return out.float().cpu(), states, z

    def sample(self, images, masks, keypoints, visible, seeds, steps=None):
        """The teacher's inpainting (same options as the distillation targets) from per-image seeds."""
        opts = dict(self.sampling_options)
        if steps:
            opts["steps"] = int(steps)
        return self.inpainter.inpaint(images, masks, keypoints, visible, seed=list(seeds), **opts)


def load_teacher(run_dir, **options) -> DistillTeacher:
    return DistillTeacher(run_dir, **options)
