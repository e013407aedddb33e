"""The quantized student as an inpainter: what the microcontroller computes, on the host.

`load_int8_inpainter(quantized_run)` returns the float student's `StudentInpainter` driving int8 step networks
instead of the float ones (the inpainter contract of toolkit/diffusion/__init__.py), so `toolkit anonymize --model Q_RUN` and `toolkit eval --methods student-int8`
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
    """The student's step networks as int8 integer graphs, a drop-in for `Student` in the student's sampler:
    `nets(x, k) -> x0`, plus the sampling constants a `Student` carries (timesteps, alpha_bar, sigma_px).

    x is a float (B,14,S,S) tensor; each image is quantized at the graph's input scale, run through the
    integer graph (batch 1, as on the device) and the int8 output dequantized back to float."""

    def __init__(self, graphs, timesteps, alphas_cumprod, keypoint_maps: dict, resolution: int):
        self.graphs = list(graphs)
        self.timesteps = list(timesteps)
        self.alphas_cumprod = list(alphas_cumprod)
        self.keypoint_maps = dict(keypoint_maps)
        self.resolution = int(resolution)

    @property
    def num_steps(self) -> int:
        return len(self.graphs)

    def eval(self):
        return self

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


def load_int8_networks(run_dir, manifest: dict) -> Int8StepNetworks:
    """The step networks of a quantized student run, checked against what its sampler needs."""
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
    S = int(manifest["resolution"])
    graphs = []
    for k in range(len(timesteps)):
        rel = manifest["steps"][str(k)].get("files", {}).get("qdq_onnx")
        path = run_dir / rel if rel else None
        if path is None or not path.exists():
            raise FileNotFoundError(f"{run_dir}: step {k}'s ONNX-QDQ file {rel} is missing")
        graph = load_qdq(path)
        t_in, t_out = graph.tensors[graph.input], graph.tensors[graph.output]
        if tuple(t_in.shape) != (1, S, S, IN_CHANNELS) or tuple(t_out.shape) != (1, S, S, 3):
            raise ArtifactError(f"{path}: int8 graph maps {t_in.shape} -> {t_out.shape} (NHWC), a {S}x{S} "
                                f"student step needs (1, {S}, {S}, {IN_CHANNELS}) -> (1, {S}, {S}, 3)")
        graphs.append(graph)
    return Int8StepNetworks(graphs, timesteps, alphas, manifest["keypoint_maps"], S)


def load_int8_inpainter(run_dir, device=None):
    """The inpainter of a quantized student run (`toolkit quantize --model STUDENT_RUN --out run_dir`;
    `toolkit.artifacts.LOADERS["quantized"]`). Integer arithmetic on the CPU (`device` is not used)."""
    from toolkit.diffusion.prior import load_prior
    from toolkit.distill.inpainter import StudentInpainter

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir, expect_stage=STAGE)
    inpainter = StudentInpainter(load_int8_networks(run_dir, manifest), run_dir, manifest)
    inpainter.face_prior = load_prior(run_dir)  # None for artifacts made before the prior existed
    return inpainter
