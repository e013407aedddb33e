"""NNCF int8 quantization of a plain conv net: post-training init, quantization-aware fine-tuning, QDQ ONNX.

Works on any single-input `torch.nn.Module` made of ops NNCF knows (Conv2d, ReLU/ReLU6, nearest Upsample,
cat, add): the diffusion student's step modules, later the pose model. Calibration inputs come from a
callable `sample_inputs(n, seed) -> (n, C, H, W) float tensor` so each model family builds its own real inputs.

int8 scheme (docs/architecture.md): symmetric per-channel int8 weights, asymmetric per-tensor int8 activations
(NNCF preset MIXED), overflow fix off (MCU kernels accumulate in int32 and have no 7-bit workaround).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

SampleInputs = Callable[[int, int], torch.Tensor]

CHECKPOINT_WEIGHTS = "nncf_state.pt"
CHECKPOINT_CONFIG = "nncf_config.json"


@dataclass
class QuantizeSettings:
    calib: int = 64  # post-training statistics inputs
    qat_steps: int = 300  # 0 = post-training quantization only
    batch_size: int = 8
    lr: float = 2e-5  # weights; quantizer ranges get 10x (they start from good PTQ statistics)
    eval_inputs: int = 16  # held-out inputs (other seed) for the PSNR figures
    seed: int = 0
    overflow_fix: bool = False  # True only for x86 VNNI-style targets; MCU targets keep it off
    threads: int | None = None  # torch intra-op threads while quantizing (None: torch's default)


def _use_eager_fake_quantize_ops() -> None:
    """Run NNCF's fake-quantize ops as plain eager torch code.

    By default NNCF JIT-compiles a C++ extension on first use (minutes on a 2-core machine, and it aborts
    after 60 s leaving a lock file behind); its pure-torch fallback is wrapped in torch.compile, which
    recompiles for every tensor shape. The eager reference is numerically the same and fast enough for
    MCU-sized nets. Set TOOLKIT_NNCF_EXTENSIONS=1 to keep NNCF's default.
    """
    if os.environ.get("TOOLKIT_NNCF_EXTENSIONS") == "1":
        return
    from types import SimpleNamespace

    from nncf.torch.quantization import extensions
    from nncf.torch.quantization.reference import ReferenceBackendType, ReferenceQuantize

    ref = ReferenceQuantize(ReferenceBackendType.TORCH)
    ns = extensions.QuantizedFunctionsCPU
    if getattr(ns, "_loaded_namespace", "missing") is None:
        ns._loaded_namespace = SimpleNamespace(Quantize_forward=ref.forward, Quantize_backward=ref.backward)


def _nncf():
    import nncf

    _use_eager_fake_quantize_ops()
    return nncf


# ---------------------------------------------------------------------------------------------- metrics


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float) -> float:
    """PSNR in dB of `test` against `reference` (inf when identical)."""
    mse = float(np.mean((np.asarray(reference, np.float64) - np.asarray(test, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


# ---------------------------------------------------------------------------------------------- quantization


def post_training_quantize(model: nn.Module, calib: torch.Tensor, settings: QuantizeSettings) -> nn.Module:
    """NNCF post-training initialization (MIXED preset); returns a new fake-quantized model, `model` untouched."""
    nncf = _nncf()
    model = copy.deepcopy(model).eval()
    items = [calib[i : i + 1] for i in range(calib.shape[0])]
    advanced = nncf.AdvancedQuantizationParameters(
        overflow_fix=nncf.OverflowFix.ENABLE if settings.overflow_fix else nncf.OverflowFix.DISABLE,
        # The int8 engine hands back an int8 output too: quantize the model output like every activation.
        quantize_outputs=True,
    )
    with torch.no_grad():
        qmodel = nncf.quantize(
            model,
            nncf.Dataset(items),
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(items),
            advanced_parameters=advanced,
        )
    return qmodel


def _quantizer_parameters(qmodel: nn.Module) -> list[nn.Parameter]:
    from nncf.torch.function_hook.wrapper import get_hook_storage

    return list(get_hook_storage(qmodel).parameters())


def quantization_aware_finetune(
    qmodel: nn.Module,
    float_model: nn.Module,
    sample_inputs: SampleInputs,
    settings: QuantizeSettings,
    progress: bool = True,
) -> list[float]:
    """Distill the float model into the fake-quantized one (MSE on outputs) for `settings.qat_steps` steps.

    Every step draws fresh inputs (seed advances), so the fine-tuning sees many more real inputs than
    the post-training statistics did. Returns the loss per step.
    """
    from tqdm.auto import tqdm

    if settings.qat_steps <= 0:
        return []
    float_model = float_model.eval()
    q_params = {id(p) for p in _quantizer_parameters(qmodel)}
    weights = [p for p in qmodel.parameters() if id(p) not in q_params and p.requires_grad]
    ranges = [p for p in qmodel.parameters() if id(p) in q_params and p.requires_grad]
    opt = torch.optim.Adam(
        [{"params": weights, "lr": settings.lr}, {"params": ranges, "lr": settings.lr * 10}]
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.qat_steps)
    qmodel.train()
    losses = []
    bar = tqdm(range(settings.qat_steps), desc="QAT", disable=not progress, leave=False)
    for step in bar:
        x = sample_inputs(settings.batch_size, settings.seed + 1000 + step)
        with torch.no_grad():
            target = float_model(x)
        loss = torch.nn.functional.mse_loss(qmodel(x), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.2e}")
    qmodel.eval()
    return losses


# ---------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(qmodel: nn.Module, directory) -> dict:
    """NNCF config (JSON) + state dict (tensors only, loadable with weights_only=True)."""
    from nncf.torch import get_config

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CHECKPOINT_CONFIG).write_text(json.dumps(get_config(qmodel), indent=1))
    torch.save(qmodel.state_dict(), directory / CHECKPOINT_WEIGHTS)
    return {"config": CHECKPOINT_CONFIG, "state_dict": CHECKPOINT_WEIGHTS}


def load_checkpoint(float_model: nn.Module, directory) -> nn.Module:
    """Rebuild the fake-quantized model saved by `save_checkpoint` on a fresh float model of the same class."""
    _nncf()
    from nncf.torch import load_from_config

    directory = Path(directory)
    for name in (CHECKPOINT_CONFIG, CHECKPOINT_WEIGHTS):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory}: no quantized checkpoint ({name} missing)")
    config = json.loads((directory / CHECKPOINT_CONFIG).read_text())
    qmodel = load_from_config(copy.deepcopy(float_model).eval(), config)
    qmodel.load_state_dict(torch.load(directory / CHECKPOINT_WEIGHTS, map_location="cpu", weights_only=True))
    return qmodel.eval()


def finetuned_float_model(qmodel: nn.Module, float_model: nn.Module) -> nn.Module:
    """The float model with the QAT-adjusted weights (quantizers dropped): what the .tflite path starts from."""
    own = float_model.state_dict()
    tuned = {k: v for k, v in qmodel.state_dict().items() if k in own}
    missing = set(own) - set(tuned)
    if missing:
        raise RuntimeError(f"quantized model lost float parameters: {sorted(missing)[:5]}")
    model = copy.deepcopy(float_model)
    model.load_state_dict(tuned)
    return model.eval()


# ---------------------------------------------------------------------------------------------- ONNX export


class _NativeFakeQuantize(nn.Module):
    """One NNCF quantizer as torch's native fake-quantize op (exports as QuantizeLinear + DequantizeLinear)."""

    def __init__(self, quantizer):
        super().__init__()
        q_min, q_max, scale, zero_point = quantizer.get_parameters_for_torch_fq()
        self.q_min, self.q_max = int(q_min), int(q_max)
        self.per_channel = bool(quantizer.per_channel)
        self.axis = int(np.argmax(quantizer.scale_shape)) if self.per_channel else 0
        # Per-tensor parameters as 0-d tensors: ONNX reads a 1-D scale as per-axis, which stops onnxruntime
        # from fusing the QDQ pattern into its int8 kernels.
        shape = (-1,) if self.per_channel else ()
        self.register_buffer("scale", scale.detach().float().reshape(shape).clone())
        self.register_buffer("zero_point", zero_point.detach().to(torch.int32).reshape(shape).clone())

    def forward(self, x):
        if self.per_channel:
            return torch.fake_quantize_per_channel_affine(
                x, self.scale, self.zero_point, self.axis, self.q_min, self.q_max
            )
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, self.q_min, self.q_max)


