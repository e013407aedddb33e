"""Constants of the on-device pipeline, derived once on the host from a quantized pose model and student.

Everything that needs floating point (lookup tables, Q31 multipliers, Q14 coefficients) is computed here and
handed to both the host reference (`toolkit.onboard.reference`) and the firmware (as C data written by
`write_c_config`), so the device never does float math and the two agree bit for bit by construction.

    pipe = build_pipeline(pose_q_dir, student_q_dir, pose_name="pose_step0", student_base="student")
    write_c_config(pipe, firmware_dir / "generated")   # pipeline_config.c / .h / .json

Fixed-point formats: Q16 = value * 2^16 in int32 (pixels in [-1, 1], noise, x_t); Q14 = DDIM coefficients;
Q15 = keypoint map values (peak 1.0 = 32768); keypoint coordinates are Q8 frame pixels / Q4 crop pixels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from toolkit.artifacts import read_manifest
from toolkit.deploy.csource import c_array, write_sources

# A keypoint counts as seen when its heatmap peak reaches this fraction of the training target's peak (1.0):
# low enough for the small test models (peaks 0.2-0.5 on people, < 0.05 on empty frames), `--visible-peak`.
VISIBLE_PEAK = 0.2
# Multi-person net: visibility outputs are trained to 0 / 1, head centres to a Gaussian of peak 1.
VISIBLE_PEAK_MULTI = 0.5
CENTER_PEAK = 0.3
# Faces the device replaces per frame (compile-time TK_FRAME_MAX_FACES in tk_frame.h: keep them equal).
MAX_FACES = 4
# Keypoint-map LUT resolution: distances in 1/16 crop pixel.
GAUSS_SUBPIXEL = 16
NOSE = 0


@dataclass
class StepConst:
    """One student step network and the glue around it."""

    name: str  # C model name (`<student>_step<k>`)
    graph: object  # toolkit.deploy.ir.IntGraph
    source: str  # its QDQ onnx
    in_multiplier: int  # Q16 value -> int8 input: zp + mbqm(v, multiplier, shift)
    in_shift: int
    in_zero_point: int
    x0_q16: np.ndarray  # (256,) int32: int8 output (index q + 128) -> Q16 value
    c1_q14: int = 0  # DDIM update to the next step: x' = c1 * x + c2 * x0 (0 on the last step)
    c2_q14: int = 0


@dataclass
class Pipeline:
    frame_size: int  # frames are frame_size x frame_size x 3 uint8 (the pose model's input)
    pose_name: str
    pose_graph: object
    pose_source: str
    pose_input_lut: np.ndarray  # (256,) int8: uint8 pixel -> pose input
    heatmap_zero_point: int
    heatmap_stride: int
    heatmap_scale: float
    visible_min: int  # keypoint visible when peak - heatmap zero point >= visible_min
    size: int  # student crop side S
    pixel_q16: np.ndarray  # (256,) int32: uint8 pixel -> Q16 in [-1, 1]
    sqrt_a0_q14: int
    sqrt_1ma0_q14: int
    gauss_q15: np.ndarray  # (L,) uint16: exp(-d^2 / (2 sigma^2)), d = index / GAUSS_SUBPIXEL crop px
    steps: list  # [StepConst]
    out_pixel_lut: np.ndarray  # (256,) uint8: last step's int8 x0 -> uint8 pixel (clamp to [-1, 1] included)
    student_base: str
    meta: dict = field(default_factory=dict)  # sigma, alphas, timesteps, sources (for reports)
    multi_person: bool = False  # pose net outputs head centres + offsets (toolkit.pose.multi), not 7 heatmaps
    center_min: int = 1  # multi-person: a head centre counts when its value - zero point >= center_min
    offset_q8: np.ndarray | None = None  # multi-person: (256,) int32, int8 offset output (q + 128) -> Q8 px
    max_faces: int = MAX_FACES  # more people than this in a frame: fail closed (TK_FRAME_MAX_FACES in C)
    verify: bool = True  # run the pose net again on the output; a nose outside every replaced box fails it
    # The independent verifier (toolkit.pose.heads) on the output, after the pose net's verify; None: none.
    verifier: "VerifierConst | None" = None
    # The student was trained on gray faces (its face prior's colour "luma", toolkit.diffusion.prior): it sees
    # the crop in gray and the generated face takes the context's skin chroma (reference.skin_chroma).
    luma_student: bool = False

    @property
    def model_names(self) -> list[str]:
        return [self.pose_name] + [s.name for s in self.steps] + ([self.verifier.name] if self.verifier else [])

    @property
    def graphs(self) -> list:
        """Every network of the pipeline, in model_names order."""
        return [self.pose_graph] + [s.graph for s in self.steps] + ([self.verifier.graph] if self.verifier else [])


@dataclass
class VerifierConst:
    """The face-presence net run on the output frame: a cell whose int8 output >= min_value and whose
    stride x stride pixels are not all inside one replaced box fails the frame (toolkit.pose.heads)."""

    name: str  # C model name
    graph: object
    source: str
    input_lut: np.ndarray  # (256,) int8: uint8 pixel -> its input
    stride: int
    min_value: int  # int8 output at or above which a cell holds a face
    threshold: float  # the calibrated probability min_value stands for (reports)


def _q(v: float, bits: int) -> int:
    return math.floor(v * (1 << bits) + 0.5)


def _load_graph(onnx_path):
    from toolkit.deploy.ir import load_qdq

    return load_qdq(onnx_path)


def gauss_lut(sigma_px: float) -> np.ndarray:
    """Q15 Gaussian by distance in 1/GAUSS_SUBPIXEL px, up to where it rounds to 0 (the last entry is > 0)."""
    d = np.arange(0, math.ceil(sigma_px * 8 * GAUSS_SUBPIXEL) + 1) / GAUSS_SUBPIXEL
    g = np.floor(np.exp(-(d**2) / (2.0 * sigma_px**2)) * 32768 + 0.5).astype(np.int64)
    n = int(np.nonzero(g)[0][-1]) + 1
    return g[:n].astype(np.uint16)


def pose_input_lut(scale: float, zero_point: int) -> np.ndarray:
    """uint8 pixel -> the pose model's int8 input, exactly as `int8ref.quantize_input(p / 127.5 - 1)` does it."""
    x = np.arange(256, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)
    q = np.rint(x / np.float32(scale)).astype(np.int64) + int(zero_point)
    return np.clip(q, -128, 127).astype(np.int8)


