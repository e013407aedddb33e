"""Does an int8 model fit a board? Weights in flash, activations (plus input and output) in RAM.

Two estimates of the activation RAM, both for batch 1 and int8 (1 byte per element):
  - `estimate_onnx_memory` (any float or QDQ ONNX, before any quantization): liveness over the graph: at
    each op every tensor produced earlier and read at or after it is live; ReLU/Clip/Q/DQ are fused or
    free, so they alias their input. The input and output buffers are held for the whole inference. The
    need is the peak of the live bytes (a lower bound for any planner that does not alias op outputs).
  - the export engineer's static arena plan (`toolkit.deploy.codegen.plan_arena`) on the lowered integer
    graph, when that module is available: arena + input + output buffers.
Flash need: int8 weights + per output channel an int32 bias, a Q31 multiplier and a shift (12 bytes).
Budgets leave room for the firmware itself: flash minus FIRMWARE_FLASH_RESERVE, RAM minus RAM_RESERVE.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

FIRMWARE_FLASH_RESERVE = 64 * 1024  # engine + runtime + serial protocol code, generous for -Os builds
RAM_RESERVE = 8 * 1024  # stack, serial protocol buffers, C runtime data
PER_CHANNEL_CONST_BYTES = 12  # int32 bias + int32 multiplier + int32 shift per output channel

_ALIAS_OPS = {"Relu", "Clip", "QuantizeLinear", "DequantizeLinear", "Identity", "Cast"}
_SKIP_OPS = {"Constant"}


class ModelTooLargeError(ValueError):
    """The model does not fit the board; the message names the budget, the need and the largest layer."""


@dataclass
class LayerMemory:
    name: str
    op: str
    output_shape: tuple
    output_bytes: int
    live_bytes: int  # all activation bytes live while this op runs (its inputs, its output, held skips)


@dataclass
class MemoryEstimate:
    weight_bytes: int
    peak_bytes: int
    peak_layer: LayerMemory
    input_bytes: int
    output_bytes: int
    method: str
    layers: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = len(self.layers)
        return d


def _shape_of(value_info) -> tuple:
    dims = value_info.type.tensor_type.shape.dim
    if not dims or any(not d.HasField("dim_value") for d in dims):
        raise ValueError(f"tensor {value_info.name} has no static shape; export the model with a fixed input size")
    return tuple(int(d.dim_value) for d in dims)


def estimate_onnx_memory(onnx_path) -> MemoryEstimate:
    """Flash and peak activation RAM of a single-input ONNX model (float or QDQ) run as int8, batch 1."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)))
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    consts = set(inits)
    for node in g.node:
        if node.op_type == "Constant":
            consts.update(node.output)
    shapes = {vi.name: vi for vi in list(g.value_info) + list(g.input) + list(g.output)}
    graph_inputs = [i.name for i in g.input if i.name not in inits]
    if len(graph_inputs) != 1 or len(g.output) != 1:
        raise ValueError(f"{onnx_path}: expected one input and one output, got {graph_inputs} -> {len(g.output)}")

    alias = {}  # tensor -> the activation tensor it really is (fused / free ops)

    def root(name):
        while name in alias:
            name = alias[name]
        return name

    # Constant chains (weight Q/DQ, Identity on constants) are constants too.
    changed = True
    while changed:
        changed = False
        for node in g.node:
            ins = [i for i in node.input if i]
            if ins and all(i in consts for i in ins) and not all(o in consts for o in node.output):
                consts.update(node.output)
                changed = True

    weights = 0
    ops = []  # (node, activation inputs, output) in graph order
    for node in g.node:
        if node.op_type in _SKIP_OPS or all(o in consts for o in node.output):
            continue
        act_inputs = [root(i) for i in node.input if i and i not in consts]
        if node.op_type in _ALIAS_OPS and len(act_inputs) == 1:
            alias[node.output[0]] = act_inputs[0]
            continue
        ops.append((node, act_inputs, node.output[0]))
        if node.op_type == "Conv":
            w_name = node.input[1]
            w_elems = _const_elements(w_name, g, inits)
            cout = _shape_of(shapes[node.output[0]])[1] if node.output[0] in shapes else 0
            weights += w_elems + cout * PER_CHANNEL_CONST_BYTES

    def nbytes(t):
        if t not in shapes:
            raise ValueError(f"{onnx_path}: shape of {t} unknown after shape inference")
        return int(np.prod(_shape_of(shapes[t])))

    x = graph_inputs[0]
    y = root(g.output[0].name)
    # The engine reads the input from, and writes the output to, buffers of their own that the firmware
    # holds for the whole inference: they count at every op. Intermediates live from producer to last reader.
    io_bytes = nbytes(x) + nbytes(y)
    last_use, first_def = {}, {}
    for i, (_, ins, out) in enumerate(ops):
        first_def.setdefault(out, i)
        for t in ins:
            last_use[t] = i
    layers = []
    for i, (node, ins, out) in enumerate(ops):
        live = io_bytes + sum(
            nbytes(t) for t in first_def if t != y and first_def[t] <= i <= last_use.get(t, first_def[t])
        )
        layers.append(LayerMemory(node.name or out, node.op_type, _shape_of(shapes[out]), nbytes(out), live))
    if not layers:
        raise ValueError(f"{onnx_path}: no compute ops found")
    peak = max(layers, key=lambda l: l.live_bytes)
    return MemoryEstimate(weights, peak.live_bytes, peak, nbytes(x), nbytes(y), "onnx-liveness", layers)


