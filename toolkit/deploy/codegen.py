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

Arena plan: every intermediate tensor lives from the op that writes it to the last op that reads it; a wide
convolution's scratch lives during its op only. Tensors are placed greedily, largest first, at the lowest
offset that overlaps no tensor alive at the same time (as TFLM's greedy planner). Elementwise ops (add,
requantize) write in place over an input that dies there. The model input is read from `in` and the output
written to `out`, so neither takes arena space.
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


def scratch_name(i: int) -> str:
    return f"scratch:{i}"


def plan_arena(graph: IntGraph, wide: bool = False) -> dict:
    """Offsets of the intermediate tensors (and, with `wide`, of each wide convolution's scratch under the name
    scratch_name(op index)): {'size': bytes, 'offsets': {tensor: offset}, 'buffers': [...]}."""
    producer = {op.output: i for i, op in enumerate(graph.ops)}
    last_use = {}
    for i, op in enumerate(graph.ops):
        for t in op.inputs:
            last_use[t] = i
    in_arena = [op.output for op in graph.ops if op.output != graph.output]
    buffer_of = {}
    buffers = []
    for i, op in enumerate(graph.ops):
        t = op.output
        if t not in in_arena:
            continue
        size = graph.tensors[t].size
        target = None
        if op.kind in IN_PLACE_KINDS:
            for src in op.inputs:
                b = buffer_of.get(src)
                if b is not None and last_use.get(src) == i and b.size == size:
                    target = b
                    break
        if target is None:
            target = Buffer([], size, i, i)
            buffers.append(target)
        target.tensors.append(t)
        target.last = max(target.last, last_use.get(t, i))
        buffer_of[t] = target
    if wide:
        buffers += [Buffer([scratch_name(i)], 4 * wide_patch_len(op), i, i)
                    for i, op in enumerate(graph.ops) if op.kind == "conv"]
    # greedy by size; ties broken by first use then name so the plan is deterministic
    placed = []
    for b in sorted(buffers, key=lambda b: (-b.size, b.first, b.tensors[0])):
        live = sorted((p for p in placed if p.first <= b.last and b.first <= p.last), key=lambda p: p.offset)
        offset = 0
        for p in live:
            if offset + b.size <= p.offset:
                break
            offset = max(offset, _align(p.offset + p.size))
        b.offset = offset
        placed.append(b)
    size = max((b.offset + b.size for b in buffers), default=0)
    offsets = {t: b.offset for b in buffers for t in b.tensors}
    return {"size": size, "offsets": offsets, "buffers": buffers, "producer": producer, "last_use": last_use}


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
        elif op.kind in ("requantize", "concat"):
            rs = p["rescale"] if op.kind == "concat" else [p["rescale"]]
            rows = ",\n".join(f"    {{{int(r['identity'])}, {r['in_zp']}, {r['multiplier']}, {r['shift']}, {r['out_zp']}}}"
                              for r in rs)
            params.append(f"static const tk_rescale_t {li}_rescale[{len(rs)}] = {{\n{rows},\n}};")
            if op.kind == "requantize":
                calls.append(f"    rc = {fn}(&{li}_rescale[0], {p['act_min']}, {p['act_max']}, "
                             f"{cptr(op.inputs[0])}, {y.size}, {ptr(op.output)});")
            else:
                chans = ", ".join(str(graph.tensors[t].shape[3]) for t in op.inputs)
                params.append(f"static const int32_t {li}_channels[{len(op.inputs)}] = {{{chans}}};")
                factors = p.get("factors") or [(1, 1)] * len(op.inputs)
                fac = ", ".join(f"{fh}, {fw}" for fh, fw in factors)
                params.append(f"static const int32_t {li}_factors[{2 * len(op.inputs)}] = {{{fac}}};")
                srcs = ", ".join(cptr(t) for t in op.inputs)
                calls.append("    {")
                calls.append(f"        const int8_t *const srcs[{len(op.inputs)}] = {{{srcs}}};")
                calls.append(f"        rc = {fn}(srcs, {li}_channels, {li}_factors, {li}_rescale, {len(op.inputs)}, "
                             f"{y.shape[1]}, {y.shape[2]}, {p['act_min']}, {p['act_max']}, {ptr(op.output)});")
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
        calls.append("    if (rc != TK_OK) {\n        return rc;\n    }")
        calls.append(f"    TK_LAYER_DONE({i});")
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
            "#include <stddef.h>", "#include <stdint.h>", "", f'#include "{name}.h"', '#include "tk_kernels.h"', "",
            "/* constants in " + f"{name}_weights.c */", *decls, "", *params, "",

            f"int {name}_invoke(const int8_t *in, int8_t *out, uint8_t *arena)", "{", "    int rc;",
            "    if (!in || !out || !arena) {", "        return TK_ERR_ARG;", "    }", *calls, "    return TK_OK;", "}", "",
            f"const tk_model_t {name}_model = {{",
            f'    "{name}",', f"    {name}_invoke,", f"    {up}_ARENA_SIZE,", f"    {up}_INPUT_SIZE,", f"    {up}_OUTPUT_SIZE,",
            f"    {{1, {up}_INPUT_H, {up}_INPUT_W, {up}_INPUT_C}},", f"    {{1, {up}_OUTPUT_H, {up}_OUTPUT_W, {up}_OUTPUT_C}},",
            f"    {up}_INPUT_SCALE,", f"    {up}_INPUT_ZERO_POINT,", f"    {up}_OUTPUT_SCALE,", f"    {up}_OUTPUT_ZERO_POINT,",
            f"    {up}_WEIGHT_BYTES,", f"    (uint64_t){up}_MACS,", "};", ""]
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
        "weight_bytes": weight_bytes,
        "wide_weights": wide,
        "tflite_bytes": len(tflite) if tflite is not None else None,
        "macs": macs,
        "input": {"shape": list(t_in.shape), "layout": "NHWC", "scale": t_in.scale, "zero_point": t_in.zero_point},
        "output": {"shape": list(t_out.shape), "layout": "NHWC", "scale": t_out.scale, "zero_point": t_out.zero_point},
        "peak_layer": {"index": peak_i, "name": graph.ops[peak_i].name, "live_bytes": peak_bytes},
        "layers": layers,
        "tensors": [{"tensors": b.tensors, "offset": b.offset, "bytes": b.size, "first_op": b.first, "last_op": b.last}
                    for b in sorted(plan["buffers"], key=lambda b: (b.first, b.offset))],
    }
    files[f"{name}_plan.json"] = json.dumps(report, indent=2) + "\n"
    return files, report


write_files = write_sources  # the export writes through the one C writer


def sha256_file(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
