"""C code generation for an integer graph: constant arrays, an invoke function and a static arena plan.

Output for a model `<name>` (all byte-identical for the same input, no timestamps, no absolute paths):

- `<name>_weights.c`: int8 weights, int32 biases, multipliers and shifts as aligned `const` arrays (flash);
- `<name>.c`: one parameter struct per layer and `<name>_invoke()`, which calls the tkengine kernels in order
  with tensor pointers fixed at generation time, plus the `tk_model_t <name>_model` descriptor;
- `<name>.h`: macros for arena size, input/output shapes and quantization, the invoke prototype;
- `<name>_tflite.c` (when a .tflite is given): the file as a C array in the `xxd -i` form, for TFLM users;
- `<name>_plan.json`: per-layer MACs, constant bytes, tensor offsets/lifetimes, arena size.

Convolutions (not depthwise) use `tk_conv2d_wide_s8` when `wide` is set: their weights are written as int16 in
the order of its inner loop (`wide_weights`), and the op gets a scratch buffer in the arena for two pixels'
int16 patches (TK_CONV_WIDE_SCRATCH). Without `wide` (flash too small for int16 weights) they keep int8
weights and the int8 kernels.

Arena plan: every tensor lives from the op that writes it to the last op that reads it; a wide convolution's
scratch lives during its op only. The model input and output are planned like the others, so a caller may
keep them inside the arena (`<NAME>_INPUT_OFFSET`, `_OUTPUT_OFFSET`; separate buffers work too). Buffers are
placed at the lowest offset that overlaps no buffer alive at the same time, in three orders (largest first,
as TFLM's greedy planner; largest size x lifetime first; first use first), the smallest arena kept.
Elementwise ops (add, requantize) write in place over an input that dies there. Where the peak is a chain of
convolutions (or a concat feeding one) whose intermediate tensors only feed the next op, the chain runs in
row bands (`Chain`): only a few rows of each intermediate exist at a time and none is computed twice, as
MCUNetV2's patch-based inference does for its high-resolution layers. Concats rescale through tables computed
here, so a band costs no table set-up.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.deploy.csource import c_array, c_bytes, write_sources
from toolkit.deploy.ir import IntGraph

ALIGN = 4  # word alignment for every arena tensor (the DSP path loads 4 bytes at a time)
IN_PLACE_KINDS = ("add", "requantize")  # out[i] depends only on in[i], read before written
_C_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def c_name(text: str) -> str:
    """A C identifier derived from `text` (model names come from file names)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text).strip("_") or "model"
    return f"m_{name}" if name[0].isdigit() else name


def check_c_name(name: str) -> str:
    if not _C_IDENT.match(name) or len(name) > 48:
        raise ValueError(f"model name '{name}' is not a C identifier (letters, digits, _; at most 48 characters)")
    return name


# ---------------------------------------------------------------------------------------------------------
# arena plan

@dataclass
class Buffer:
    tensors: list
    size: int
    first: int  # index of the op that writes it
    last: int  # index of the last op that reads it
    offset: int = -1


