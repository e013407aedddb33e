"""Guided inpainting with the teacher: classifier-free guidance, reconstruction guidance and RePaint replacement.

One denoising step at timestep t (x = current sample, y = known image, m = mask, 1 = known):
  1. RePaint replacement: x <- m * q(y_t | y) + (1 - m) * x, i.e. the known pixels are the known image
     forward-noised to level t, so the model always sees a consistent known region.
  2. Classifier-free guidance: eps = eps_uncond + s * (eps_cond - eps_uncond), where the unconditional branch
     has the keypoint condition dropped (context and mask stay: they are never dropped in training).
     (A v-prediction model's output is combined the same way and converted to eps: the two are linear in it.)
  3. Reconstruction guidance (Ho et al., "Video Diffusion Models", eq. 7): the clean-image prediction
     x0 = (x - sqrt(1-abar) eps) / sqrt(abar) is corrected by -(w * sqrt(abar) / 2) * grad_x ||m (y - x0)||^2,
     which pulls the *whole* prediction (not only the known pixels) towards agreeing with the known region;
     the corrected x0 is turned back into an epsilon for the scheduler.
  4. scheduler.step (DDPM or DDIM from diffusers).
Finally the known pixels are pasted back exactly.

Randomness comes from one torch.Generator per image, seeded from that image's seed, so an image's result
does not depend on which other images share its batch.
"""

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from toolkit.diffusion.model import condition_channels, null_condition
from toolkit.diffusion.prior import START_OPTIONS, start_index

SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,  # extra: good quality at 10-20 steps
}

# CFG 3: on the demo's held-out faces the guided teacher (and its student) reach the keypoint probe's floor,
# where 1.5 drew faces barely closer to their keypoints than the mean face (ablation: docs/anonymize.md).
SAMPLING_DEFAULTS = {"scheduler": "ddim", "steps": 25, "cfg_scale": 3.0, "rg_weight": 0.0, "repaint": True}


def make_scheduler(name: str, config: dict):
    """A fresh scheduler of kind `name` from the run's training noise schedule (`scheduler/` config)."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    cls = SCHEDULERS[name]
    kwargs = {}
    if name == "dpm":
        # The DPM-Solver's own default thresholding/clipping does not apply to epsilon models in [-1,1].
        kwargs = {"algorithm_type": "dpmsolver++", "solver_order": 2}
    return cls.from_config(config, **kwargs)


def seeds_for(seed, batch: int) -> list[int]:
    """Per-image seeds: an int gives seed, seed+1, ...; a sequence is taken as one seed per image."""
    if isinstance(seed, (int,)) or (isinstance(seed, torch.Tensor) and seed.ndim == 0):
        return [int(seed) + i for i in range(batch)]
    seeds = [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for {batch} images")
    return seeds


def _masked_mse(a: torch.Tensor, b: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error over the known pixels (all 3 channels)."""
    m3 = m.expand_as(a)
    return ((a - b) ** 2 * m3).flatten(1).sum(1) / m3.flatten(1).sum(1).clamp_min(1.0)


@torch.no_grad()
def _no_grad_predict(unet, x_in, t, cond, uncond, cfg_scale):
    return _predict(unet, x_in, t, cond, uncond, cfg_scale)


def _predict(unet, x_in, t, cond, uncond, cfg_scale):
    """CFG-combined epsilon; one UNet call (batched cond+uncond) when both branches are needed."""
    b = x_in.shape[0]
    tt = t.expand(b) if t.ndim == 0 else t
    dtype = next(unet.parameters()).dtype
    if cfg_scale == 1.0:
        return unet(torch.cat([x_in, cond], 1).to(dtype), tt).sample.float()
    if cfg_scale == 0.0:
        return unet(torch.cat([x_in, uncond], 1).to(dtype), tt).sample.float()
    both = torch.cat([torch.cat([x_in, cond], 1), torch.cat([x_in, uncond], 1)], 0).to(dtype)
    eps_c, eps_u = unet(both, torch.cat([tt, tt])).sample.float().chunk(2)
    return eps_u + cfg_scale * (eps_c - eps_u)


