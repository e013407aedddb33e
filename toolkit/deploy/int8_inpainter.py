"""The quantized student as an inpainter: what the microcontroller computes, on the host.

`load_int8_inpainter(quantized_run)` returns an object with the `load_inpainter` contract (see
toolkit/diffusion/__init__.py), so `toolkit anonymize --model Q_RUN` and `toolkit eval --methods student-int8`
run the int8 model. Each step network is the run's ONNX-QDQ file lowered to the integer graph
(`toolkit.deploy.ir.load_qdq`) and executed by the numpy int8 reference (`toolkit.deploy.int8ref`), which is
bit-exact with the generated C code. Everything between the step networks (noise, keypoint maps, the DDIM
update, the known-pixel RePaint, pasting) is the float student's sampler `sample_student`, unchanged: only the
networks differ between `student` and `student-int8`, so a difference between the two is the quantization.

A quantized artifact is self-contained for sampling: its toolkit.json carries the student's timesteps,
alpha_bar values and keypoint-map sigma, so neither the float student nor the teacher is needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from toolkit.artifacts import ArtifactError, read_manifest

STAGE = "quantized"
IN_CHANNELS = 14  # x_t(3) + image*mask(3) + mask(1) + keypoint maps(7), as toolkit.distill.inpainter


class Int8StepNetworks:
    """The student's step networks as int8 integer graphs, callable like `Student`: `nets(x, k) -> x0`.

    x is a float (B,14,S,S) tensor; each image is quantized at the graph's input scale, run through the
    integer graph (batch 1, as on the device) and the int8 output dequantized back to float."""

    def __init__(self, graphs):
        self.graphs = list(graphs)

    @property
    def num_steps(self) -> int:
        return len(self.graphs)

    def run_int8(self, x: np.ndarray, step: int) -> np.ndarray:
        """int8 NHWC output of step `step` for one float NCHW input (1,14,S,S): the device's exact bytes."""
        from toolkit.deploy import int8ref

        graph = self.graphs[step]
        return int8ref.run(graph, int8ref.quantize_input(graph, x))

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        from toolkit.deploy import int8ref

        if not 0 <= step < self.num_steps:
            raise IndexError(f"step {step} out of range for a {self.num_steps}-step student")
        graph = self.graphs[step]
        xs = x.detach().cpu().numpy().astype(np.float32)
        out = [int8ref.dequantize_output(graph, self.run_int8(xi[None], step)) for xi in xs]
        return torch.from_numpy(np.concatenate(out)).to(x.dtype)


