"""Lowering of each ONNX operator of a QDQ model to integer ops: one small function per operator, found by
op type in `LOWERINGS`. Each takes the lowering in progress (`ir._Lowering`: the tensors, the ops so far and
the QDQ pattern helpers) and the node, and appends its integer ops (`Op`) to it.
"""

from __future__ import annotations

import math

import numpy as np

from toolkit.deploy.intgraph import (ADD_LEFT_SHIFT, INT8_MAX, INT8_MIN, Op, UnsupportedModelError, quantize_multiplier,
                                     rescale)


def identity(lw, node):
    if node.input[0] in lw.act:
        lw.act[node.output[0]] = lw.act[node.input[0]]
    else:
        raise UnsupportedModelError(f"Identity '{node.name}' on a non-quantized tensor")


def stray_quantize(lw, node):
    raise UnsupportedModelError(f"QuantizeLinear '{node.name}' does not follow a supported op "
                                f"(its input '{node.input[0]}' comes from an unsupported pattern)")


def stray_dequantize(lw, node):
    raise UnsupportedModelError(f"DequantizeLinear '{node.name}' reads '{node.input[0]}', which is not a quantized activation")


def activation(lw, node):
    # Relu/Clip on a dequantized tensor with its own Q after it: a requantize with a clamp
    src = lw._int(node.input[0], f"{node.op_type} '{node.name}'")
    lo, hi = (0.0, math.inf) if node.op_type == "Relu" else (None, None)
    if node.op_type == "Clip":
        a = lw.g.attrs(node)
        ins = list(node.input) + ["", ""]
        lo = float(lw.g.const(ins[1])) if ins[1] else a.get("min", -math.inf)
        hi = float(lw.g.const(ins[2])) if ins[2] else a.get("max", math.inf)
    nxt = lw.g.consumers.get(node.output[0], [])
    if len(nxt) != 1 or nxt[0].op_type != "QuantizeLinear":
        raise UnsupportedModelError(f"{node.op_type} '{node.name}' is not followed by a QuantizeLinear")
    lw.done.add(id(nxt[0]))
    scale, zp = lw._qparams(nxt[0])
    t = lw._new_tensor(nxt[0].output[0], src.shape, scale, zp)
    amin, amax = lw._act_range((lo, hi), scale, zp)
    lw.ops.append(Op("requantize", node.name or node.output[0], [src.name], t.name,
                     {"rescale": rescale(src, t), "act_min": amin, "act_max": amax}))
    lw._map_dequantizers(nxt[0].output[0], t)


def conv(lw, node):
    g = lw.g
    where = f"Conv '{node.name}'"
    x = lw._int(node.input[0], where)
    a = g.attrs(node)
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise UnsupportedModelError(f"{where}: auto_pad is not supported; export with explicit pads")
    if any(d != 1 for d in a.get("dilations", [1, 1])):
        raise UnsupportedModelError(f"{where}: dilated convolution is not supported")
    w_q, w_scale, w_zp = _weights(lw, node.input[1], where)
    cout, cin_g, kh, kw = w_q.shape
    group = int(a.get("group", 1))
    cin = x.shape[3]
    if group == 1:
        kind = "conv"
        if cin_g != cin:
            raise UnsupportedModelError(f"{where}: weights expect {cin_g} input channels, tensor has {cin}")
    elif group == cin and cout == cin and cin_g == 1:
        kind = "depthwise"
    else:
        raise UnsupportedModelError(f"{where}: grouped convolution (group={group}) other than depthwise is not supported")
    if np.any(w_zp != 0):
        raise UnsupportedModelError(f"{where}: weights must be symmetric (zero point 0)")
    w_scale = np.broadcast_to(np.asarray(w_scale, np.float64).reshape(-1), (cout,)).copy()
    pads = list(a.get("pads", [0, 0, 0, 0]))
    sh, sw = a.get("strides", [1, 1])
    pt, pl, pb, pr = pads[0], pads[1], pads[2], pads[3]
    h, w = x.shape[1], x.shape[2]
    oh, ow = (h + pt + pb - kh) // sh + 1, (w + pl + pr - kw) // sw + 1
    if oh <= 0 or ow <= 0:
        raise UnsupportedModelError(f"{where}: empty output for input {h}x{w}")

    bias_scale = x.scale * w_scale
    if len(node.input) > 2 and node.input[2]:
        b = _bias_real(lw, node.input[2], where)
        bias = np.rint(b.astype(np.float64) / bias_scale)
        if np.any(np.abs(bias) > 2**31 - 1):
            raise UnsupportedModelError(f"{where}: bias does not fit int32 at scale s_in*s_w")
        bias = bias.astype(np.int32)
    else:
        bias = np.zeros(cout, np.int32)
    # the C kernels accumulate in int32: refuse a layer whose worst case (|x - zp| <= 255) could overflow
    worst = np.abs(w_q.astype(np.int64)).reshape(cout, -1).sum(axis=1) * 255 + np.abs(bias.astype(np.int64))
    if worst.max() > 2**31 - 1:
        raise UnsupportedModelError(f"{where}: the int32 accumulator could overflow (worst case {int(worst.max())})")
    y_t, _, (amin, amax) = lw._output_of(node, (1, oh, ow, cout))
    mult, shift = zip(*(quantize_multiplier(float(bs / y_t.scale)) for bs in bias_scale))
    if kind == "conv":
        weights = np.ascontiguousarray(w_q.transpose(0, 2, 3, 1))  # OHWI: input channels innermost
    else:
        weights = np.ascontiguousarray(w_q[:, 0].transpose(1, 2, 0))  # HWC: channels innermost
    lw.ops.append(Op(kind, node.name or node.output[0], [x.name], y_t.name, {
        "kernel": (int(kh), int(kw)), "stride": (int(sh), int(sw)), "pad": (int(pt), int(pl), int(pb), int(pr)),
        "weights": weights.astype(np.int8), "bias": bias,
        "multiplier": np.array(mult, np.int32), "shift": np.array(shift, np.int32),
        "act_min": amin, "act_max": amax,
    }))