def _quantized(run_dir, what: str) -> dict:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{what} {run_dir}: no such directory (give a `toolkit quantize` output)")
    return read_manifest(run_dir, expect_stage="quantized")


def build_verifier(verifier_run, name: str, frame_size: int) -> VerifierConst:
    """The verifier's constants from its quantized artifact: the int8 threshold calibrated on the int8 net's
    outputs by `toolkit quantize` (`toolkit.pose.heads.calibrate_int8`, `verifier` in its manifest)."""
    from toolkit.deploy.export import model_units

    vm = _quantized(verifier_run, "--verifier")
    if vm.get("model_kind") != "pose" or (vm.get("output") or {}).get("outputs") != "heads":
        raise ValueError(f"--verifier {verifier_run}: not a quantized face-presence verifier (train one with "
                         "`toolkit pose train --preset heads96`, then `toolkit quantize`)")
    cal = vm.get("verifier") or {}
    if "min_value" not in cal:
        raise ValueError(f"--verifier {verifier_run}: no calibrated int8 threshold (`verifier` in its "
                         "toolkit.json); quantize the verifier run with this toolkit")
    onnx = model_units(verifier_run)[0][0][1]
    g = _load_graph(onnx)
    t_in, t_out = g.tensors[g.input], g.tensors[g.output]
    if tuple(t_in.shape) != (1, frame_size, frame_size, 3) or t_out.shape[3] != 1 or frame_size % t_out.shape[1]:
        raise ValueError(f"--verifier: takes {t_in.shape} -> {t_out.shape}; the pipeline's frames are "
                         f"{frame_size}x{frame_size}x3 and it must output one map")
    return VerifierConst(name, g, str(onnx), pose_input_lut(t_in.scale, t_in.zero_point),
                         frame_size // int(t_out.shape[1]), int(cal["min_value"]), float(cal["threshold"]))


def build_pipeline(pose_run, student_run, pose_name: str, student_base: str,
                   visible_peak: float | None = None, center_peak: float = CENTER_PEAK,
                   verify: bool = True, verifier_run=None, verifier_name: str = "verifier_step0") -> Pipeline:
    """Pipeline constants for a quantized pose artifact and a quantized student artifact (and optionally a
    quantized verifier, toolkit.pose.heads).

    `pose_name` is the pose network's C model name, `student_base` the prefix of the student's step models
    (`<student_base>_step<k>`), as `toolkit.bench.firmware.export_model` names them."""
    from toolkit.deploy.export import model_units
    from toolkit.deploy.ir import quantize_multiplier

    pm = _quantized(pose_run, "--pose")
    multi = (pm.get("output") or {}).get("outputs") == "centers"
    if visible_peak is None:
        visible_peak = VISIBLE_PEAK_MULTI if multi else VISIBLE_PEAK
    for flag, v in (("--visible-peak", visible_peak), ("--center-peak", center_peak)):
        if not 0.0 < float(v) <= 1.0:
            raise ValueError(f"{flag} {v}: give a fraction of the trained peak, in (0, 1]")
    sm = _quantized(student_run, "--model")
    if pm.get("model_kind") != "pose":
        raise ValueError(f"--pose {pose_run}: a quantized '{pm.get('model_kind')}' model, not a pose model")
    if sm.get("model_kind") != "student":
        raise ValueError(f"--model {student_run}: a quantized '{sm.get('model_kind')}' model, not a student")
    pose_onnx = model_units(pose_run)[0][0][1]
    pose_graph = _load_graph(pose_onnx)
    t_in, t_hm = pose_graph.tensors[pose_graph.input], pose_graph.tensors[pose_graph.output]
    _, fh, fw, fc = t_in.shape
    if fh != fw or fc != 3:
        raise ValueError(f"--pose: expected a square RGB input, the model takes {t_in.shape} (NHWC)")
    stride = int(pm.get("output", {}).get("stride") or fh // t_hm.shape[1])
    from toolkit.pose.multi import OFFSET_UNIT, OUT_CHANNELS

    if t_hm.shape[1] * stride != fh or t_hm.shape[3] != (OUT_CHANNELS if multi else 7):
        raise ValueError(f"--pose: outputs {t_hm.shape} do not match a {fh}x{fw} input at stride {stride}")
    # int8 offset -> Q8 px, the only float step of the multi-person decode, tabulated here
    offset_q8 = np.floor((np.arange(-128, 128) - t_hm.zero_point) * float(t_hm.scale) * OFFSET_UNIT * 256
                         + 0.5).astype(np.int32)

    alphas = [float(a) for a in sm.get("alphas_cumprod") or []]
    sigma = float((sm.get("keypoint_maps") or {}).get("sigma_px", 0) or 0)
    units = model_units(student_run)[0]
    if not alphas or len(alphas) != len(units):
        raise ValueError(f"--model {student_run}: needs alpha_bar per step ({len(alphas)} for {len(units)} "
                         "step networks); quantize a distilled student")
    if sigma <= 0:
        raise ValueError(f"--model {student_run}: no keypoint map sigma in its manifest")

    steps = []
    S = None
    for i, (k, onnx, _) in enumerate(units):
        g = _load_graph(onnx)
        ti, to = g.tensors[g.input], g.tensors[g.output]
        if ti.shape[3] != 14 or to.shape[3] != 3 or ti.shape[1:3] != to.shape[1:3]:
            raise ValueError(f"--model step {k}: expected input (1,S,S,14) and output (1,S,S,3), got "
                             f"{ti.shape} -> {to.shape}")
        S = S or ti.shape[1]
        if ti.shape[1] != S or ti.shape[2] != S:
            raise ValueError(f"--model: step networks disagree on the crop size ({ti.shape[1]} vs {S})")
        mult, shift = quantize_multiplier(1.0 / (ti.scale * 65536.0))
        q = np.arange(-128, 128)
        x0 = np.floor((q - to.zero_point) * float(to.scale) * 65536.0 + 0.5).astype(np.int32)
        c1 = c2 = 0
        if i + 1 < len(units):
            a_t, a_n = alphas[i], alphas[i + 1]
            r = math.sqrt(1 - a_n) / math.sqrt(1 - a_t)  # eps coefficient ratio of the DDIM update
            c1, c2 = _q(r, 14), _q(math.sqrt(a_n) - r * math.sqrt(a_t), 14)
        steps.append(StepConst(f"{student_base}_step{k}", g, str(onnx), mult, shift, int(ti.zero_point), x0, c1, c2))
    last = steps[-1].graph.tensors[steps[-1].graph.output]
    v = np.clip((np.arange(-128, 128, dtype=np.float32) - np.float32(last.zero_point)) * np.float32(last.scale), -1, 1)
    out_lut = np.clip(np.floor((v.astype(np.float64) + 1.0) * 127.5 + 0.5), 0, 255).astype(np.uint8)
    pix = np.floor((np.arange(256) * 2 - 255) * 65536 / 255 + 0.5).astype(np.int32)
    a0 = alphas[0]
    from toolkit.diffusion.prior import load_prior

    prior = load_prior(student_run)  # None: an artifact without a prior samples in RGB, as on the host
    verifier = build_verifier(verifier_run, verifier_name, int(fh)) if verifier_run is not None else None
    return Pipeline(
        frame_size=int(fh), pose_name=pose_name, pose_graph=pose_graph, pose_source=str(pose_onnx),
        pose_input_lut=pose_input_lut(t_in.scale, t_in.zero_point), heatmap_zero_point=int(t_hm.zero_point),
        heatmap_stride=stride, heatmap_scale=float(t_hm.scale),
        visible_min=max(1, math.ceil(visible_peak / float(t_hm.scale))), size=int(S), pixel_q16=pix,
        sqrt_a0_q14=_q(math.sqrt(a0), 14), sqrt_1ma0_q14=_q(math.sqrt(1 - a0), 14), gauss_q15=gauss_lut(sigma),
        steps=steps, out_pixel_lut=out_lut, student_base=student_base,
        meta={"sigma_px": sigma, "alphas_cumprod": alphas, "timesteps": sm.get("timesteps"),
              "visible_peak": visible_peak, "pose_run": str(Path(pose_run).resolve()),
              "student_run": str(Path(student_run).resolve()),
              "student_source": (sm.get("source") or {}).get("path"), "center_peak": center_peak},
        multi_person=multi, center_min=max(1, math.ceil(center_peak / float(t_hm.scale))),
        offset_q8=offset_q8 if multi else None, verify=bool(verify), verifier=verifier,
        luma_student=prior is not None and prior.colour == "luma",
    )


# ------------------------------------------------------------------------------------------ memory


def _align16(n: int) -> int:
    return (int(n) + 15) & ~15


def scratch_bytes(size: int) -> int:
    """Pipeline scratch besides the models' buffers (tk_frame_scratch_bytes in C: keep them equal)."""
    S = int(size)
    return (_align16(S * S * 3 * 4)  # x_t, Q16
            + _align16(S * S * 3)  # crop pixels, uint8
            + _align16(S * S)  # known-pixel mask
            + _align16(7 * 2 * S * 4))  # per-keypoint separable Gaussian factors, Q15


def memory_plan(pipe: Pipeline, arena_bytes: dict) -> dict:
    """RAM of the pipeline: frame + shared model arena/input/output (the networks run one after the other)
    + scratch. `arena_bytes`: C model name -> its planned arena (from the export)."""
    graphs = pipe.graphs
    frame = pipe.frame_size * pipe.frame_size * 3
    arena = max(int(arena_bytes[n]) for n in pipe.model_names)
    model_in = max(g.tensors[g.input].size for g in graphs)
    model_out = max(g.tensors[g.output].size for g in graphs)
    scratch = scratch_bytes(pipe.size)
    total = _align16(frame) + _align16(arena) + _align16(model_in) + _align16(model_out) + scratch
    return {"frame": frame, "arena": arena, "model_in": model_in, "model_out": model_out, "scratch": scratch,
            "total": total}


def config_flash_bytes(pipe: Pipeline) -> int:
    """Constant bytes of the pipeline tables (LUTs and per-step parameters) in flash."""
    return (256 + 256 * 4 + pipe.gauss_q15.size * 2 + 256 + len(pipe.steps) * (256 * 4 + 32) + 96
            + (256 * 4 if pipe.offset_q8 is not None else 0) + (256 + 16 if pipe.verifier else 0))


# ------------------------------------------------------------------------------------------ C output


def c_sources(pipe: Pipeline) -> dict[str, str]:
    """{file name: text} of pipeline_config.c/.h/.json; byte-identical for the same pipeline."""
    hdr = ("/* Constants of the on-device anonymization pipeline, written by toolkit.onboard.config "
           "(`toolkit bench --pipeline`).\n * Do not edit: every value is derived on the host from the quantized "
           "pose model and student. */\n")
    h = hdr + ("#ifndef PIPELINE_CONFIG_H\n#define PIPELINE_CONFIG_H\n\n#include \"tk_frame.h\"\n\n"
               "extern const tk_pipeline_t tk_pipeline_config;\n\n#endif /* PIPELINE_CONFIG_H */\n")
    c = [hdr, '#include <stddef.h>', '', '#include "pipeline_config.h"', ""]
    c += [f'#include "{n}.h"' for n in pipe.model_names]
    c += ["", c_array("int8_t", "pose_input_lut", pipe.pose_input_lut, static=True),
          c_array("int32_t", "pixel_q16", pipe.pixel_q16, 8, static=True),
          c_array("uint16_t", "gauss_q15", pipe.gauss_q15, static=True),
          c_array("uint8_t", "out_pixel_lut", pipe.out_pixel_lut, static=True)]
    if pipe.offset_q8 is not None:
        c.append(c_array("int32_t", "offset_q8", pipe.offset_q8, 8, static=True))
    for k, s in enumerate(pipe.steps):
        c.append(c_array("int32_t", f"step{k}_x0_q16", s.x0_q16, 8, static=True))
    ver = pipe.verifier
    if ver:
        c.append(c_array("int8_t", "verifier_input_lut", ver.input_lut, static=True))
    c.append(f"static const tk_frame_step_t steps[{len(pipe.steps)}] = {{")
    for k, s in enumerate(pipe.steps):
        c.append(f"    {{&{s.name}_model, {s.in_multiplier}, {s.in_shift}, {s.in_zero_point}, step{k}_x0_q16, "
                 f"{s.c1_q14}, {s.c2_q14}}},")
    c += ["};", "",
          "const tk_pipeline_t tk_pipeline_config = {",
          f"    {pipe.frame_size}, {pipe.frame_size}, &{pipe.pose_name}_model, pose_input_lut,",
          f"    {pipe.heatmap_zero_point}, {pipe.heatmap_stride}, {pipe.visible_min},",
          f"    {pipe.size}, {len(pipe.steps)}, steps, pixel_q16, {pipe.sqrt_a0_q14}, {pipe.sqrt_1ma0_q14},",
          f"    gauss_q15, {pipe.gauss_q15.size}, out_pixel_lut,",
          f"    {int(pipe.multi_person)}, {pipe.center_min}, {'offset_q8' if pipe.offset_q8 is not None else 'NULL'},"
          f" {pipe.max_faces}, {int(pipe.verify)},",
          f"    {f'&{ver.name}_model, verifier_input_lut, {ver.stride}, {ver.min_value}' if ver else 'NULL, NULL, 1, 0'},",
          f"    {int(pipe.luma_student)},",
          "};", ""]
    meta = {"models": pipe.model_names, "pose": pipe.pose_name, "student": pipe.student_base,
            "frame_size": pipe.frame_size, "size": pipe.size, "steps": len(pipe.steps),
            "visible_min": pipe.visible_min, "multi_person": pipe.multi_person, "center_min": pipe.center_min,
            "max_faces": pipe.max_faces, "verify": pipe.verify, "luma_student": pipe.luma_student,
            "verifier": {"name": ver.name, "stride": ver.stride, "min_value": ver.min_value,
                         "threshold": ver.threshold} if ver else None,
            "sources": [pipe.pose_source] + [s.source for s in pipe.steps] + ([ver.source] if ver else []),
            **{k: v for k, v in pipe.meta.items() if k in ("sigma_px", "alphas_cumprod", "timesteps", "visible_peak",
                                                     "center_peak")}}
    return {"pipeline_config.c": "\n".join(c), "pipeline_config.h": h,
            "pipeline_config.json": json.dumps(meta, indent=2) + "\n"}


def write_c_config(pipe: Pipeline, generated) -> list[Path]:
    """Writes pipeline_config.* into a firmware's generated folder (only files whose text changed)."""
    return write_sources(c_sources(pipe), generated)