def _strip_to_native(qmodel: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of the NNCF model whose quantizers are torch fake-quantize ops, ready for QDQ ONNX export.

    This is what `nncf.strip(..., strip_format=StripFormat.NATIVE)` does, done here for two reasons:
    NNCF 3.4's strip imports torchao (whose presence makes every diffusers import print load errors), and
    it walks quantizers with duplicates removed, so the quantizer a `cat` shares between its inputs (NNCF's
    unified scales, which make the int8 concat a plain copy) stays unconverted and would export as an
    OpenVINO-only FakeQuantize node. Every hook is converted here, shared ones once.
    """
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer

    from nncf.torch.function_hook.hook_storage import decode_hook_name

    _nncf()
    stripped = copy.deepcopy(qmodel).eval()
    storage = get_hook_storage(stripped)
    graph = None  # built on first need: maps a weight quantizer to the parameter it quantizes
    converted = {}
    for name, module in list(storage.named_hooks(remove_duplicate=False)):
        if not isinstance(module, BaseQuantizer):
            continue
        if module.num_bits != 8:
            raise RuntimeError(f"quantizer {name} has {module.num_bits} bits; the int8 engine needs 8")
        hook_type, op_name, port = decode_hook_name(name)
        if hook_type == "pre_hooks" and (module.narrow_range or module.is_half_range):
            # Narrow-range weights (-127..127) export as int8 QuantizeLinear (-128..127): store them already
            # clamped and rounded to their grid (as NNCF's strip does), so -128 never occurs.
            if graph is None:
                from nncf.torch.function_hook.nncf_graph.nncf_graph_builder import build_nncf_graph

                graph = build_nncf_graph(stripped, example)
            weight = _weight_of(stripped, graph, op_name, port, name)
            with torch.no_grad():
                low, high = module.get_input_low_input_high()
                weight.data = module.quantize(torch.minimum(torch.maximum(weight.data, low), high),
                                              execute_traced_op_as_identity=False)
        if id(module) not in converted:
            converted[id(module)] = _NativeFakeQuantize(module)
        storage.set_submodule(name, converted[id(module)])
    return stripped


def _weight_of(model: nn.Module, graph, op_name: str, port: int, hook: str) -> torch.Tensor:
    """The parameter that the pre-hook `hook` (on input `port` of op `op_name`) quantizes."""
    from nncf.torch.model_graph_manager import get_const_node, get_module_by_name, split_const_name

    const_node = get_const_node(graph.get_node_by_name(op_name), port, graph)
    if const_node is None:
        raise RuntimeError(f"weight quantizer {hook} does not sit on a constant; cannot export it")
    module_name, attr = split_const_name(const_node.layer_attributes.name)
    return getattr(get_module_by_name(module_name, model), attr)


@contextlib.contextmanager
def _quiet_legacy_export():
    """The TorchScript exporter (dynamo=False) is deliberate: it maps fake-quantize ops to QDQ pairs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch.onnx")
        yield


def export_qdq_onnx(qmodel: nn.Module, example: torch.Tensor, path) -> Path:
    """ONNX (opset 17) with QuantizeLinear/DequantizeLinear carrying the learned scales and zero points."""
    import onnx

    path = Path(path)
    stripped = _strip_to_native(qmodel, example)
    with torch.no_grad(), _quiet_legacy_export():
        torch.onnx.export(
            stripped, (example,), str(path), opset_version=17, dynamo=False,
            input_names=["input"], output_names=["output"],
        )  # fmt: skip
    model = onnx.load(str(path))
    foreign = sorted({n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if foreign:
        raise RuntimeError(f"QDQ export left non-standard ops {foreign} in {path}")
    onnx.checker.check_model(model)
    return path


def export_float_onnx(model: nn.Module, example: torch.Tensor, path) -> Path:
    """Plain float ONNX (opset 17): the input of onnx2tf and of the pre-training fit check."""
    path = Path(path)
    with torch.no_grad(), _quiet_legacy_export():
        torch.onnx.export(
            model.eval(), (example,), str(path), opset_version=17, dynamo=False,
            input_names=["input"], output_names=["output"],
        )  # fmt: skip
    return path


def onnx_session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(path_or_session, inputs: np.ndarray) -> np.ndarray:
    """Run a single-input ONNX model one sample at a time (the exported graphs have batch 1)."""
    sess = onnx_session(path_or_session) if isinstance(path_or_session, (str, Path)) else path_or_session
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: inputs[i : i + 1].astype(np.float32)})[0] for i in range(inputs.shape[0])]
    return np.concatenate(outs)