def _weights(lw, name, where):
    """int8 weights, per-channel scale and zero point from DequantizeLinear(int8 const) or Q->DQ(float const)."""
    g = lw.g
    node = g.producer.get(name)
    if node is None or node.op_type != "DequantizeLinear" or not g.is_const(name):
        raise UnsupportedModelError(f"{where}: weights are not quantized (expected a DequantizeLinear of a constant)")
    q = g.const(node.input[0])
    if q.dtype not in (np.int8,):
        if q.dtype == np.uint8:
            raise UnsupportedModelError(f"{where}: uint8 weights are not supported; use symmetric int8")
        raise UnsupportedModelError(f"{where}: weights of type {q.dtype}; expected int8")
    scale = np.asarray(g.const(node.input[1]), np.float64)
    zp = np.asarray(g.const(node.input[2])) if len(node.input) > 2 and node.input[2] else np.zeros(())
    axis = g.attrs(node).get("axis", 1)
    if scale.size > 1 and axis not in (0, -4):
        raise UnsupportedModelError(f"{where}: per-channel weight scales must be along the output channel axis")
    if q.ndim != 4:
        raise UnsupportedModelError(f"{where}: expected 4-D conv weights, got shape {q.shape}")
    return q, scale, zp


def _bias_real(lw, name, where):
    if not lw.g.is_const(name):
        raise UnsupportedModelError(f"{where}: bias is computed at run time")
    return np.asarray(lw.g.const(name), np.float64).reshape(-1)


def add(lw, node):
    where = f"Add '{node.name}'"
    if any(lw.g.is_const(i) for i in node.input):
        raise UnsupportedModelError(f"{where}: adding a constant is not supported")
    a = lw._int(node.input[0], where)
    b = lw._int(node.input[1], where)
    if a.shape != b.shape:
        raise UnsupportedModelError(f"{where}: broadcasting add {a.shape} + {b.shape} is not supported")
    y, _, (amin, amax) = lw._output_of(node, a.shape)
    twice_max = 2.0 * max(a.scale, b.scale)
    m1, s1 = quantize_multiplier(a.scale / twice_max)
    m2, s2 = quantize_multiplier(b.scale / twice_max)
    mo, so = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * y.scale))
    lw.ops.append(Op("add", node.name or node.output[0], [a.name, b.name], y.name, {
        "left_shift": ADD_LEFT_SHIFT, "in1": (m1, s1), "in2": (m2, s2), "out": (mo, so),
        "act_min": amin, "act_max": amax,
    }))


def concat(lw, node):
    where = f"Concat '{node.name}'"
    axis = lw.g.attrs(node).get("axis")
    ins = [lw._int(i, where) for i in node.input]
    if axis not in (1, -3):
        raise UnsupportedModelError(f"{where}: only channel concatenation (axis 1) is supported")
    if any(t.shape[:3] != ins[0].shape[:3] for t in ins):
        raise UnsupportedModelError(f"{where}: inputs differ in spatial size")
    shape = ins[0].shape[:3] + (sum(t.shape[3] for t in ins),)
    qnode, clamp, _ = lw._follow_to_quantize(node.output[0])
    if qnode is None:
        # NNCF unifies the input scales of a concat and puts no quantizer after it
        if any(not math.isclose(t.scale, ins[0].scale, rel_tol=1e-6) or t.zero_point != ins[0].zero_point for t in ins):
            raise UnsupportedModelError(f"{where}: inputs with different quantization and no QuantizeLinear after")
        y = lw._new_tensor(node.output[0], shape, ins[0].scale, ins[0].zero_point)
        lw.act[node.output[0]] = y.name
        amin, amax = INT8_MIN, INT8_MAX
    else:
        y, _, (amin, amax) = lw._output_of(node, shape)
    lw.ops.append(Op("concat", node.name or node.output[0], [t.name for t in ins], y.name, {
        "rescale": [rescale(t, y) for t in ins], "act_min": amin, "act_max": amax,
    }))


