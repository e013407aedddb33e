"""Python int8 reference executor of the integer graph (the oracle for the generated C code).

Every op is computed with exactly the integer arithmetic the C kernels use (see `toolkit.deploy.ir`):
int32 accumulation, fixed-point requantization (Q31 multiplier + shift as TFLite, one rounding half away
from zero), int8 clamps.
Tensors are NHWC int8 with batch 1. The public API:

- `run(graph, q_input) -> q_output` (int8 NHWC in, int8 NHWC out), `run(..., keep=True)` returns all tensors;
- `quantize_input(graph, x_nchw_float)` / `dequantize_output(graph, q_nhwc)` convert at the model boundary;
- `compare_with_onnxruntime(onnx_path, float_inputs) -> max |difference| in output LSB`.
"""

from __future__ import annotations

import numpy as np

from toolkit.deploy.ir import INT8_MAX, INT8_MIN, IntGraph, load_qdq

_I32_MIN, _I32_MAX = -(2**31), 2**31 - 1


# ---------------------------------------------------------------------------------------------------------
# fixed-point primitives (int64 numpy arrays holding int32 values)

def multiply_by_quantized_multiplier(x, multiplier, shift):
    """round(x * multiplier * 2^(shift - 31)), rounding half away from zero, in one step, saturated to int32.

    x and multiplier are int32 (multiplier a Q31 value from `ir.quantize_multiplier`), shift in [-31, 30].
    One rounding of the exact 64-bit product: TFLite's default (SaturatingRoundingDoublingHighMul followed by
    RoundingDivideByPOT) rounds twice, which is off by one for ~1/2^(1-shift) of values and drifts 2 LSB from
    onnxruntime over a few layers (see docs/architecture.md, "int8 semantics")."""
    x = np.asarray(x, np.int64)
    n = 31 - np.asarray(shift, np.int64)  # 1..62
    p = x * np.asarray(multiplier, np.int64)  # |p| < 2^62
    half = np.int64(1) << (n - 1)
    r = np.where(p >= 0, (p + half) >> n, -((-p + half) >> n))
    return np.clip(r, _I32_MIN, _I32_MAX)


def _check_int32(acc, where):
    if acc.size and (acc.min() < _I32_MIN or acc.max() > _I32_MAX):
        raise OverflowError(f"{where}: int32 accumulator overflow (C would be undefined)")


# ---------------------------------------------------------------------------------------------------------
# ops