def wide_patch_len(op) -> int:
    """Patch length of a convolution (kh * kw * in_c) rounded up to 4, as tk_conv2d_wide_s8 pads it."""
    return -(-int(np.prod(op.params["weights"].shape[1:])) // 4) * 4


def wide_weights(op) -> np.ndarray:
    """int16 weights in tk_conv2d_wide_s8's loop order: per block of 4 output channels, per pair of patch
    values, the 4 channels' pairs (output channels and patch padded with zeros; each group of 4 patch values
    paired as (0, 2), (1, 3), as the kernel's im2col stores them)."""
    w = op.params["weights"].reshape(op.params["weights"].shape[0], -1).astype(np.int16)
    out_c, k = w.shape
    kp = wide_patch_len(op)
    padded = np.zeros((-(-out_c // 4) * 4, kp), np.int16)
    padded[:out_c, :k] = w
    padded = padded[:, np.arange(kp).reshape(-1, 2, 2).transpose(0, 2, 1).reshape(-1)]  # 0,2,1,3 per group
    return padded.reshape(-1, 4, kp // 2, 2).transpose(0, 2, 1, 3).reshape(-1)


def concat_tables(op) -> np.ndarray:
    """tk_concat_s8's tables: per input, its rescale to the output of every int8 value -128..127 (int8ref's
    arithmetic, so kernel and reference agree by construction)."""
    from toolkit.deploy.int8ref import requantize

    q = np.arange(-128, 128, dtype=np.int32)
    return np.concatenate([requantize(q, r, op.params["act_min"], op.params["act_max"]).astype(np.int8)
                           for r in op.params["rescale"]])


def scratch_name(i: int) -> str:
    return f"scratch:{i}"


BAND_ROWS = (8, 4, 2, 1)  # output rows per band tried for a chain, largest first (fewer calls)
BANDABLE = ("conv", "depthwise")
MIN_BAND_SAVING = 1024  # bytes a (re)banding must save: every band costs calls and window moves (instructions)


@dataclass
class Chain:
    """Ops first..last run together in row bands at op `last` (MCUNetV2-style patch execution, by rows): each
    op but the last writes only a window of `windows[k]` rows of its output, which slides down as the last op's
    output is produced `rows` rows at a time; rows two bands share stay (moved up), none is computed twice.
    `table[k]`: per band (window's first row, rows a..b to compute, rows to drop, rows to keep, first input row,
    input rows, pad_top) for op k."""
    first: int
    last: int
    rows: int
    windows: dict
    table: dict


def _rows_in(op, a: int, b: int, in_h: int) -> tuple[int, int]:
    """Input rows [lo, hi) a convolution reads for its output rows [a, b)."""
    k, s, pad = op.params["kernel"][0], op.params["stride"][0], op.params["pad"][0]
    return max(0, a * s - pad), min(in_h, (b - 1) * s - pad + k)


def chains(graph: IntGraph) -> list:
    """Maximal runs first..last where each op's output is read only by the next op, a convolution, as its
    input: a concat (only at the head) or convolutions."""
    readers = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            readers.setdefault(t, []).append(i)
    runs, i = [], 0
    while i < len(graph.ops) - 1:
        j = i
        while (j + 1 < len(graph.ops) and graph.ops[j].output != graph.output
               and readers.get(graph.ops[j].output) == [j + 1] and graph.ops[j + 1].kind in BANDABLE
               and graph.ops[j + 1].inputs[0] == graph.ops[j].output
               and (graph.ops[j].kind in BANDABLE or (j == i and graph.ops[j].kind == "concat"))):
            j += 1
        if j > i:
            runs.append((i, j))
        i = j + 1
    return runs


def band_chain(graph: IntGraph, first: int, last: int, rows: int) -> Chain:
    ops = graph.ops
    height = {k: graph.tensors[ops[k].output].shape[1] for k in range(first, last + 1)}
    have = {k: (0, 0) for k in range(first, last)}
    windows = {k: 0 for k in range(first, last)}
    table = {k: [] for k in range(first, last + 1)}
    for r0 in range(0, height[last], rows):
        need = {last: (r0, min(r0 + rows, height[last]))}
        for k in range(last, first, -1):
            need[k - 1] = _rows_in(ops[k], *need[k], height[k - 1])
        for k in range(first, last + 1):
            lo, hi = need[k]
            if k < last:
                plo, phi = have[k]
                keep = max(0, phi - lo)
                drop, a = (lo - plo if keep else 0), lo + keep
                have[k] = (lo, hi)
                windows[k] = max(windows[k], hi - lo)
            else:
                keep = drop = 0
                a = lo
                lo = 0  # the last op writes its full output
            in_row = in_rows = pad_top = 0
            if ops[k].kind != "concat" and hi > a:
                in_h = graph.tensors[ops[k].inputs[0]].shape[1]
                ilo, ihi = _rows_in(ops[k], a, hi, in_h)
                in_row, in_rows = ilo - (need[k - 1][0] if k > first else 0), ihi - ilo
                pad_top = ilo - (a * ops[k].params["stride"][0] - ops[k].params["pad"][0])
            table[k].append((lo, a, hi, drop, keep, in_row, in_rows, pad_top))
    return Chain(first, last, rows, windows, table)


def plan_arena(graph: IntGraph, wide: bool = False) -> dict:
    """Offsets of the tensors (and, with `wide`, of each wide convolution's scratch under the name
    scratch_name(op index)): {'size': bytes, 'offsets': {tensor: offset}, 'buffers': [...], 'chains': {...}}.
    The model input and output are planned too (their offsets are where a caller may keep them inside the
    arena). Then, while the peak step lies in a chain (see `chains`) and banding it saves MIN_BAND_SAVING
    bytes, that chain runs in row bands; last, each banded chain gets the tallest bands (fewest calls and
    window moves) that keep the arena that small."""
    runs = chains(graph)
    best = _plan(graph, wide, {})
    while True:  # smallest arena: band the chain at the peak step, in the band height that saves most
        step = peak_layer(graph, best)[0]
        run = next((r for r in runs if r[0] <= step <= r[1]), None)
        if run is None:
            break
        trial = min((_plan(graph, wide, {**best["chains"], run[1]: band_chain(graph, *run, rows)})
                     for rows in reversed(BAND_ROWS)), key=lambda t: (t["size"], peak_layer(graph, t)[1]))
        if trial["size"] > best["size"] - MIN_BAND_SAVING:
            break
        best = trial
    for last, c in sorted(best["chains"].items()):  # then the tallest bands that keep that arena
        for rows in BAND_ROWS:
            if rows > c.rows:
                trial = _plan(graph, wide, {**best["chains"], last: band_chain(graph, c.first, last, rows)})
                if trial["size"] <= best["size"]:
                    best = trial
                    break
    return best


def _plan(graph: IntGraph, wide: bool, banded: dict) -> dict:
    """The greedy plan with the chains in `banded` ({last op: Chain}) run in bands at their last op."""
    producer = {op.output: i for i, op in enumerate(graph.ops)}
    slot = {}  # the step an op runs at: a banded chain's ops all run at its last op
    for c in banded.values():
        slot.update((k, c.last) for k in range(c.first, c.last + 1))
    windows = {k: c.windows[k] for c in banded.values() for k in c.windows}
    last_use = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            last_use[t] = max(last_use.get(t, 0), slot.get(i, i))
    in_arena = [op.output for op in graph.ops if op.output != graph.output]
    buffer_of = {}
    buffers = []
    for i, op in enumerate(graph.ops):
        t = op.output
        if t not in in_arena:
            continue
        _, _, w, c = graph.tensors[t].shape
        size = windows[i] * w * c if i in windows else graph.tensors[t].size
        target = None
        if op.kind in IN_PLACE_KINDS:
            for src in op.inputs:
                b = buffer_of.get(src)
                if b is not None and last_use.get(src) == i and b.size == size:
                    target = b
                    break
        if target is None:
            target = Buffer([], size, slot.get(i, i), slot.get(i, i))
            buffers.append(target)
        target.tensors.append(t)
        target.last = max(target.last, last_use.get(t, i))
        buffer_of[t] = target
    buffers.append(Buffer([graph.input], graph.tensors[graph.input].size, 0, last_use.get(graph.input, 0)))
    out_step = slot.get(producer[graph.output], producer[graph.output])
    buffers.append(Buffer([graph.output], graph.tensors[graph.output].size, out_step, len(graph.ops) - 1))
    if wide:
        buffers += [Buffer([scratch_name(i)], 4 * wide_patch_len(op), slot.get(i, i), slot.get(i, i))
                    for i, op in enumerate(graph.ops) if op.kind == "conv"]
    size, offsets = _place(buffers)
    return {"size": size, "offsets": offsets, "buffers": buffers, "producer": producer, "last_use": last_use,
            "chains": dict(banded)}


# placement orders tried (the smallest arena wins): largest first (TFLM's greedy planner), largest
# size x lifetime first, and by first use (long-lived early buffers at the bottom)
_ORDERS = (lambda b: (-b.size, b.first, b.tensors[0]),
           lambda b: (-b.size * (b.last - b.first + 1), b.first, b.tensors[0]),
           lambda b: (b.first, -b.size, b.tensors[0]))


def _place(buffers: list) -> tuple[int, dict]:
    """Offsets for the buffers: each at the lowest offset that overlaps no buffer alive at the same time,
    in each of _ORDERS; sets b.offset from the best order and returns (arena size, {tensor: offset})."""
    best = None
    for order in _ORDERS:
        placed, at = [], {}
        for b in sorted(buffers, key=order):
            live = sorted((p for p in placed if p.first <= b.last and b.first <= p.last), key=lambda p: at[id(p)])
            offset = 0
            for p in live:
                if offset + b.size <= at[id(p)]:
                    break
                offset = max(offset, _align(at[id(p)] + p.size))
            at[id(b)] = offset
            placed.append(b)
        size = max((at[id(b)] + b.size for b in buffers), default=0)
        if best is None or size < best[0]:
            best = (size, at)
    for b in buffers:
        b.offset = best[1][id(b)]
    return best[0], {t: b.offset for b in buffers for t in b.tensors}


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def peak_layer(graph: IntGraph, plan: dict) -> tuple[int, int]:
    """(op index, bytes live) of the step with the most arena bytes in use."""
    best = (0, 0)
    for i in range(len(graph.ops)):
        live = sum(b.size for b in plan["buffers"] if b.first <= i <= b.last)
        if live > best[1]:
            best = (i, live)
    return best


# ---------------------------------------------------------------------------------------------------------
# C text helpers

def _c_float(x: float) -> str:
    s = f"{float(x):.9g}"
    if not any(ch in s for ch in ".en"):
        s += ".0"
    return s + "f"


def _kernel_for(op, wide: bool) -> str:
    p = op.params
    if op.kind == "depthwise":
        return "tk_depthwise_conv2d_s8"
    if op.kind == "conv" and wide:
        return "tk_conv2d_wide_s8"
    if op.kind == "conv":
        if p["kernel"] == (1, 1) and p["stride"] == (1, 1) and not any(p["pad"]):
            return "tk_conv2d_1x1_s8"
        if p["kernel"] == (3, 3):
            return "tk_conv2d_3x3_s8"
        return "tk_conv2d_s8"
    return {"add": "tk_add_s8", "concat": "tk_concat_s8", "requantize": "tk_requantize_s8",
            "upsample": "tk_upsample_nearest_s8", "pad": "tk_pad_s8"}[op.kind]


def _describe(op, graph) -> str:
    shp = lambda t: "x".join(str(d) for d in graph.tensors[t].shape[1:])  # noqa: E731
    ins = " + ".join(shp(t) for t in op.inputs)
    extra = ""
    if op.kind in ("conv", "depthwise"):
        kh, kw = op.params["kernel"]
        extra = f" {kh}x{kw}/s{op.params['stride'][0]}"
    if op.kind == "concat" and any(f != (1, 1) for f in op.params.get("factors") or []):
        extra = " (upsampling " + ", ".join(f"x{fh}" for fh, _ in op.params["factors"]) + ")"
    text = f"{op.kind}{extra} '{op.name}': {ins} -> {shp(op.output)}"
    return text.replace("*/", "* /")


# ---------------------------------------------------------------------------------------------------------
# generation

def _chain_code(c: Chain, info: dict, graph: IntGraph, arena_ptr) -> list:
    """C running the ops of chain `c` band by band (see Chain); info[k]: how op k is called."""
    lines = [f"    {{ /* ops {c.first}-{c.last} in row bands of {c.rows}: windows of "
             + ", ".join(f"{c.windows[k]} rows (op {k})" for k in sorted(c.windows)) + " */"]
    head = info[c.first]
    if head["kind"] == "concat":
        lines.append(f"        {head['srcs']}")
    lines += ["        tk_conv_params_t band;", "        int32_t n;", f"        for (n = 0; n < {len(c.table[c.last])}; ++n) {{",
              "            const int16_t *t;"]
    for k in range(c.first, c.last + 1):
        op, d = graph.ops[k], info[k]
        _, _, w, ch = graph.tensors[op.output].shape
        row = w * ch
        dst = arena_ptr(op.output)
        lines.append(f"            t = {d['li']}_band[n]; /* op {k} */")
        if k < c.last:
            lines += ["            if (t[4] > 0) {",
                      f"                memmove({dst}, {dst} + t[3] * {row}, (size_t)(t[4] * {row}));", "            }"]
        lines.append("            if (t[2] > t[1]) {")
        if op.kind == "concat":
            lines.append(f"                rc = tk_concat_s8(srcs, {d['args']}, t[1], t[2] - t[1], {dst} + (t[1] - t[0]) * {row});")
        else:
            _, _, iw, ic = graph.tensors[op.inputs[0]].shape
            src = d["in"] if k == c.first else arena_ptr(op.inputs[0])
            lines += [f"                band = {d['li']};", "                band.in.h = t[6];", "                band.pad_top = t[7];",
                      "                band.out.h = t[2] - t[1];",
                      f"                rc = {d['fn']}(&band, {src} + t[5] * {iw * ic}, {dst} + (t[1] - t[0]) * {row}{d['scratch']});"]
        lines += ["                if (rc != TK_OK) {", "                    return rc;", "                }", "            }"]
    lines += ["        }", "    }"]
    return lines


def generate(graph: IntGraph, name: str, source_name: str = "", source_sha256: str = "",
             tflite: bytes | None = None, wide: bool = True) -> tuple[dict, dict]:
    """The generated files as {file name: text} and the plan report (a JSON-able dict). `wide`: convolutions
    from int16 weights (faster, twice the flash of their weights; see the module doc)."""
    check_c_name(name)
    plan = plan_arena(graph, wide)
    offsets = plan["offsets"]
    up = name.upper()
    t_in, t_out = graph.tensors[graph.input], graph.tensors[graph.output]

    def ptr(t: str) -> str:
        if t == graph.input:
            return "in"
        if t == graph.output:
            return "out"
        return f"(int8_t *)(arena + {offsets[t]})"

    def cptr(t: str) -> str:
        return "in" if t == graph.input else ("out" if t == graph.output else f"(const int8_t *)(arena + {offsets[t]})")

    weights_c = [f"/* {name}_weights.c: constants of model '{name}' (flash). Generated by `toolkit export` "
                 f"from {source_name}; do not edit. */", "#include <stdint.h>", "", '#include "tk_kernels.h"', ""]
    decls, params, calls, layers = [], [], [], []
    chain_of = {k: c for c in plan["chains"].values() for k in range(c.first, c.last + 1)}
    info = {}

    def arena_ptr(t: str) -> str:
        return "out" if t == graph.output else f"((int8_t *)(arena + {offsets[t]}))"
    for i, op in enumerate(graph.ops):
        p = op.params
        li = f"{name}_l{i}"
        fn = _kernel_for(op, wide)
        a_in = graph.tensors[op.inputs[0]]
        y = graph.tensors[op.output]
        wbytes = 0
        calls.append(f"    /* {i}: {_describe(op, graph)} */")
        if op.kind in ("conv", "depthwise"):
            is_wide = fn == "tk_conv2d_wide_s8"
            consts = {"weights_wide": wide_weights(op)} if is_wide else {"weights": p["weights"]}
            consts.update((key, p[key]) for key in ("bias", "multiplier", "shift"))
            for key, values in consts.items():
                ctype = {"weights": "int8_t", "weights_wide": "int16_t"}.get(key, "int32_t")
                weights_c.append(c_array(ctype, f"{li}_{key}", values, 16 if key == "shift" else 8, align=4))
                decls.append(f"extern const {ctype} {li}_{key}[];")
                wbytes += values.nbytes
            kh, kw = p["kernel"]
            params.append(
                f"static const tk_conv_params_t {li} = {{\n"
                f"    {{{a_in.shape[1]}, {a_in.shape[2]}, {a_in.shape[3]}}}, {{{y.shape[1]}, {y.shape[2]}, {y.shape[3]}}},\n"
                f"    {kh}, {kw}, {p['stride'][0]}, {p['stride'][1]}, {p['pad'][0]}, {p['pad'][1]},\n"
                f"    {a_in.zero_point}, {y.zero_point}, {p['act_min']}, {p['act_max']},\n"
                + (f"    NULL, {li}_bias, {li}_multiplier, {li}_shift, {li}_weights_wide,\n}};" if is_wide else
                   f"    {li}_weights, {li}_bias, {li}_multiplier, {li}_shift, NULL,\n}};"))
            scratch = f", (int16_t *)(arena + {offsets[scratch_name(i)]})" if is_wide else ""
            info[i] = {"kind": op.kind, "li": li, "fn": fn, "scratch": scratch, "in": cptr(op.inputs[0])}
            if i not in chain_of:
                calls.append(f"    rc = {fn}(&{li}, {cptr(op.inputs[0])}, {ptr(op.output)}{scratch});")
        elif op.kind == "add":
            b_in = graph.tensors[op.inputs[1]]
            params.append(
                f"static const tk_add_params_t {li} = {{\n    {y.size},\n"
                f"    {a_in.zero_point}, {p['in1'][0]}, {p['in1'][1]},\n"
                f"    {b_in.zero_point}, {p['in2'][0]}, {p['in2'][1]},\n"
                f"    {p['left_shift']},\n    {y.zero_point}, {p['out'][0]}, {p['out'][1]},\n"
                f"    {p['act_min']}, {p['act_max']},\n}};")
            calls.append(f"    rc = {fn}(&{li}, {cptr(op.inputs[0])}, {cptr(op.inputs[1])}, {ptr(op.output)});")
        elif op.kind == "requantize":
            r = p["rescale"]
            params.append(f"static const tk_rescale_t {li}_rescale[1] = {{\n    {{{int(r['identity'])}, {r['in_zp']}, "
                          f"{r['multiplier']}, {r['shift']}, {r['out_zp']}}},\n}};")
            calls.append(f"    rc = {fn}(&{li}_rescale[0], {p['act_min']}, {p['act_max']}, "
                         f"{cptr(op.inputs[0])}, {y.size}, {ptr(op.output)});")
        elif op.kind == "concat":
            chans = ", ".join(str(graph.tensors[t].shape[3]) for t in op.inputs)
            params.append(f"static const int32_t {li}_channels[{len(op.inputs)}] = {{{chans}}};")
            factors = p.get("factors") or [(1, 1)] * len(op.inputs)
            fac = ", ".join(f"{fh}, {fw}" for fh, fw in factors)
            params.append(f"static const int32_t {li}_factors[{2 * len(op.inputs)}] = {{{fac}}};")
            params.append(c_array("int8_t", f"{li}_tables", concat_tables(op), 16, align=4, static=True))
            srcs = ", ".join(cptr(t) for t in op.inputs)
            concat_args = f"{li}_channels, {li}_factors, {li}_tables, {len(op.inputs)}, {y.shape[1]}, {y.shape[2]}"
            info[i] = {"kind": "concat", "li": li, "args": concat_args,
                       "srcs": f"const int8_t *const srcs[{len(op.inputs)}] = {{{srcs}}};"}
            if i not in chain_of:
                calls.append("    {")
                calls.append(f"        const int8_t *const srcs[{len(op.inputs)}] = {{{srcs}}};")
                calls.append(f"        rc = {fn}(srcs, {concat_args}, 0, {y.shape[1]}, {ptr(op.output)});")
                calls.append("    }")
        elif op.kind == "upsample":
            fh, fw = p["factor"]
            calls.append(f"    rc = {fn}({cptr(op.inputs[0])}, (tk_shape_t){{{a_in.shape[1]}, {a_in.shape[2]}, "
                         f"{a_in.shape[3]}}}, {fh}, {fw}, {ptr(op.output)});")
        elif op.kind == "pad":
            t, l, b, r = p["pads"]
            calls.append(f"    rc = {fn}({cptr(op.inputs[0])}, (tk_shape_t){{{a_in.shape[1]}, {a_in.shape[2]}, "
                         f"{a_in.shape[3]}}}, {t}, {l}, {b}, {r}, {p['value']}, {ptr(op.output)});")
        else:  # pragma: no cover - the IR only produces the kinds above
            raise ValueError(f"no kernel for op kind {op.kind}")
        c = chain_of.get(i)
        if c is not None:
            rows = ", ".join("{" + ", ".join(map(str, r)) + "}" for r in c.table[i])
            params.append(f"static const int16_t {li}_band[{len(c.table[i])}][8] = {{{rows}}};")
            if i < c.last:
                calls.append(f"    /* runs in row bands with op {c.last} */")
            else:
                calls += _chain_code(c, info, graph, arena_ptr)
        if c is None or i == c.last:
            calls.append("    if (rc != TK_OK) {\n        return rc;\n    }")
            # a chain's layers finish together: its whole time falls on its first layer
            calls += [f"    TK_LAYER_DONE({k});" for k in range(c.first if c else i, i + 1)]
        layers.append({
            "index": i, "name": op.name, "kind": op.kind, "kernel": fn,
            "inputs": [{"tensor": t, "shape": list(graph.tensors[t].shape)} for t in op.inputs],
            "output": {"tensor": op.output, "shape": list(y.shape), "scale": y.scale, "zero_point": y.zero_point,
                       "location": "out" if op.output == graph.output else "arena",
                       "offset": offsets.get(op.output), "bytes": y.size},
            "in_place": op.kind in IN_PLACE_KINDS and offsets.get(op.output) is not None and any(
                offsets.get(t) == offsets.get(op.output) for t in op.inputs),
            "macs": op.macs(graph.tensors), "const_bytes": wbytes,
        })

    arena = plan["size"]
    macs = graph.macs()
    weight_bytes = sum(layer["const_bytes"] for layer in layers)  # as emitted: int16 weights when wide
    header = f"""/* {name}.h: int8 model '{name}' generated by `toolkit export` from {source_name}; do not edit.
 * Tensors are int8 NHWC, batch 1; real = scale * (q - zero_point). Call
 * {name}_invoke(in, out, arena) with an arena of {up}_ARENA_SIZE bytes aligned to 16. */
#ifndef {up}_H
#define {up}_H

#include <stdint.h>

#include "tk_model.h"

#ifdef __cplusplus
extern "C" {{
#endif

#define {up}_ARENA_SIZE {arena}u
/* in = arena + INPUT_OFFSET, out = arena + OUTPUT_OFFSET: no I/O buffers beyond the arena (input consumed) */
#define {up}_INPUT_OFFSET {offsets[graph.input]}u
#define {up}_OUTPUT_OFFSET {offsets[graph.output]}u
#define {up}_INPUT_H {t_in.shape[1]}
#define {up}_INPUT_W {t_in.shape[2]}
#define {up}_INPUT_C {t_in.shape[3]}
#define {up}_INPUT_SIZE {t_in.size}u
#define {up}_INPUT_SCALE {_c_float(t_in.scale)}
#define {up}_INPUT_ZERO_POINT ({t_in.zero_point})
#define {up}_OUTPUT_H {t_out.shape[1]}
#define {up}_OUTPUT_W {t_out.shape[2]}
#define {up}_OUTPUT_C {t_out.shape[3]}
#define {up}_OUTPUT_SIZE {t_out.size}u
#define {up}_OUTPUT_SCALE {_c_float(t_out.scale)}
#define {up}_OUTPUT_ZERO_POINT ({t_out.zero_point})
#define {up}_WEIGHT_BYTES {weight_bytes}u
#define {up}_MACS {macs}u

/* Runs the network; returns 0 (TK_OK) or a negative kernel error. */
int {name}_invoke(const int8_t *in, int8_t *out, uint8_t *arena);

extern const tk_model_t {name}_model;
"""
    if tflite is not None:
        header += f"""
/* The same model as a .tflite flatbuffer (recalibrated int8, see the quantize artifact), for TFLM. */
extern const unsigned char {name}_tflite[];
extern const unsigned int {name}_tflite_len;
"""
    header += f"""
#ifdef __cplusplus
}}
#endif

#endif /* {up}_H */
"""
    body = [f"/* {name}.c: layer parameters and invoke function of model '{name}'. Generated by `toolkit export` "
            f"from {source_name}; do not edit. */",
            "#include <stddef.h>", "#include <stdint.h>", "#include <string.h>", "", f'#include "{name}.h"', '#include "tk_kernels.h"', "",
            "/* constants in " + f"{name}_weights.c */", *decls, "", *params, "",

            f"int {name}_invoke(const int8_t *in, int8_t *out, uint8_t *arena)", "{", "    int rc;",
            "    if (!in || !out || !arena) {", "        return TK_ERR_ARG;", "    }", *calls, "    return TK_OK;", "}", "",
            f"const tk_model_t {name}_model = {{",
            f'    "{name}",', f"    {name}_invoke,", f"    {up}_ARENA_SIZE,", f"    {up}_INPUT_SIZE,", f"    {up}_OUTPUT_SIZE,",
            f"    {{1, {up}_INPUT_H, {up}_INPUT_W, {up}_INPUT_C}},", f"    {{1, {up}_OUTPUT_H, {up}_OUTPUT_W, {up}_OUTPUT_C}},",
            f"    {up}_INPUT_SCALE,", f"    {up}_INPUT_ZERO_POINT,", f"    {up}_OUTPUT_SCALE,", f"    {up}_OUTPUT_ZERO_POINT,",
            f"    {up}_WEIGHT_BYTES,", f"    (uint64_t){up}_MACS,", f"    {up}_INPUT_OFFSET,", f"    {up}_OUTPUT_OFFSET,",
            "};", ""]
    files = {
        f"{name}.h": header,
        f"{name}.c": "\n".join(body),
        f"{name}_weights.c": "\n".join(weights_c),
    }
    if tflite is not None:
        files[f"{name}_tflite.c"] = (f"/* {name}_tflite.c: the model's .tflite as a C array (xxd -i form). Generated by "
                                     f"`toolkit export`; do not edit. */\n#include \"tk_kernels.h\"\n\n"
                                     + c_bytes(f"{name}_tflite", tflite))
    peak_i, peak_bytes = peak_layer(graph, plan)
    report = {
        "name": name,
        "source": {"onnx": source_name, "sha256": source_sha256},
        "arena_bytes": arena,
        "input_offset": offsets[graph.input],
        "output_offset": offsets[graph.output],
        "weight_bytes": weight_bytes,
        "wide_weights": wide,
        "tflite_bytes": len(tflite) if tflite is not None else None,
        "macs": macs,
        "input": {"shape": list(t_in.shape), "layout": "NHWC", "scale": t_in.scale, "zero_point": t_in.zero_point},
        "output": {"shape": list(t_out.shape), "layout": "NHWC", "scale": t_out.scale, "zero_point": t_out.zero_point},
        "peak_layer": {"index": peak_i, "name": graph.ops[peak_i].name, "live_bytes": peak_bytes},
        "banded": [{"ops": [c.first, c.last], "rows": c.rows, "window_rows": {str(k): n for k, n in c.windows.items()}}
                   for c in plan["chains"].values()],
        "layers": layers,
        "tensors": [{"tensors": b.tensors, "offset": b.offset, "bytes": b.size, "first_op": b.first, "last_op": b.last}
                    for b in sorted(plan["buffers"], key=lambda b: (b.first, b.offset))],
    }
    files[f"{name}_plan.json"] = json.dumps(report, indent=2) + "\n"
    return files, report


write_files = write_sources  # the export writes through the one C writer


def sha256_file(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
