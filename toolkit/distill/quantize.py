"""int8 quantization of a distilled student for a board (`toolkit quantize` on a student run).

(A pose run goes to `toolkit.pose.quantize`, which uses the same pipeline with its own inputs.)

For each step network of the student (`Student.step_module(k)`): NNCF post-training init (MIXED preset,
overflow fix off), quantization-aware fine-tuning against the float step network on real inputs, then
ONNX-QDQ (canonical), NNCF checkpoint, fit check against the board profile and a recalibrated int8 .tflite
checked in TFLite Micro. The output is a "quantized" artifact directory:

    DIR/toolkit.json                 stage "quantized": source run + manifest, target, per-step files + metrics
    DIR/step<k>/model_int8_qdq.onnx  QuantizeLinear/DequantizeLinear with the QAT scales (input of `toolkit export`)
    DIR/step<k>/model_float.onnx     the QAT-tuned float weights (what the .tflite was converted from)
    DIR/step<k>/model_int8.tflite    full int8, activation ranges recalibrated by the TFLite converter
    DIR/step<k>/nncf/                NNCF config + state dict (`toolkit.deploy.quantize.load_checkpoint`)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

STAGE = "quantized"
SOURCE_STAGES = ("student",)


# ---------------------------------------------------------------------------------------------- student inputs


class StudentInputs:
    """Real inputs of a student's step networks, built the way the student sees them at inference.

    A face crop of the student's training data (its mask and keypoint maps), fresh Gaussian noise z, and
    the float student's own DDIM trajectory from z up to step k: step k's input is
    [x_{t_k}, image*mask, mask, keypoint maps] exactly as `toolkit.distill.inpainter.sample_student` feeds it.
    """

    CACHE_ITEMS = 4096  # decoded crops kept in memory (a 64x64 item is ~200 KB with its keypoint maps)

    def __init__(self, run_dir, manifest: dict, data=None):
        from toolkit.data import FDFDataset
        from toolkit.distill.student import Student

        self.student = Student.from_pretrained(run_dir).eval()
        self.alphas = [float(a) for a in self.student.alphas_cumprod]
        spec = self.student.keypoint_maps
        data = Path(data) if data else (Path(manifest["data"]) if manifest.get("data") else None)
        if data is None or not data.exists():
            raise FileNotFoundError(
                f"{run_dir}: its training data {data} is not there; pass --data DIR (an FDF-format dataset) "
                "so calibration and fine-tuning see real face crops"
            )
        S = self.student.resolution
        kw = dict(size=S, keypoint_maps=spec.get("mode", "heatmap"), sigma=spec.get("sigma"))
        self.train = FDFDataset(data, "train", **kw)
        try:
            self.val = FDFDataset(data, "val", **kw)
        except FileNotFoundError:
            self.val = None
        self.data = data
        self._cache = {}

    def _item(self, dataset, index: int, flipped: bool) -> dict:
        # Fine-tuning draws the same few hundred crops again and again: decode each PNG once.
        key = (dataset.split, index, flipped)
        if key not in self._cache:
            if len(self._cache) >= self.CACHE_ITEMS:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = dataset.get(index, flipped=flipped)
        return self._cache[key]

    def _batch(self, dataset, n: int, seed: int):
        import torch

        g = torch.Generator().manual_seed(int(seed))
        idx = torch.randint(0, len(dataset), (n,), generator=g).tolist()
        flips = (torch.rand(n, generator=g) < 0.5).tolist()
        items = [self._item(dataset, i, f) for i, f in zip(idx, flips)]
        batch = {k: torch.stack([it[k] for it in items]) for k in ("image", "mask", "keypoint_maps")}
        noise = torch.randn(n, 3, self.student.resolution, self.student.resolution, generator=g)
        return batch, noise

    def for_step(self, step: int, held_out: bool = False):
        """`sample_inputs(n, seed) -> (n, 14, S, S)` for step `step` (val split when held_out and present)."""
        import torch

        from toolkit.distill.inpainter import sample_student, student_input

        dataset = self.val if held_out and self.val is not None else self.train

        def sample_inputs(n: int, seed: int):
            batch, noise = self._batch(dataset, n, seed)
            with torch.no_grad():
                _, xs = sample_student(self.student, self.alphas, batch["image"], batch["mask"],
                                       batch["keypoint_maps"], noise)
                return student_input(xs[step], batch["image"], batch["mask"], batch["keypoint_maps"])

        return sample_inputs


# ---------------------------------------------------------------------------------------------- command


def _parse_steps(value: str, num_steps: int) -> list[int]:
    if value == "all":
        return list(range(num_steps))
    try:
        k = int(value)
    except ValueError:
        raise ValueError(f"--step must be an integer or 'all', got {value!r}") from None
    if not 0 <= k < num_steps:
        raise ValueError(f"--step {k} out of range: this student has {num_steps} step(s) (0..{num_steps - 1})")
    return [k]


def _precheck_total_flash(inputs: StudentInputs, step_list: list, board) -> None:
    """Before any training: all step networks share the flash (same shapes, so N x one network's weights)."""
    import tempfile

    import torch

    from toolkit.deploy.fit import check_total_flash, estimate_onnx_memory
    from toolkit.deploy.quantize import export_float_onnx

    S = inputs.student.resolution
    with tempfile.TemporaryDirectory(prefix="toolkit-fit-") as tmp:
        net = inputs.student.step_module(step_list[0])
        path = export_float_onnx(net, torch.zeros(1, 14, S, S), Path(tmp) / "step.onnx")
        one = estimate_onnx_memory(path).weight_bytes
    check_total_flash(one * len(step_list), board, f"{len(step_list)} step network(s)")


def quantize_student(model_run, target: str, out, settings, steps="all", data=None, tflite=True,
                     progress=True) -> dict:
    """The work behind the CLI; returns the written manifest."""
    from toolkit.artifacts import read_manifest, write_manifest
    from toolkit.boards import load_board
    from toolkit.deploy.fit import check_total_flash
    from toolkit.deploy.quantize import quantize_and_export, settings_dict

    model_run, out = Path(model_run), Path(out)
    board = load_board(target)  # unknown names fail with the list of known boards
    source = read_manifest(model_run, expect_stage=SOURCE_STAGES)
    if out.resolve() == model_run.resolve():
        raise ValueError("--out must differ from --model (the input run is never overwritten)")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty; pick a new --out directory")
    inputs = StudentInputs(model_run, source, data)
    step_list = _parse_steps(str(steps), inputs.student.num_steps)

    _precheck_total_flash(inputs, step_list, board)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    per_step = {}
    t0 = time.time()
    try:
        for k in step_list:
            print(f"step {k} (t={inputs.student.timesteps[k]}): quantizing for {board.name}", file=sys.stderr)
            result = quantize_and_export(
                inputs.student.step_module(k), inputs.for_step(k), out / f"step{k}", board, settings,
                held_out_inputs=inputs.for_step(k, held_out=True), data_range=2.0, tflite=tflite,
                progress=progress,
            )
            result["files"] = {name: f"step{k}/{rel}" for name, rel in result["files"].items()}
            result["timestep"] = inputs.student.timesteps[k]
            per_step[str(k)] = result
        total_fit = check_total_flash(sum(r["fit"]["weight_bytes"] for r in per_step.values()), board,
                                      f"{len(per_step)} step network(s)")
    except BaseException:
        # No half-written artifact: a directory without toolkit.json would only confuse the next stage.
        if created:
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    from dataclasses import asdict

    from toolkit.diffusion.prior import copy_prior

    copy_prior(model_run, out)  # anonymizing with the int8 student starts from the same face prior
    return write_manifest(
        out,
        STAGE,
        source={"path": str(model_run.resolve()), "stage": source.get("stage"), "manifest": source},
        model_kind="student",
        target=board.name,
        board=asdict(board),
        resolution=inputs.student.resolution,
        input={"shape": [1, 14, inputs.student.resolution, inputs.student.resolution], "layout": "NCHW",
               "content": "x_t(3) + image*mask(3) + mask(1) + keypoint maps(7)"},
        output={"shape": [1, 3, inputs.student.resolution, inputs.student.resolution],
                "content": "predicted clean image x0 in [-1, 1]"},
        timesteps=inputs.student.timesteps,
        alphas_cumprod=inputs.alphas,
        keypoint_maps=inputs.student.keypoint_maps,
        steps=per_step,
        fit=total_fit,
        quantization=settings_dict(settings),
        calibration={"data": str(inputs.data.resolve()), "train_faces": len(inputs.train),
                     "held_out": "val split" if inputs.val is not None else "train split, other seeds",
                     "inputs": "real crops + noise, float student's own trajectory to each step"},
        tflite_note=("recalibrated: onnx2tf drops QDQ, so the .tflite's activation ranges come from the TFLite "
                     "converter's representative dataset (the calibration inputs), not from QAT; its weights "
                     "are the QAT-tuned float weights. The ONNX-QDQ file is the canonical int8 model.")
        if tflite else "not produced (--no-tflite)",
        seconds=round(time.time() - t0, 1),
    )