def _conv(op, x, graph):
    t_in, t_out = graph.tensors[op.inputs[0]], graph.tensors[op.output]
    p = op.params
    kh, kw = p["kernel"]
    sh, sw = p["stride"]
    pt, pl, pb, pr = p["pad"]
    _, oh, ow, cout = t_out.shape
    xs = x[0].astype(np.int64) - t_in.zero_point  # padding contributes (zp - zp) = 0
    xs = np.pad(xs, ((pt, pb), (pl, pr), (0, 0)))
    w = p["weights"].astype(np.int64)
    acc = np.zeros((oh, ow, cout), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            patch = xs[ky: ky + sh * (oh - 1) + 1: sh, kx: kx + sw * (ow - 1) + 1: sw, :]
            if op.kind == "conv":
                acc += patch @ w[:, ky, kx, :].T
            else:
                acc += patch * w[ky, kx, :]
    acc += p["bias"].astype(np.int64)
    _check_int32(acc, op.name)
    y = multiply_by_quantized_multiplier(acc, p["multiplier"], p["shift"]) + t_out.zero_point
    return np.clip(y, p["act_min"], p["act_max"]).astype(np.int8)[None]


def _add(op, a, b, graph):
    ta, tb, ty = (graph.tensors[n] for n in (*op.inputs, op.output))
    p = op.params
    ls = p["left_shift"]
    sa = multiply_by_quantized_multiplier((a.astype(np.int64) - ta.zero_point) << ls, *p["in1"])
    sb = multiply_by_quantized_multiplier((b.astype(np.int64) - tb.zero_point) << ls, *p["in2"])
    y = multiply_by_quantized_multiplier(sa + sb, *p["out"]) + ty.zero_point
    return np.clip(y, p["act_min"], p["act_max"]).astype(np.int8)


def requantize(q, rescale, act_min, act_max):
    """Move int8 values between quantizations (identity: just the clamp)."""
    q = q.astype(np.int64)
    if rescale["identity"]:
        y = q
    else:
        y = multiply_by_quantized_multiplier(q - rescale["in_zp"], rescale["multiplier"], rescale["shift"]) + rescale["out_zp"]
    return np.clip(y, act_min, act_max).astype(np.int8)


def _run_op(op, env, graph):
    ins = [env[n] for n in op.inputs]
    p = op.params
    if op.kind in ("conv", "depthwise"):
        return _conv(op, ins[0], graph)
    if op.kind == "add":
        return _add(op, ins[0], ins[1], graph)
    if op.kind == "concat":
        factors = p.get("factors") or [(1, 1)] * len(ins)
        parts = [np.repeat(np.repeat(requantize(x, r, p["act_min"], p["act_max"]), fh, axis=1), fw, axis=2)
                 for x, r, (fh, fw) in zip(ins, p["rescale"], factors)]
        return np.concatenate(parts, axis=3)
    if op.kind == "requantize":
        return requantize(ins[0], p["rescale"], p["act_min"], p["act_max"])
    if op.kind == "upsample":
        fh, fw = p["factor"]
        return np.repeat(np.repeat(ins[0], fh, axis=1), fw, axis=2)
    if op.kind == "pad":
        t, l, b, r = p["pads"]
        return np.pad(ins[0], ((0, 0), (t, b), (l, r), (0, 0)), constant_values=p["value"])
    raise ValueError(f"unknown op kind {op.kind}")


def run(graph: IntGraph, q_input: np.ndarray, keep: bool = False):
    """Run the integer graph on an int8 NHWC input; returns the int8 NHWC output (or all tensors if keep)."""
    t_in = graph.tensors[graph.input]
    q_input = np.asarray(q_input)
    if q_input.dtype != np.int8:
        raise ValueError(f"input must be int8, got {q_input.dtype}")
    if q_input.shape != t_in.shape:
        raise ValueError(f"input shape {q_input.shape} != model input {t_in.shape} (NHWC)")
    env = {graph.input: q_input}
    for op in graph.ops:
        y = _run_op(op, env, graph)
        expect = graph.tensors[op.output].shape
        if y.shape != expect:
            raise AssertionError(f"{op.name}: computed shape {y.shape}, planned {expect}")
        env[op.output] = y
    return env if keep else env[graph.output]


def quantize_input(graph: IntGraph, x: np.ndarray) -> np.ndarray:
    """Float NCHW (as the ONNX model takes it) -> int8 NHWC, with ONNX QuantizeLinear rounding (half to even)."""
    t = graph.tensors[graph.input]
    x = np.asarray(x, np.float32)
    if x.ndim == 3:
        x = x[None]
    expect = (t.shape[0], t.shape[3], t.shape[1], t.shape[2])
    if x.shape != expect:
        raise ValueError(f"input shape {x.shape} != model input {expect} (NCHW)")
    # float32 division as onnxruntime does: inputs often sit exactly on .5 ties (k/255 * 2 - 1 / (1/127.5))
    q = np.rint(x / np.float32(t.scale)).astype(np.int64) + t.zero_point
    return np.clip(q, INT8_MIN, INT8_MAX).astype(np.int8).transpose(0, 2, 3, 1).copy()


def dequantize_output(graph: IntGraph, q: np.ndarray) -> np.ndarray:
    """int8 NHWC output -> float NCHW."""
    t = graph.tensors[graph.output]
    return ((q.astype(np.float32) - t.zero_point) * np.float32(t.scale)).transpose(0, 3, 1, 2)


def run_float(graph: IntGraph, x: np.ndarray) -> np.ndarray:
    """Float NCHW in, float NCHW out, through the integer graph."""
    return dequantize_output(graph, run(graph, quantize_input(graph, x)))


def compare_with_onnxruntime(onnx_path, float_inputs, graph: IntGraph | None = None) -> int:
    """Max |int8 reference - onnxruntime| in output LSB over `float_inputs` (NCHW arrays or one batch).

    onnxruntime runs the QDQ model itself (its own int8 kernels and rounding), so this is an independent
    check of the lowering; docs/architecture.md allows 1 LSB."""
    import onnxruntime as ort

    graph = graph or load_qdq(onnx_path)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    t_out = graph.tensors[graph.output]
    worst = 0
    for x in float_inputs:
        x = np.asarray(x, np.float32)
        if x.ndim == 3:
            x = x[None]
        for xi in x:
            ort_y = sess.run(None, {in_name: xi[None]})[0]
            ort_q = np.rint(ort_y.transpose(0, 2, 3, 1) / np.float32(t_out.scale)) + t_out.zero_point
            ours = run(graph, quantize_input(graph, xi[None])).astype(np.int64)
            worst = max(worst, int(np.abs(ours - ort_q.astype(np.int64)).max()))
    return worst
