"""Integer graph (IR): a QDQ ONNX model lowered to int8 tensors and integer ops.

The IR is what both the Python reference (`int8ref`) and the C code generator (`codegen`) consume, so the
integer semantics are decided here once (see DESIGN.md, "int8 semantics"):

- activations: per-tensor asymmetric int8, `real = scale * (q - zero_point)`, layout NHWC, batch 1;
  uint8 activations (NNCF emits them after ReLU) become int8 with the zero point shifted by -128;
- weights: per-output-channel symmetric int8 (zero point 0), biases int32 at scale `s_in * s_w[c]`;
- convolution: int32 accumulation of `(x - zp_in) * w` plus bias, then requantization by a fixed-point
  multiplier and shift per output channel computed like TFLite's `QuantizeMultiplier`, applied like TFLite's
  `MultiplyByQuantizedMultiplier` (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT: both round
  half away from zero), plus the output zero point, then a clamp that also implements fused ReLU / ReLU6;
- add: TFLite's scheme (inputs shifted left by 20 bits, rescaled to a common scale, summed, rescaled);
- concat / requantize: per input `MBQM(q - zp_in, M, shift) + zp_out` (a plain copy when the quantization
  parameters are equal); nearest upsample and pad move int8 values and never change quantization.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ADD_LEFT_SHIFT = 20  # as TFLite's quantized ADD: room for precision while rescaling both inputs
INT8_MIN, INT8_MAX = -128, 127

# ONNX ops that the lowering understands (anything else is refused with the list below in the message).
SUPPORTED_OPS = ("Conv", "Relu", "Clip", "Add", "Concat", "Resize", "Upsample", "Pad", "Identity",
                 "QuantizeLinear", "DequantizeLinear", "Constant")


class UnsupportedModelError(ValueError):
    """The QDQ graph uses something the integer engine cannot run; the message says what and where."""


@dataclass
class Tensor:
    name: str
    shape: tuple  # (N, H, W, C)
    scale: float
    zero_point: int  # int8 domain

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Op:
    kind: str  # conv | depthwise | add | concat | requantize | upsample | pad
    name: str  # the ONNX node it came from (for reports and generated comments)
    inputs: list
    output: str
    params: dict = field(default_factory=dict)

    def macs(self, tensors: dict) -> int:
        out = tensors[self.output]
        if self.kind == "conv":
            kh, kw = self.params["kernel"]
            return out.size * kh * kw * tensors[self.inputs[0]].shape[3]
        if self.kind == "depthwise":
            kh, kw = self.params["kernel"]
            return out.size * kh * kw
        return 0


@dataclass
class IntGraph:
    name: str
    tensors: dict  # name -> Tensor
    ops: list  # topologically ordered
    input: str
    output: str

    def weight_bytes(self) -> int:
        """Constant bytes the ops need (int8 weights + int32 bias/multiplier/shift arrays)."""
        total = 0
        for op in self.ops:
            for key in ("weights", "bias", "multiplier", "shift"):
                if key in op.params:
                    total += op.params[key].nbytes
        return total

    def macs(self) -> int:
        return sum(op.macs(self.tensors) for op in self.ops)


# ---------------------------------------------------------------------------------------------------------
# fixed point (TFLite's QuantizeMultiplier)

def quantize_multiplier(real: float) -> tuple[int, int]:
    """`real` as (q31 multiplier, shift) with real ≈ multiplier * 2^(shift - 31), multiplier in [2^30, 2^31)."""
    if real < 0:
        raise UnsupportedModelError(f"negative requantization multiplier {real}")
    if real == 0.0:
        return 0, 0
    frac, shift = math.frexp(real)  # real = frac * 2^shift, frac in [0.5, 1)
    q = int(math.floor(frac * (1 << 31) + 0.5))  # round half away from zero (frac > 0)
    if q == (1 << 31):
        q //= 2
        shift += 1
    if shift < -31:  # too small to represent: the product is 0 anyway
        return 0, 0
    if shift > 30:
        raise UnsupportedModelError(f"requantization multiplier {real} too large (> 2^30)")
    return q, shift


# ---------------------------------------------------------------------------------------------------------
# ONNX helpers

class _Onnx:
    """Constant resolution and producer/consumer lookups over an ONNX graph."""

    def __init__(self, model):
        from onnx import numpy_helper

        self.graph = model.graph
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.producer = {}
        self.consumers = {}
        for node in self.graph.node:
            for o in node.output:
                self.producer[o] = node
            for i in node.input:
                if i:
                    self.consumers.setdefault(i, []).append(node)
        for node in self.graph.node:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = _constant_value(node)
        self.graph_outputs = {o.name for o in self.graph.output}
        self._const_memo = {}

    def attrs(self, node) -> dict:
        from onnx import helper

        return {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def is_const(self, name: str) -> bool:
        """True when the value does not depend on the model input (initializers and what they compute)."""
        if not name or name in self.consts:
            return True
        if name in self._const_memo:
            return self._const_memo[name]
        node = self.producer.get(name)
        result = node is not None and node.op_type not in _NEVER_FOLD and all(self.is_const(i) for i in node.input)
        self._const_memo[name] = result
        return result

    def const(self, name: str) -> np.ndarray:
        """Value of a constant tensor; nodes on constants are evaluated (NNCF's Q->DQ weights, F.pad's pads)."""
        if name in self.consts:
            return self.consts[name]
        node = self.producer.get(name)
        if node is None or not self.is_const(name):
            raise UnsupportedModelError(f"tensor '{name}' should be constant but is computed at run time")
        ins = [self.const(i) if i else None for i in node.input]
        a = self.attrs(node)
        if node.op_type == "QuantizeLinear":  # evaluated here to keep ONNX's exact rounding and saturation
            values = [_quantize_linear(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a.get("axis", 1))]
        elif node.op_type == "DequantizeLinear":
            values = [_dequantize_linear(ins[0], ins[1], ins[2] if len(ins) > 2 else None, a.get("axis", 1))]
        else:
            from onnx.reference import ReferenceEvaluator

            try:
                feeds = {i: v for i, v in zip(node.input, ins) if i}
                values = ReferenceEvaluator(node).run(None, feeds)
            except Exception as exc:
                raise UnsupportedModelError(f"cannot fold constant node {node.op_type} '{node.name}': {exc}") from exc
        for o, v in zip(node.output, values):
            self.consts[o] = np.asarray(v)
        return self.consts[name]


_NEVER_FOLD = ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial")


def _constant_value(node):
    from onnx import helper, numpy_helper

    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int"):
            return np.array(helper.get_attribute_value(a))
        if a.name in ("value_floats", "value_ints"):
            return np.array(helper.get_attribute_value(a))
    raise UnsupportedModelError(f"Constant node '{node.name}' has an unsupported value attribute")


def _bcast(param, x, axis):
    param = np.asarray(param)
    if param.ndim == 0 or param.size == 1:
        return param.reshape(())
    shape = [1] * x.ndim
    shape[axis] = param.size
    return param.reshape(shape)


def _quantize_linear(x, scale, zp, axis):
    dtype = np.asarray(zp).dtype if zp is not None else np.dtype(np.uint8)
    info = np.iinfo(dtype)
    zp = np.zeros((), np.int64) if zp is None else zp.astype(np.int64)
    q = np.rint(x.astype(np.float64) / _bcast(scale, x, axis).astype(np.float64)) + _bcast(zp, x, axis)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize_linear(q, scale, zp, axis):
    zp = np.zeros((), np.int64) if zp is None else zp.astype(np.int64)
    return ((q.astype(np.int64) - _bcast(zp, q, axis)) * _bcast(scale, q, axis)).astype(np.float32)


def _to_int8_domain(zp: np.ndarray) -> int:
    """Zero point in the int8 domain (uint8 tensors are shifted by -128, which leaves real values unchanged)."""
    zp = np.asarray(zp)
    if zp.dtype == np.uint8:
        return int(zp) - 128
    if zp.dtype == np.int8:
        return int(zp)
    raise UnsupportedModelError(f"activation zero point of type {zp.dtype}; only int8/uint8 are supported")


# ---------------------------------------------------------------------------------------------------------
# lowering

def load_qdq(onnx_path) -> IntGraph:
    """Lower the QDQ ONNX model at `onnx_path` into an IntGraph."""
    import onnx

    path = Path(onnx_path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such ONNX model")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types
        raise ValueError(f"{path}: not a readable ONNX model ({exc})") from exc
    return lower(model, name=path.stem)


def lower(model, name: str = "model") -> IntGraph:
    return _Lowering(model, name).run()


class _Lowering:
    def __init__(self, model, name):
        import onnx

        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # shapes are recomputed below anyway; inference only helps error messages
            pass
        self.g = _Onnx(model)
        self.name = name
        self.tensors: dict[str, Tensor] = {}
        self.ops: list[Op] = []
        self.act: dict[str, str] = {}  # float ONNX tensor -> int8 tensor carrying it (real = DQ(int))
        self.done: set[str] = set()  # ONNX node names already consumed by a pattern
        self._uniq = 0

    # -- helpers -------------------------------------------------------------------------------------------
    def _int(self, float_name: str, where: str) -> Tensor:
        if float_name not in self.act:
            raise UnsupportedModelError(
                f"{where}: input '{float_name}' is not a quantized activation (no DequantizeLinear feeds it); "
                "every activation must be quantized (QuantizeLinear/DequantizeLinear pairs)")
        return self.tensors[self.act[float_name]]

    def _qparams(self, q_node) -> tuple[float, int]:
        ins = list(q_node.input) + [""] * 3
        scale = np.asarray(self.g.const(ins[1]), np.float64)
        if scale.size != 1:
            raise UnsupportedModelError(
                f"{q_node.name or q_node.output[0]}: per-channel activation quantization is not supported (NNCF "
                "does this for depthwise inputs: AdvancedQuantizationParameters(activations_quantization_params="
                "QuantizationParameters(per_channel=False)))")
        zp = self.g.const(ins[2]) if ins[2] else np.zeros((), np.uint8)
        return float(scale.reshape(())), _to_int8_domain(np.asarray(zp).reshape(()))

    def _new_tensor(self, name, shape, scale, zp) -> Tensor:
        if name in self.tensors:
            self._uniq += 1
            name = f"{name}__{self._uniq}"
        t = Tensor(name, tuple(int(s) for s in shape), float(scale), int(zp))
        self.tensors[name] = t
        return t

    def _follow_to_quantize(self, y: str):
        """From a float op output, walk ReLU/Clip/Identity to the QuantizeLinear that ends the chain.

        Returns (quantize node or None, clamp (lo, hi) in real units or None, last float tensor)."""
        lo, hi = -math.inf, math.inf
        cur = y
        while True:
            cons = self.g.consumers.get(cur, [])
            if cur in self.g.graph_outputs or len(cons) != 1:
                return None, (lo, hi), cur
            node = cons[0]
            if node.op_type == "QuantizeLinear":
                return node, (lo, hi), cur
            if node.op_type == "Relu":
                lo = max(lo, 0.0)
            elif node.op_type == "Clip":
                a = self.g.attrs(node)
                ins = list(node.input) + ["", ""]
                cmin = float(self.g.const(ins[1])) if ins[1] else a.get("min", -math.inf)
                cmax = float(self.g.const(ins[2])) if ins[2] else a.get("max", math.inf)
                lo, hi = max(lo, cmin), min(hi, cmax)
            elif node.op_type != "Identity":
                return None, (lo, hi), cur
            self.done.add(id(node))
            cur = node.output[0]

    def _act_range(self, clamp, scale, zp) -> tuple[int, int]:
        """Clamp in the int8 domain, as TFLite's CalculateActivationRangeQuantized."""
        lo, hi = clamp
        qmin = INT8_MIN if lo == -math.inf else max(INT8_MIN, zp + int(round(lo / scale)))
        qmax = INT8_MAX if hi == math.inf else min(INT8_MAX, zp + int(round(hi / scale)))
        if qmin > qmax:
            raise UnsupportedModelError(f"empty activation range {clamp} at scale {scale}")
        return qmin, qmax

    def _output_of(self, node, shape):
        """The int8 output tensor of a compute node (and its clamp), mapping the float names onto it."""
        y = node.output[0]
        qnode, clamp, last = self._follow_to_quantize(y)
        if qnode is None:
            raise UnsupportedModelError(
                f"{node.op_type} '{node.name}': its output '{last}' is not followed by a QuantizeLinear; "
                "quantize every activation including the model output (NNCF: "
                "AdvancedQuantizationParameters(quantize_outputs=True))")
        self.done.add(id(qnode))
        scale, zp = self._qparams(qnode)
        t = self._new_tensor(qnode.output[0], shape, scale, zp)
        self._map_dequantizers(qnode.output[0], t)
        return t, qnode, self._act_range(clamp, scale, zp)

    def _map_dequantizers(self, q_name, t: Tensor):
        for dq in self.g.consumers.get(q_name, []):
            if dq.op_type != "DequantizeLinear":
                raise UnsupportedModelError(f"quantized tensor '{q_name}' feeds {dq.op_type}; expected DequantizeLinear")
            scale, zp = self._qparams(dq)
            if not math.isclose(scale, t.scale, rel_tol=1e-6) or zp != t.zero_point:
                raise UnsupportedModelError(f"DequantizeLinear '{dq.name}' uses other parameters than its QuantizeLinear")
            self.done.add(id(dq))
            self.act[dq.output[0]] = t.name

    def _requantize_to(self, src: Tensor, node, shape, tag):
        """`src` carries the op result in its own quantization; give it the quantization of what follows."""
        qnode, clamp, last = self._follow_to_quantize(node.output[0])
        if qnode is None:
            if clamp != (-math.inf, math.inf):
                raise UnsupportedModelError(f"{node.op_type} '{node.name}': activation without QuantizeLinear")
            self.act[node.output[0]] = src.name
            return src
        self.done.add(id(qnode))
        scale, zp = self._qparams(qnode)
        act = self._act_range(clamp, scale, zp)
        if math.isclose(scale, src.scale, rel_tol=1e-6) and zp == src.zero_point and act == (INT8_MIN, INT8_MAX):
            # same quantization: QuantizeLinear(DequantizeLinear(q)) == q, no op needed
            self.tensors.pop(src.name)
            src.name = qnode.output[0]
            self.tensors[src.name] = src
            self.ops[-1].output = src.name
            self._map_dequantizers(qnode.output[0], src)
            return src
        t = self._new_tensor(qnode.output[0], shape, scale, zp)
        self.ops.append(Op("requantize", f"{node.name}/{tag}", [src.name], t.name,
                           {"rescale": _rescale(src, t), "act_min": act[0], "act_max": act[1]}))
        self._map_dequantizers(qnode.output[0], t)
        return t

    # -- main ----------------------------------------------------------------------------------------------
    def run(self) -> IntGraph:
        g = self.g
        real_inputs = [i for i in g.graph.input if i.name not in g.consts]
        if len(real_inputs) != 1 or len(g.graph.output) != 1:
            raise UnsupportedModelError(
                f"the engine runs models with one input and one output (found {len(real_inputs)} and {len(g.graph.output)})")
        x = real_inputs[0]
        dims = [d.dim_value for d in x.type.tensor_type.shape.dim]
        if len(dims) != 4 or any(d <= 0 for d in dims):
            raise UnsupportedModelError(f"input '{x.name}' must have a static NCHW shape, found {dims}")
        if dims[0] != 1:
            raise UnsupportedModelError(f"input '{x.name}' has batch {dims[0]}; export with batch 1")
        qs = [n for n in g.consumers.get(x.name, [])]
        if len(qs) != 1 or qs[0].op_type != "QuantizeLinear":
            raise UnsupportedModelError(f"input '{x.name}' must feed exactly one QuantizeLinear (is the model quantized?)")
        scale, zp = self._qparams(qs[0])
        self.done.add(id(qs[0]))
        t_in = self._new_tensor(qs[0].output[0], (1, dims[2], dims[3], dims[1]), scale, zp)
        self._map_dequantizers(qs[0].output[0], t_in)

        for node in g.graph.node:
            if id(node) in self.done or node.op_type == "Constant" or all(g.is_const(o) for o in node.output):
                continue
            handler = getattr(self, f"_op_{node.op_type}", None)
            if handler is None:
                raise UnsupportedModelError(
                    f"unsupported ONNX op {node.op_type} ('{node.name}'); the int8 engine supports "
                    f"{', '.join(SUPPORTED_OPS)}")
            handler(node)

        out_name = g.graph.output[0].name
        if out_name not in self.act:
            raise UnsupportedModelError(
                f"model output '{out_name}' is not produced by a DequantizeLinear; quantize the model output too "
                "(NNCF: AdvancedQuantizationParameters(quantize_outputs=True))")
        t_out = self.act[out_name]
        if t_out == t_in.name or not self.ops:
            raise UnsupportedModelError("the model computes nothing (output is the quantized input)")
        used = {t_in.name} | {o.output for o in self.ops}
        self.tensors = {k: v for k, v in self.tensors.items() if k in used}
        return optimize(IntGraph(self.name, self.tensors, self.ops, t_in.name, t_out))

    # -- op handlers ---------------------------------------------------------------------------------------
    def _op_Identity(self, node):
        if node.input[0] in self.act:
            self.act[node.output[0]] = self.act[node.input[0]]
        else:
            raise UnsupportedModelError(f"Identity '{node.name}' on a non-quantized tensor")

    def _op_QuantizeLinear(self, node):
        raise UnsupportedModelError(f"QuantizeLinear '{node.name}' does not follow a supported op "
                                    f"(its input '{node.input[0]}' comes from an unsupported pattern)")

    def _op_DequantizeLinear(self, node):
        raise UnsupportedModelError(f"DequantizeLinear '{node.name}' reads '{node.input[0]}', which is not a quantized activation")

    def _standalone_activation(self, node):
        # Relu/Clip on a dequantized tensor with its own Q after it: a requantize with a clamp
        src = self._int(node.input[0], f"{node.op_type} '{node.name}'")
        lo, hi = (0.0, math.inf) if node.op_type == "Relu" else (None, None)
        if node.op_type == "Clip":
            a = self.g.attrs(node)
            ins = list(node.input) + ["", ""]
            lo = float(self.g.const(ins[1])) if ins[1] else a.get("min", -math.inf)
            hi = float(self.g.const(ins[2])) if ins[2] else a.get("max", math.inf)
        nxt = self.g.consumers.get(node.output[0], [])
        if len(nxt) != 1 or nxt[0].op_type != "QuantizeLinear":
            raise UnsupportedModelError(f"{node.op_type} '{node.name}' is not followed by a QuantizeLinear")
        self.done.add(id(nxt[0]))
        scale, zp = self._qparams(nxt[0])
        t = self._new_tensor(nxt[0].output[0], src.shape, scale, zp)
        amin, amax = self._act_range((lo, hi), scale, zp)
        self.ops.append(Op("requantize", node.name or node.output[0], [src.name], t.name,
                           {"rescale": _rescale(src, t), "act_min": amin, "act_max": amax}))
        self._map_dequantizers(nxt[0].output[0], t)

    _op_Relu = _standalone_activation
    _op_Clip = _standalone_activation

    def _op_Conv(self, node):
        g = self.g
        where = f"Conv '{node.name}'"
        x = self._int(node.input[0], where)
        a = g.attrs(node)
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise UnsupportedModelError(f"{where}: auto_pad is not supported; export with explicit pads")
        if any(d != 1 for d in a.get("dilations", [1, 1])):
            raise UnsupportedModelError(f"{where}: dilated convolution is not supported")
        w_q, w_scale, w_zp = self._weights(node.input[1], where)
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
            b = self._bias_real(node.input[2], where)
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
        y_t, _, (amin, amax) = self._output_of(node, (1, oh, ow, cout))
        mult, shift = zip(*(quantize_multiplier(float(bs / y_t.scale)) for bs in bias_scale))
        if kind == "conv":
            weights = np.ascontiguousarray(w_q.transpose(0, 2, 3, 1))  # OHWI: input channels innermost
        else:
            weights = np.ascontiguousarray(w_q[:, 0].transpose(1, 2, 0))  # HWC: channels innermost
        self.ops.append(Op(kind, node.name or node.output[0], [x.name], y_t.name, {
            "kernel": (int(kh), int(kw)), "stride": (int(sh), int(sw)), "pad": (int(pt), int(pl), int(pb), int(pr)),
            "weights": weights.astype(np.int8), "bias": bias,
            "multiplier": np.array(mult, np.int32), "shift": np.array(shift, np.int32),
            "act_min": amin, "act_max": amax,
        }))

    def _weights(self, name, where):
        """int8 weights, per-channel scale and zero point from DequantizeLinear(int8 const) or Q->DQ(float const)."""
        g = self.g
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

    def _bias_real(self, name, where):
        if not self.g.is_const(name):
            raise UnsupportedModelError(f"{where}: bias is computed at run time")
        return np.asarray(self.g.const(name), np.float64).reshape(-1)

    def _op_Add(self, node):
        where = f"Add '{node.name}'"
        if any(self.g.is_const(i) for i in node.input):
            raise UnsupportedModelError(f"{where}: adding a constant is not supported")
        a = self._int(node.input[0], where)
        b = self._int(node.input[1], where)
        if a.shape != b.shape:
            raise UnsupportedModelError(f"{where}: broadcasting add {a.shape} + {b.shape} is not supported")
        y, _, (amin, amax) = self._output_of(node, a.shape)
        twice_max = 2.0 * max(a.scale, b.scale)
        m1, s1 = quantize_multiplier(a.scale / twice_max)
        m2, s2 = quantize_multiplier(b.scale / twice_max)
        mo, so = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * y.scale))
        self.ops.append(Op("add", node.name or node.output[0], [a.name, b.name], y.name, {
            "left_shift": ADD_LEFT_SHIFT, "in1": (m1, s1), "in2": (m2, s2), "out": (mo, so),
            "act_min": amin, "act_max": amax,
        }))

    def _op_Concat(self, node):
        where = f"Concat '{node.name}'"
        axis = self.g.attrs(node).get("axis")
        ins = [self._int(i, where) for i in node.input]
        if axis not in (1, -3):
            raise UnsupportedModelError(f"{where}: only channel concatenation (axis 1) is supported")
        if any(t.shape[:3] != ins[0].shape[:3] for t in ins):
            raise UnsupportedModelError(f"{where}: inputs differ in spatial size")
        shape = ins[0].shape[:3] + (sum(t.shape[3] for t in ins),)
        qnode, clamp, _ = self._follow_to_quantize(node.output[0])
        if qnode is None:
            # NNCF unifies the input scales of a concat and puts no quantizer after it
            if any(not math.isclose(t.scale, ins[0].scale, rel_tol=1e-6) or t.zero_point != ins[0].zero_point for t in ins):
                raise UnsupportedModelError(f"{where}: inputs with different quantization and no QuantizeLinear after")
            y = self._new_tensor(node.output[0], shape, ins[0].scale, ins[0].zero_point)
            self.act[node.output[0]] = y.name
            amin, amax = INT8_MIN, INT8_MAX
        else:
            y, _, (amin, amax) = self._output_of(node, shape)
        self.ops.append(Op("concat", node.name or node.output[0], [t.name for t in ins], y.name, {
            "rescale": [_rescale(t, y) for t in ins], "act_min": amin, "act_max": amax,
        }))

    def _op_Resize(self, node):
        where = f"{node.op_type} '{node.name}'"
        x = self._int(node.input[0], where)
        a = self.g.attrs(node)
        mode = _s(a.get("mode", "nearest"))
        if mode != "nearest":
            raise UnsupportedModelError(f"{where}: only nearest resizing is supported (got {mode})")
        ins = list(node.input) + ["", "", ""]
        _, h, w, c = x.shape
        if node.op_type == "Upsample":
            scales = self.g.const(ins[1])
            oh, ow = int(h * scales[2]), int(w * scales[3])
        elif ins[3]:
            sizes = self.g.const(ins[3])
            oh, ow = int(sizes[2]), int(sizes[3])
        else:
            scales = self.g.const(ins[2])
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
        tmp = self._new_tensor(node.output[0] + "_up", (1, oh, ow, c), x.scale, x.zero_point)
        self.ops.append(Op("upsample", node.name or node.output[0], [x.name], tmp.name, {"factor": (fh, fw)}))
        self._requantize_to(tmp, node, tmp.shape, "requantize")

    _op_Upsample = _op_Resize

    def _op_Pad(self, node):
        where = f"Pad '{node.name}'"
        x = self._int(node.input[0], where)
        a = self.g.attrs(node)
        if _s(a.get("mode", "constant")) != "constant":
            raise UnsupportedModelError(f"{where}: only constant padding is supported")
        ins = list(node.input) + ["", "", ""]
        pads = [int(p) for p in (self.g.const(ins[1]) if ins[1] else a.get("pads"))]
        if ins[3]:
            raise UnsupportedModelError(f"{where}: the 'axes' input is not supported")
        if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or any(p < 0 for p in pads):
            raise UnsupportedModelError(f"{where}: only non-negative spatial padding is supported (pads={pads})")
        value = float(np.asarray(self.g.const(ins[2])).reshape(())) if ins[2] else float(a.get("value", 0.0))
        qv = int(np.clip(np.rint(value / x.scale) + x.zero_point, INT8_MIN, INT8_MAX))
        _, h, w, c = x.shape
        top, left, bottom, right = pads[2], pads[3], pads[6], pads[7]
        shape = (1, h + top + bottom, w + left + right, c)
        tmp = self._new_tensor(node.output[0] + "_pad", shape, x.scale, x.zero_point)
        self.ops.append(Op("pad", node.name or node.output[0], [x.name], tmp.name,
                           {"pads": (top, left, bottom, right), "value": qv}))
        self._requantize_to(tmp, node, shape, "requantize")


