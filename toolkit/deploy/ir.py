"""Integer graph (IR): a QDQ ONNX model lowered to int8 tensors and integer ops.

The IR is what both the Python reference (`int8ref`) and the C code generator (`codegen`) consume, so the
integer semantics are decided here once (docs/architecture.md, "int8 semantics"):

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
from pathlib import Path

import numpy as np

from toolkit.deploy.intgraph import (  # noqa: F401 (the integer graph is also reached as ir.*)
    ADD_LEFT_SHIFT,
    INT8_MAX,
    INT8_MIN,
    SUPPORTED_OPS,
    IntGraph,
    Op,
    Tensor,
    UnsupportedModelError,
    quantize_multiplier,
    rescale,
)
from toolkit.deploy.lowering import LOWERINGS


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
                           {"rescale": rescale(src, t), "act_min": act[0], "act_max": act[1]}))
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
            handler = LOWERINGS.get(node.op_type)
            if handler is None:
                raise UnsupportedModelError(
                    f"unsupported ONNX op {node.op_type} ('{node.name}'); the int8 engine supports "
                    f"{', '.join(SUPPORTED_OPS)}")
            handler(self, node)

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
