"""The integer graph: int8 tensors and integer ops, what the lowering (`ir.py`, `lowering.py`) produces and the
int8 reference (`int8ref`) and the C code generator (`codegen`) consume. The semantics are in ir.py's docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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


def rescale(src: Tensor, dst: Tensor) -> dict:
    """Parameters to move int8 values from `src`'s quantization to `dst`'s."""
    identity = math.isclose(src.scale, dst.scale, rel_tol=1e-6) and src.zero_point == dst.zero_point
    m, s = (0, 0) if identity else quantize_multiplier(src.scale / dst.scale)
    return {"identity": identity, "in_zp": src.zero_point, "multiplier": m, "shift": s, "out_zp": dst.zero_point}