def guided_inpaint(
    unet,
    scheduler,
    images: torch.Tensor,
    masks: torch.Tensor,
    keypoints: torch.Tensor,
    visible: torch.Tensor,
    *,
    keypoint_sigma: float,
    seed=0,
    steps: int = SAMPLING_DEFAULTS["steps"],
    cfg_scale: float = SAMPLING_DEFAULTS["cfg_scale"],
    rg_weight: float = SAMPLING_DEFAULTS["rg_weight"],
    repaint: bool = True,
    eta: float = 0.0,
    progress: bool = False,
    init_image: torch.Tensor | None = None,
    strength: float = 1.0,
) -> tuple[torch.Tensor, dict]:
    """Inpaint the mask==0 pixels. Returns (images with known pixels pasted back, info).

    init_image / strength: SDEdit. Sampling starts from init_image noised to the first timestep at or below
    strength x the first timestep + 1 (1 = pure noise, as without init_image), and runs the steps from there.

    info["known_error"] is the per-image MSE, over the known pixels, of the final sample *before* the paste
    (how well the generated image agrees with the context by itself); info["x0_known_error"] is the same for
    the clean-image prediction averaged over all steps.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if rg_weight < 0:
        raise ValueError(f"rg_weight must be >= 0, got {rg_weight}")
    device = next(unet.parameters()).device
    b, _, s, _ = images.shape
    images = images.to(device, torch.float32)
    masks = masks.to(device, torch.float32)
    keypoints = keypoints.to(device, torch.float32)
    visible = visible.to(device)
    gens = [torch.Generator("cpu").manual_seed(sd) for sd in seeds_for(seed, b)]

    cond = condition_channels(images, masks, keypoints, visible, keypoint_sigma)
    uncond = null_condition(cond)
    scheduler.set_timesteps(steps)
    abars = scheduler.alphas_cumprod.to(device)
    x = randn_tensor((b, 3, s, s), generator=gens, device=device) * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    if init_image is not None and strength < 1.0:
        first = start_index(timesteps, strength)
        timesteps = timesteps[first:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first)
        a0 = abars[timesteps[0]]
        x = a0.sqrt() * init_image.to(device, torch.float32) + (1 - a0).sqrt() * x
    x0_err = torch.zeros(b, device=device)
    step_kwargs = {"eta": eta} if isinstance(scheduler, DDIMScheduler) else {}
    # Guidance works on epsilon; a v-prediction model's output is converted to epsilon and back (for the
    # scheduler, whose config says what the model predicts).
    kind = scheduler.config.prediction_type
    if kind not in ("epsilon", "v_prediction"):
        raise ValueError(f"unsupported prediction_type {kind!r} (the teacher predicts epsilon or v)")

    def to_eps(out, x_t, abar):
        return out if kind == "epsilon" else (1 - abar).sqrt() * x_t + abar.sqrt() * out

    def from_eps(eps, x0, abar):
        return eps if kind == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * x0

    for t in tqdm(timesteps, desc="sampling", leave=False, disable=not progress):
        t = t.to(device)
        abar = abars[t]
        if repaint:
            noise = randn_tensor((b, 3, s, s), generator=gens, device=device)
            known_t = abar.sqrt() * images + (1 - abar).sqrt() * noise
            x = masks * known_t + (1 - masks) * x
        x_in = scheduler.scale_model_input(x, t)
        if rg_weight > 0:
            with torch.enable_grad():
                x_in = x_in.detach().requires_grad_(True)
                eps = to_eps(_predict(unet, x_in, t, cond, uncond, cfg_scale), x_in, abar)
                x0 = (x_in - (1 - abar).sqrt() * eps) / abar.sqrt()
                err = (((x0 - images) ** 2) * masks).sum()
                (grad,) = torch.autograd.grad(err, x_in)
            x0 = x0.detach() - (rg_weight * abar.sqrt() / 2) * grad
            eps = (x_in.detach() - abar.sqrt() * x0) / (1 - abar).sqrt()
        else:
            eps = to_eps(_no_grad_predict(unet, x_in, t, cond, uncond, cfg_scale), x_in, abar)
            x0 = (x_in - (1 - abar).sqrt() * eps) / abar.sqrt()
        x0_err += _masked_mse(x0.clamp(-1, 1), images, masks)
        with torch.no_grad():
            out = from_eps(eps.detach(), x0.detach(), abar)
            x = scheduler.step(out, t, x.detach(), generator=gens, **step_kwargs).prev_sample
    x = x.clamp(-1, 1)
    info = {
        "known_error": _masked_mse(x, images, masks).cpu(),
        "x0_known_error": (x0_err / len(timesteps)).cpu(),
    }
    out = masks * images + (1 - masks) * x
    return out, info


class TeacherInpainter:
    """`load_inpainter` result for stage "teacher": the EMA UNet plus its noise schedule and conditioning."""

    def __init__(self, unet, scheduler_config: dict, manifest: dict, device=None):
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.unet = unet.to(self.device).eval()
        self.unet.requires_grad_(False)
        self.scheduler_config = dict(scheduler_config)
        self.manifest = manifest
        self.resolution = int(manifest["preset"]["resolution"])
        self.keypoint_sigma = float(manifest["conditioning"]["keypoint_heatmaps"]["sigma_px"])
        self.defaults = {**SAMPLING_DEFAULTS, **manifest.get("sampling_defaults", {})}

    @classmethod
    def from_run(cls, run_dir, manifest: dict, device=None) -> "TeacherInpainter":
        from pathlib import Path

        from diffusers import UNet2DModel

        from toolkit.artifacts import ArtifactError

        run_dir = Path(run_dir)
        for sub in ("unet", "scheduler"):
            if not (run_dir / sub).is_dir():
                raise ArtifactError(f"{run_dir}: teacher artifact is incomplete (no {sub}/ folder)")
        try:
            unet = UNet2DModel.from_pretrained(run_dir / "unet")
            scheduler_config = DDPMScheduler.load_config(run_dir / "scheduler")
        except (OSError, ValueError, EnvironmentError) as exc:
            raise ArtifactError(f"{run_dir}: cannot load the teacher weights ({exc})") from exc
        return cls(unet, scheduler_config, manifest, device=device)

    def _check(self, images, masks, keypoints, visible):
        s = self.resolution
        b = images.shape[0]
        expected = {"images": (b, 3, s, s), "masks": (b, 1, s, s), "keypoints": (b, 7, 2), "visible": (b, 7)}
        for name, tensor in zip(expected, (images, masks, keypoints, visible)):
            if not isinstance(tensor, torch.Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
            if tuple(tensor.shape) != expected[name]:
                raise ValueError(f"{name} has shape {tuple(tensor.shape)}, this model needs {expected[name]}")

    def inpaint(self, images, masks, keypoints, visible, *, seed=0, return_info=False, progress=False,
                max_batch: int = 64, **sampling):
        """The `load_inpainter` contract (see toolkit.diffusion). `sampling` keys: scheduler, steps, cfg_scale,
        rg_weight, repaint, eta. `seed` is an int (image i uses seed+i) or one seed per image."""
        unknown = set(sampling) - set(SAMPLING_DEFAULTS) - {"eta", *START_OPTIONS}
        if unknown:
            raise ValueError(f"unknown sampling option(s): {', '.join(sorted(unknown))}")
        self._check(images, masks, keypoints, visible)
        init_image = sampling.pop("init_image", None)
        strength = float(sampling.pop("strength", 1.0))
        opts = {**self.defaults, **sampling}
        seeds = seeds_for(seed, images.shape[0])
        outs, infos = [], []
        for i in range(0, images.shape[0], max_batch):
            sl = slice(i, i + max_batch)
            scheduler = make_scheduler(opts["scheduler"], self.scheduler_config)
            out, info = guided_inpaint(
                self.unet, scheduler, images[sl], masks[sl], keypoints[sl], visible[sl],
                keypoint_sigma=self.keypoint_sigma, seed=seeds[sl], steps=int(opts["steps"]),
                cfg_scale=float(opts["cfg_scale"]), rg_weight=float(opts["rg_weight"]),
                repaint=bool(opts["repaint"]), eta=float(opts.get("eta", 0.0)), progress=progress,
                init_image=None if init_image is None else init_image[sl], strength=strength,
            )
            outs.append(out.to(images.device))
            infos.append(info)
        out = torch.cat(outs)
        if return_info:
            merged = {k: torch.cat([inf[k] for inf in infos]) for k in infos[0]}
            return out, merged
        return out