def optimize(graph: IntGraph) -> IntGraph:
    """Exact rewrites that save arena memory and work (results are bit-identical):

    - requantize(upsample(x)) -> upsample(requantize(x)): an elementwise op commutes with pixel repetition,
      and runs on 1/(fh*fw) of the pixels;
    - concat(..., upsample(x), ...) -> concat(..., x upsampled on the fly, ...): the concat kernel reads input
      pixels at (y / fh, x / fw), so the upsampled tensor (often the largest of a U-Net) never exists."""
    def consumers(t):
        return [op for op in graph.ops if t in op.inputs]

    changed = True
    while changed:
        changed = False
        for i, up in enumerate(graph.ops):
            if up.kind != "upsample" or up.output == graph.output:
                continue
            users = consumers(up.output)
            if len(users) != 1:
                continue
            user = users[0]
            if user.kind == "requantize":
                src, mid, dst = graph.tensors[up.inputs[0]], graph.tensors[up.output], graph.tensors[user.output]
                fh, fw = up.params["factor"]
                small = Tensor(mid.name, src.shape[:3] + (dst.shape[3],), dst.scale, dst.zero_point)
                graph.tensors[mid.name] = small
                user.inputs, up.inputs = [src.name], [mid.name]
                j = graph.ops.index(user)
                graph.ops[i], graph.ops[j] = user, up
                user.output, up.output = mid.name, dst.name
                changed = True
                break
            if user.kind == "concat":
                k = user.inputs.index(up.output)
                user.params.setdefault("factors", [(1, 1)] * len(user.inputs))
                user.params["factors"][k] = tuple(up.params["factor"])
                user.inputs[k] = up.inputs[0]
                graph.ops.remove(up)
                del graph.tensors[up.output]
                changed = True
                break
    return graph


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


def _rescale(src: Tensor, dst: Tensor) -> dict:
    """Parameters to move int8 values from `src`'s quantization to `dst`'s."""
    identity = math.isclose(src.scale, dst.scale, rel_tol=1e-6) and src.zero_point == dst.zero_point
    m, s = (0, 0) if identity else quantize_multiplier(src.scale / dst.scale)
    return {"identity": identity, "in_zp": src.zero_point, "multiplier": m, "shift": s, "out_zp": dst.zero_point}