def _const_elements(name, graph, inits) -> int:
    """Elements of a constant weight, following a DequantizeLinear/Identity chain back to its initializer."""
    from onnx import numpy_helper

    producers = {o: n for n in graph.node for o in n.output}
    seen = 0
    while name not in inits and name in producers and seen < 8:
        node = producers[name]
        if node.op_type == "Constant":
            return int(numpy_helper.to_array(node.attribute[0].t).size)
        name = node.input[0]
        seen += 1
    if name in inits:
        return int(np.prod(inits[name].dims))
    raise ValueError(f"cannot resolve the constant weight {name}")


def estimate_from_plan(qdq_onnx_path) -> MemoryEstimate | None:
    """The export engineer's static arena plan for the lowered int8 graph, if that code is present."""
    try:
        from toolkit.deploy import codegen, ir
    except ImportError:
        return None
    graph = ir.load_qdq(qdq_onnx_path)
    plan = codegen.plan_arena(graph)
    peak_i, peak_live = codegen.peak_layer(graph, plan)
    op = graph.ops[peak_i]
    out = graph.tensors[op.output]
    t_in, t_out = graph.tensors[graph.input], graph.tensors[graph.output]
    layer = LayerMemory(op.name, op.kind, tuple(out.shape), out.size, int(peak_live))
    return MemoryEstimate(
        int(graph.weight_bytes()), int(plan["size"]) + t_in.size + t_out.size, layer, t_in.size, t_out.size,
        "codegen-arena-plan (arena + input + output buffers)",
    )


def budgets(board) -> dict:
    return {
        "flash_bytes": max(board.flash_bytes - FIRMWARE_FLASH_RESERVE, 0),
        "ram_bytes": max(board.arena_budget_bytes - RAM_RESERVE, 0),
        "ram_region": "pool" if board.pool_bytes is not None else "sram",
    }


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def check_fit(estimate: MemoryEstimate, board, what: str = "model") -> dict:
    """Raise ModelTooLargeError (naming budget, need and largest layer) unless the model fits `board`."""
    b = budgets(board)
    problems = []
    if estimate.weight_bytes > b["flash_bytes"]:
        problems.append(
            f"weights need {_kib(estimate.weight_bytes)} of flash, budget {_kib(b['flash_bytes'])} "
            f"({_kib(board.flash_bytes)} minus {_kib(FIRMWARE_FLASH_RESERVE)} for the firmware)"
        )
    if estimate.peak_bytes > b["ram_bytes"]:
        problems.append(
            f"activations with the input and output buffers need {_kib(estimate.peak_bytes)} of RAM at peak, "
            f"budget {_kib(b['ram_bytes'])} "
            f"({b['ram_region']} {_kib(board.arena_budget_bytes)} minus {_kib(RAM_RESERVE)} for stack and runtime)"
        )
    report = {
        "target": board.name,
        "fits": not problems,
        "flash_budget_bytes": b["flash_bytes"],
        "ram_budget_bytes": b["ram_bytes"],
        "weight_bytes": estimate.weight_bytes,
        "peak_activation_bytes": estimate.peak_bytes,
        "largest_layer": {"name": estimate.peak_layer.name, "op": estimate.peak_layer.op,
                          "output_shape": list(estimate.peak_layer.output_shape),
                          "live_bytes": estimate.peak_layer.live_bytes},
        "method": estimate.method,
    }
    if problems:
        p = estimate.peak_layer
        raise ModelTooLargeError(
            f"{what} does not fit target '{board.name}': " + "; ".join(problems)
            + f". Largest layer: {p.name} ({p.op}, output {'x'.join(map(str, p.output_shape))}, "
            f"{_kib(p.live_bytes)} live). Use a smaller student preset or a board with more memory."
        )
    return report


def check_total_flash(weight_bytes: int, board, what: str) -> dict:
    """Networks flashed together (the step networks of a student) must fit the flash budget together."""
    budget = budgets(board)["flash_bytes"]
    if weight_bytes > budget:
        raise ModelTooLargeError(
            f"{what} does not fit target '{board.name}': weights need {_kib(weight_bytes)} of flash together, "
            f"budget {_kib(budget)} ({_kib(board.flash_bytes)} minus {_kib(FIRMWARE_FLASH_RESERVE)} for the "
            "firmware). Quantize fewer steps (--step K) or use a smaller student preset."
        )
    return {"total_weight_bytes": int(weight_bytes), "flash_budget_bytes": budget, "fits": True}


def fit_report(onnx_path, board, what: str = "model", use_plan: bool = False) -> dict:
    """Estimate (own liveness, or the codegen arena plan for a QDQ file when `use_plan`) and check."""
    estimate = None
    if use_plan:
        try:
            estimate = estimate_from_plan(onnx_path)
        except ValueError:
            estimate = None  # the lowering refused something; the liveness estimate still applies
    if estimate is None:
        estimate = estimate_onnx_memory(Path(onnx_path))
    return check_fit(estimate, board, what)