class Int8StudentInpainter:
    """A quantized student behind the same interface as the teacher's and the float student's inpainter."""

    def __init__(self, run_dir, manifest: dict):
        from toolkit.deploy.ir import load_qdq

        run_dir = Path(run_dir)
        kind = manifest.get("model_kind")
        if kind != "student":
            raise ArtifactError(f"{run_dir}: is a quantized {kind!r} model, not a face generator; "
                                "pass a run made by `toolkit quantize --model STUDENT_RUN`")
        for key in ("timesteps", "alphas_cumprod", "keypoint_maps", "resolution", "steps"):
            if key not in manifest:
                raise ArtifactError(f"{run_dir}: toolkit.json lacks {key!r} (made by an older `toolkit quantize`? "
                                    "quantize the student again)")
        timesteps = [int(t) for t in manifest["timesteps"]]
        alphas = [float(a) for a in manifest["alphas_cumprod"]]
        if len(alphas) != len(timesteps):
            raise ArtifactError(f"{run_dir}: {len(timesteps)} timesteps but {len(alphas)} alpha_bar values")
        have = sorted(int(k) for k in manifest["steps"])
        missing = [k for k in range(len(timesteps)) if k not in have]
        if missing:
            # Sampling runs every step; mixing an int8 step with a float one would measure neither model.
            raise ArtifactError(f"{run_dir}: quantized step network(s) {have} only, the sampler needs all "
                                f"{len(timesteps)}; run `toolkit quantize --step all` (the default)")
        self.resolution = int(manifest["resolution"])
        graphs = []
        for k in range(len(timesteps)):
            rel = manifest["steps"][str(k)].get("files", {}).get("qdq_onnx")
            path = run_dir / rel if rel else None
            if path is None or not path.exists():
                raise FileNotFoundError(f"{run_dir}: step {k}'s ONNX-QDQ file {rel} is missing")
            graph = load_qdq(path)
            S = self.resolution
            t_in, t_out = graph.tensors[graph.input], graph.tensors[graph.output]
            if tuple(t_in.shape) != (1, S, S, IN_CHANNELS) or tuple(t_out.shape) != (1, S, S, 3):
                raise ArtifactError(f"{path}: int8 graph maps {t_in.shape} -> {t_out.shape} (NHWC), a {S}x{S} "
                                    f"student step needs (1, {S}, {S}, {IN_CHANNELS}) -> (1, {S}, {S}, 3)")
            graphs.append(graph)
        self.nets = Int8StepNetworks(graphs)
        self.alphas = alphas
        self.timesteps = timesteps
        self.sigma_px = float(manifest["keypoint_maps"]["sigma_px"])
        self.run_dir = run_dir
        self.manifest = manifest
        self.steps = len(timesteps)
        self.defaults = {"steps": self.steps}

    @torch.no_grad()
    def inpaint(self, images, masks, keypoints, visible, *, seed=0, noise=None, return_info=False,
                progress=False, max_batch: int = 256, **sampling):
        """As `StudentInpainter.inpaint`: (B,3,S,S) images in [-1,1], (B,1,S,S) masks (1 = known), (B,7,2)
        keypoints in [0,1], (B,7) visible; returns (B,3,S,S) with the known pixels of the input, exactly."""
        from tqdm import tqdm

        from toolkit.distill.inpainter import (
            heatmaps,
            noise_for_seeds,
            sample_student,
            seeds_for,
        )


        unknown = set(sampling) - {"steps", "cfg_scale", "rg_weight", "scheduler", "repaint", "eta"}
        if unknown:
            raise ValueError(f"unknown sampling option(s): {', '.join(sorted(unknown))}")
        steps = sampling.get("steps")
        if steps not in (None, self.steps):
            raise ValueError(f"this quantized student runs {self.steps} step(s); it cannot sample with {steps}")
        S = self.resolution
        for name, t in (("images", images), ("masks", masks), ("keypoints", keypoints), ("visible", visible)):
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")  # noqa: TRY004 - as the float student
        B = images.shape[0]
        expected = {"images": (B, 3, S, S), "masks": (B, 1, S, S), "keypoints": (B, 7, 2), "visible": (B, 7)}
        for name, t in zip(expected, (images, masks, keypoints, visible)):
            if tuple(t.shape) != expected[name]:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, this student needs {expected[name]}")
        images, masks = images.float().cpu(), masks.float().cpu()
        if noise is None:
            noise = noise_for_seeds(seeds_for(seed, B), S)
        outs = []
        for i in tqdm(range(0, B, max_batch), desc="int8 student", unit="batch", disable=not progress):
            sl = slice(i, i + max_batch)
            maps = heatmaps(keypoints[sl].cpu(), visible[sl].cpu(), S, self.sigma_px)
            x0, _ = sample_student(self.nets, self.alphas, images[sl], masks[sl], maps, noise[sl])
            outs.append(images[sl] * masks[sl] + x0 * (1 - masks[sl]))
        out = torch.cat(outs)
        return (out, {}) if return_info else out


def load_int8_inpainter(run_dir) -> Int8StudentInpainter:
    """The inpainter of a quantized student run (`toolkit quantize --model STUDENT_RUN --out run_dir`)."""
    run_dir = Path(run_dir)
    return Int8StudentInpainter(run_dir, read_manifest(run_dir, expect_stage=STAGE))