def resize(lw, node):
    where = f"{node.op_type} '{node.name}'"
    x = lw._int(node.input[0], where)
    a = lw.g.attrs(node)
    mode = _s(a.get("mode", "nearest"))
    if mode != "nearest":
        raise UnsupportedModelError(f"{where}: only nearest resizing is supported (got {mode})")
    ins = list(node.input) + ["", "", ""]
    _, h, w, c = x.shape
    if node.op_type == "Upsample":
        scales = lw.g.const(ins[1])
        oh, ow = int(h * scales[2]), int(w * scales[3])
    elif ins[3]:
        sizes = lw.g.const(ins[3])
        oh, ow = int(sizes[2]), int(sizes[3])
    else:
        scales = lw.g.const(ins[2])
        if scales[0] != 1 or scales[1] != 1:
            raise UnsupportedModelError(f"{where}: resizing batch or channels is not supported")
        oh, ow = int(math.floor(h * scales[2])), int(math.floor(w * scales[3]))
    if oh % h or ow % w:
        raise UnsupportedModelError(f"{where}: only integer upsampling factors are supported ({h}x{w} -> {oh}x{ow})")
    fh, fw = oh // h, ow // w
    ctm = _s(a.get("coordinate_transformation_mode", "half_pixel"))
    nmode = _s(a.get("nearest_mode", "round_prefer_floor"))
    for n, f in ((oh, fh), (ow, fw)):
        if not np.array_equal(_nearest_index(n, f, ctm, nmode), np.arange(n) // f):
            raise UnsupportedModelError(
                f"{where}: coordinate mode {ctm}/{nmode} is not a plain pixel repeat; export with "
                "nn.Upsample(mode='nearest')")
    tmp = lw._new_tensor(node.output[0] + "_up", (1, oh, ow, c), x.scale, x.zero_point)
    lw.ops.append(Op("upsample", node.name or node.output[0], [x.name], tmp.name, {"factor": (fh, fw)}))
    lw._requantize_to(tmp, node, tmp.shape, "requantize")


def pad(lw, node):
    where = f"Pad '{node.name}'"
    x = lw._int(node.input[0], where)
    a = lw.g.attrs(node)
    if _s(a.get("mode", "constant")) != "constant":
        raise UnsupportedModelError(f"{where}: only constant padding is supported")
    ins = list(node.input) + ["", "", ""]
    pads = [int(p) for p in (lw.g.const(ins[1]) if ins[1] else a.get("pads"))]
    if ins[3]:
        raise UnsupportedModelError(f"{where}: the 'axes' input is not supported")
    if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or any(p < 0 for p in pads):
        raise UnsupportedModelError(f"{where}: only non-negative spatial padding is supported (pads={pads})")
    value = float(np.asarray(lw.g.const(ins[2])).reshape(())) if ins[2] else float(a.get("value", 0.0))
    qv = int(np.clip(np.rint(value / x.scale) + x.zero_point, INT8_MIN, INT8_MAX))
    _, h, w, c = x.shape
    top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
    shape = (1, h + top + bottom, w + left + right, c)
    tmp = lw._new_tensor(node.output[0] + "_pad", shape, x.scale, x.zero_point)
    lw.ops.append(Op("pad", node.name or node.output[0], [x.name], tmp.name,
                     {"pads": (top, left, bottom, right), "value": qv}))
    lw._requantize_to(tmp, node, shape, "requantize")


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


def _nearest_index(n_out: int, f: int, ctm: str, nmode: str) -> np.ndarray:
    """Source index of each output pixel per the ONNX Resize spec (integer factor f, input n_out // f)."""
    n_in = n_out // f
    x = np.arange(n_out, dtype=np.float64)
    if ctm == "asymmetric":
        src = x / f
    elif ctm in ("half_pixel", "pytorch_half_pixel"):
        src = (x + 0.5) / f - 0.5
    elif ctm == "align_corners":
        src = x * (n_in - 1) / max(n_out - 1, 1)
    elif ctm == "tf_half_pixel_for_nn":
        src = (x + 0.5) / f
    else:
        return np.full(n_out, -1)
    if nmode == "floor":
        idx = np.floor(src)
    elif nmode == "ceil":
        idx = np.ceil(src)
    elif nmode == "round_prefer_ceil":
        idx = np.floor(src + 0.5)
    else:  # round_prefer_floor
        idx = np.ceil(src - 0.5)
    return np.clip(idx, 0, n_in - 1).astype(np.int64)


# ONNX op type -> its lowering (intgraph.SUPPORTED_OPS lists these and Constant, which is folded)
LOWERINGS = {
    "Identity": identity,
    "QuantizeLinear": stray_quantize,
    "DequantizeLinear": stray_dequantize,
    "Relu": activation,
    "Clip": activation,
    "Conv": conv,
    "Add": add,
    "Concat": concat,
    "Resize": resize,
    "Upsample": resize,
    "Pad": pad,
}