# ---------------------------------------------------------------------------------------------- pipeline


@dataclass
class QuantizedModel:
    """What `quantize_model` produced: the fake-quantized model and the figures measured on held-out inputs."""

    qmodel: nn.Module
    ptq_model: nn.Module
    tuned_float: nn.Module
    losses: list
    metrics: dict
    settings: QuantizeSettings


def quantize_model(
    model: nn.Module,
    sample_inputs: SampleInputs,
    settings: QuantizeSettings,
    data_range: float | None = None,
    progress: bool = True,
    held_out_inputs: SampleInputs | None = None,
) -> QuantizedModel:
    """PTQ init then QAT; PSNR of both (fake-quant in torch) against the float model on held-out inputs.

    `data_range` is the output's value range for PSNR (2.0 for images in [-1, 1]); None takes the float
    outputs' own range on the held-out inputs. `held_out_inputs` (e.g. a validation split) defaults to
    `sample_inputs` with another seed.
    """
    model = copy.deepcopy(model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    calib = sample_inputs(settings.calib, settings.seed)
    held_out = (held_out_inputs or sample_inputs)(settings.eval_inputs, settings.seed + 999_999)
    with torch.no_grad():
        reference = model(held_out).numpy()
    rng = float(data_range) if data_range else float(reference.max() - reference.min()) or 1.0

    ptq_model = post_training_quantize(model, calib, settings)
    with torch.no_grad():
        ptq_out = ptq_model.eval()(held_out).numpy()
    qmodel = copy.deepcopy(ptq_model)
    for p in qmodel.parameters():
        if p.is_floating_point():
            p.requires_grad_(True)
    losses = quantization_aware_finetune(qmodel, model, sample_inputs, settings, progress=progress)
    with torch.no_grad():
        qat_out = qmodel(held_out).numpy()
    metrics = {
        "psnr_data_range": rng,
        "psnr_ptq_fakequant_db": psnr(reference, ptq_out, rng),
        "psnr_qat_fakequant_db": psnr(reference, qat_out, rng),
        # mean of the first / last 5 steps: single batches are noisy
        "qat_loss_first": float(np.mean(losses[:5])) if losses else None,
        "qat_loss_last": float(np.mean(losses[-5:])) if losses else None,
    }
    return QuantizedModel(qmodel, ptq_model, finetuned_float_model(qmodel, model), losses, metrics, settings)


def settings_dict(settings: QuantizeSettings) -> dict:
    return {
        **asdict(settings),
        "preset": "MIXED",
        "weights": "int8 symmetric per-channel (narrow range -127..127)",
        "activations": "int8 asymmetric per-tensor",
        "concat": "inputs share one scale (NNCF unified scales)",
    }


# ---------------------------------------------------------------------------------------------- one model → files


def _int8_reference_lsb(qdq_path, inputs: np.ndarray):
    """(Max |int8 reference − onnxruntime| in output LSB, None) or (None, why the reference refused the graph)."""
    from toolkit.deploy import int8ref

    try:
        return int(int8ref.compare_with_onnxruntime(qdq_path, inputs)), None
    except ValueError as exc:  # the integer lowering refuses the graph: report it, the ONNX stays valid
        return None, f"int8 reference could not run this graph: {exc}"


def quantize_and_export(
    model: nn.Module,
    sample_inputs: SampleInputs,
    out_dir,
    board,
    settings: QuantizeSettings,
    held_out_inputs: SampleInputs | None = None,
    data_range: float | None = None,
    tflite: bool = True,
    progress: bool = True,
) -> dict:
    """Fit pre-check, PTQ + QAT, checkpoint, QDQ ONNX, fit check, int8 reference check, .tflite + TFLM.

    Writes into `out_dir` (created) and returns {"files": {...relative names}, "metrics": {...}, "fit": {...}}.
    Raises `fit.ModelTooLargeError` before any training when the float graph cannot fit `board`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _torch_threads(settings.threads):
        return _quantize_and_export(model, sample_inputs, out_dir, board, settings, held_out_inputs, data_range,
                                    tflite, progress)


class _Stopwatch:
    """Wall seconds per phase (recorded in the metrics: where the time of a run went)."""

    def __init__(self):
        import time

        self._now = time.perf_counter
        self._t = self._now()
        self.seconds = {}

    def lap(self, name: str) -> None:
        now = self._now()
        self.seconds[name] = round(now - self._t, 2)
        self._t = now


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """MCU-sized nets gain little from intra-op threads, and on a busy machine OpenMP's spin-waiting makes
    2 threads ~10x slower than 1: let the caller choose, and restore the previous setting after."""
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _quantize_and_export(model, sample_inputs, out_dir, board, settings, held_out_inputs, data_range, tflite,
                         progress) -> dict:
    from toolkit.deploy import fit

    watch = _Stopwatch()
    example = sample_inputs(1, settings.seed)
    files = {
        "float_onnx": "model_float.onnx",
        "qdq_onnx": "model_int8_qdq.onnx",
        "checkpoint": "nncf",
    }
    # 1. Refuse early: a model that cannot fit is not worth fine-tuning.
    export_float_onnx(model, example, out_dir / files["float_onnx"])
    fit.fit_report(out_dir / files["float_onnx"], board, what=f"float model {out_dir.name}")
    watch.lap("fit_precheck")

    # 2. PTQ init + QAT; figures in torch (fake quant).
    result = quantize_model(model, sample_inputs, settings, data_range=data_range, progress=progress,
                            held_out_inputs=held_out_inputs)
    watch.lap("ptq_qat")
    save_checkpoint(result.qmodel, out_dir / files["checkpoint"])
    export_qdq_onnx(result.qmodel, example, out_dir / files["qdq_onnx"])
    # The float ONNX next to the int8 one carries the QAT-tuned weights (the .tflite is made from it).
    export_float_onnx(result.tuned_float, example, out_dir / files["float_onnx"])
    watch.lap("export_onnx")

    # 3. The same figures from the exported int8 files, on held-out real inputs.
    held = (held_out_inputs or sample_inputs)(settings.eval_inputs, settings.seed + 999_999).numpy()
    with torch.no_grad():
        reference = model(torch.from_numpy(held)).numpy()
    rng = result.metrics["psnr_data_range"]
    int8_out = run_onnx(out_dir / files["qdq_onnx"], held)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="toolkit-ptq-") as tmp:
        ptq_path = export_qdq_onnx(result.ptq_model, example, Path(tmp) / "ptq.onnx")
        ptq_out = run_onnx(ptq_path, held)
    metrics = {
        **result.metrics,
        "psnr_int8_onnx_db": psnr(reference, int8_out, rng),
        "psnr_ptq_int8_onnx_db": psnr(reference, ptq_out, rng),
        "eval_inputs": int(held.shape[0]),
        "qdq_onnx_bytes": (out_dir / files["qdq_onnx"]).stat().st_size,
    }
    lsb, why = _int8_reference_lsb(out_dir / files["qdq_onnx"], held)
    metrics["int8_reference_vs_onnxruntime_max_lsb"] = lsb
    if why:
        metrics["int8_reference_note"] = why
    watch.lap("evaluate")

    # 4. The fit check on what will really be flashed.
    fit_info = fit.fit_report(out_dir / files["qdq_onnx"], board, what=f"int8 model {out_dir.name}", use_plan=True)

    # 5. .tflite (recalibrated by the TF converter) checked in the TFLM interpreter.
    if tflite:
        from toolkit.deploy import tflite_export

        files["tflite"] = "model_int8.tflite"
        representative = sample_inputs(settings.calib, settings.seed).numpy()
        tflite_export.float_onnx_to_int8_tflite(out_dir / files["float_onnx"], representative,
                                                out_dir / files["tflite"])
        tflm = tflite_export.TflmModel(out_dir / files["tflite"])
        tflite_out = tflm.run(held)
        metrics.update(
            psnr_tflite_tflm_db=psnr(reference, tflite_out, rng),
            tflite_bytes=(out_dir / files["tflite"]).stat().st_size,
            tflm_arena_bytes=tflm.arena_used_bytes,
        )
        watch.lap("tflite")
    metrics["seconds"] = watch.seconds
    return {"files": files, "metrics": metrics, "fit": fit_info}
