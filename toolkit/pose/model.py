"""The microcontroller pose estimator: a small conv-only encoder-decoder that outputs keypoint heatmaps.

Same op rules as the diffusion student (toolkit.distill.student), for the same reason (exact int8 kernels,
no float math on the device): Conv2d (3x3, stride 2 to go down), ReLU6, nearest 2x upsampling, skip concat
and residual add. No normalization layers, no global pooling, no reshapes.

  input   (B, 3, S, S) RGB in [-1, 1] (S = 96 by default; uint8 pixel p -> p / 127.5 - 1)
  output  (B, 7, S/stride, S/stride) heatmaps, one per FDF keypoint (toolkit.keypoints.NAMES order)

The heatmaps are decoded in Python (`decode_heatmaps`): argmax, refined to sub-cell precision by the
weighted mean of the 3x3 neighbourhood. The peak value is the keypoint's confidence (a Gaussian of peak 1 is
the training target; a keypoint outside the frame has an all-zero target).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from toolkit.keypoints import NUM_KEYPOINTS
from toolkit.pretrained import PretrainedMixin


# Module types allowed anywhere in the network, and the ONNX ops the exported graph may contain.
ALLOWED_LEAF_MODULES = (nn.Conv2d, nn.ReLU, nn.ReLU6, nn.Upsample)
ALLOWED_ONNX_OPS = {"Conv", "Relu", "Clip", "Resize", "Concat", "Add", "Constant"}
MAX_PARAMS = 250_000


@dataclass(frozen=True)
class PosePreset:
    name: str
    channels: tuple  # width per encoder level; level i works at input / 2**(i+1) (the stem has stride 2)
    res_blocks: tuple  # residual blocks per level
    out_level: int = 1  # heatmaps come out at level `out_level` (1: stride 4, 24x24 for a 96x96 input)
    max_params: int | None = MAX_PARAMS
    # "heatmaps": one person, 7 keypoint heatmaps. "centers": any number of people (toolkit.pose.multi):
    # a head-centre map, 7 visibility maps and 14 keypoint offsets per cell. "heads": one face-presence
    # logit per cell (toolkit.pose.heads, the frame pipeline's verifier).
    outputs: str = "heatmaps"
    description: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"], d["res_blocks"] = list(self.channels), list(self.res_blocks)
        return d


PRESETS = {
    p.name: p
    for p in (
        # ~230k parameters, ~46M MACs at 96x96: Cortex-M7 / ESP32-S3 class.
        PosePreset("mcu96", (16, 32, 48, 56), (0, 1, 1, 1), description="96x96 input, 24x24 heatmaps"),
        # ~15k parameters: tests and quick experiments (same topology, a quarter of the width).
        PosePreset("tiny", (8, 12, 16, 24), (0, 1, 1, 1), description="tests and smoke runs"),
        # Multi-person: the same backbones with a centre + visibility + offset head (toolkit.pose.multi).
        PosePreset("multi96", (16, 32, 48, 56), (0, 1, 1, 1), outputs="centers",
                   description="96x96 input, any number of people: 24x24 centres + offsets"),
        PosePreset("multi_tiny", (8, 12, 16, 24), (0, 1, 1, 1), outputs="centers",
                   description="multi-person, tests and smoke runs"),
        # The frame pipeline's independent verifier (toolkit.pose.heads): one face-presence logit per cell.
        PosePreset("heads96", (12, 24, 32, 48), (0, 0, 1, 1), outputs="heads",
                   description="verifier: 24x24 face-presence map (nose / eyes per 4x4 cell)"),
        PosePreset("heads_tiny", (6, 8, 12, 16), (0, 0, 1, 1), outputs="heads",
                   description="verifier, tests and smoke runs"),
    )
}


def get_preset(name: str) -> PosePreset:
    if name not in PRESETS:
        raise ValueError(f"unknown pose preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=True)


class ResBlock(nn.Module):
    """relu6(x + conv(relu6(conv(x)))), second conv starting near zero (no normalization to keep it stable)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = _conv(ch, ch)
        self.act1 = nn.ReLU6()
        self.conv2 = _conv(ch, ch)
        self.act2 = nn.ReLU6()
        nn.init.normal_(self.conv2.weight, std=1e-3)

    def forward(self, x):
        return self.act2(x + self.conv2(self.act1(self.conv1(x))))


class PoseNet(PretrainedMixin, nn.Module):
    """(B, 3, S, S) -> (B, 7, S / 2**(out_level+1), ...) heatmaps. Only allowed modules; cat / add in forward."""

    def __init__(self, preset: PosePreset, resolution: int = 96):
        super().__init__()
        self.preset = preset
        self.resolution = int(resolution)
        ch, nb = tuple(preset.channels), tuple(preset.res_blocks)
        if len(ch) != len(nb) or len(ch) < 2:
            raise ValueError("a pose preset needs >= 2 levels and one res_blocks entry per level")
        if not 0 <= preset.out_level < len(ch):
            raise ValueError(f"out_level {preset.out_level} outside 0..{len(ch) - 1}")
        if self.resolution % (2 ** len(ch)):
            raise ValueError(f"input size {self.resolution} is not divisible by 2**{len(ch)} (preset {preset.name})")
        self.stem = _conv(3, ch[0], stride=2)
        self.stem_act = nn.ReLU6()
        self.down = nn.ModuleList()
        self.down_act = nn.ModuleList()
        self.enc = nn.ModuleList()
        for i, (c, n) in enumerate(zip(ch, nb)):
            if i > 0:
                self.down.append(_conv(ch[i - 1], c, stride=2))
                self.down_act.append(nn.ReLU6())
            self.enc.append(nn.Sequential(*[ResBlock(c) for _ in range(n)]))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        # Decoder: from the deepest level back up to out_level, upsample + concat skip + conv.
        self.fuse = nn.ModuleList()
        self.fuse_act = nn.ModuleList()
        for i in range(len(ch) - 2, preset.out_level - 1, -1):
            self.fuse.append(_conv(ch[i + 1] + ch[i], ch[i]))
            self.fuse_act.append(nn.ReLU6())
        self.head = _conv(ch[preset.out_level], self.out_channels)

    @property
    def out_channels(self) -> int:
        if self.preset.outputs == "centers":
            from toolkit.pose.multi import OUT_CHANNELS

            return OUT_CHANNELS
        if self.preset.outputs == "heads":
            return 1
        if self.preset.outputs != "heatmaps":
            raise ValueError(f"unknown pose outputs {self.preset.outputs!r} (heatmaps | centers | heads)")
        return NUM_KEYPOINTS

    @property
    def multi_person(self) -> bool:
        return self.preset.outputs == "centers"

    @property
    def verifier(self) -> bool:
        return self.preset.outputs == "heads"

    @property
    def stride(self) -> int:
        return 2 ** (self.preset.out_level + 1)

    @property
    def heatmap_size(self) -> int:
        return self.resolution // self.stride

    def forward(self, x):
        h = self.enc[0](self.stem_act(self.stem(x)))
        skips = [h]
        for i in range(1, len(self.enc)):
            h = self.enc[i](self.down_act[i - 1](self.down[i - 1](h)))
            skips.append(h)
        for k, i in enumerate(range(len(self.enc) - 2, self.preset.out_level - 1, -1)):
            h = self.fuse_act[k](self.fuse[k](torch.cat([self.up(h), skips[i]], dim=1)))
        return self.head(h)

    # --- what quantize / export take: the network itself is already plain -------------------------
    @torch.no_grad()
    def export_module(self) -> "PoseNet":
        """A frozen eval-mode copy: input (1, 3, S, S) -> heatmaps (the `Student.step_module` equivalent)."""
        net = copy.deepcopy(self).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    # --- save_pretrained-style persistence ---------------------------------------------------------
    def config(self) -> dict:
        return {
            "_class_name": "PoseNet",
            "preset": self.preset.to_dict(),
            "resolution": self.resolution,
            "in_channels": 3,
            "out_channels": self.out_channels,
            "outputs": self.preset.outputs,
            "heatmap_size": self.heatmap_size,
            "stride": self.stride,
            "input_range": [-1.0, 1.0],
            "decoding": ("head centres: 3x3 local maxima; keypoints = cell centre + offset (toolkit.pose.multi)"
                         if self.multi_person else
                         "face-presence logit per cell; a cell at or above the calibrated threshold holds a face "
                         "(toolkit.pose.heads)" if self.verifier else
                         "argmax + 3x3 weighted mean; heatmap cell i centred at (i + 0.5) * stride px"),
        }

    @classmethod
    def from_config(cls, config: dict) -> "PoseNet":
        if config.get("_class_name") != "PoseNet":
            raise ValueError(f"config is for {config.get('_class_name')!r}, not a PoseNet")
        p = dict(config["preset"])
        p["channels"], p["res_blocks"] = tuple(p["channels"]), tuple(p["res_blocks"])
        return cls(PosePreset(**p), config["resolution"])


# ---------------------------------------------------------------------------------------------- budget


@dataclass
class Budget:
    preset: str
    resolution: int
    params: int
    macs: int  # multiply-accumulates per frame, counted by hooks on a real forward pass
    peak_activation_bytes_int8: int  # largest (input + output) pair of any conv at 1 byte per value
    heatmap_size: int
    max_params: int | None = None
    per_layer: list = field(default_factory=list)

    @property
    def within(self) -> bool:
        return self.max_params is None or self.params <= self.max_params

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("per_layer")
        d["within_budget"] = self.within
        return d


def budget(net: PoseNet) -> Budget:
    from toolkit.distill.student import count_macs

    macs, peak, rows = count_macs(net.eval(), net.resolution, in_channels=3)
    return Budget(net.preset.name, net.resolution, sum(p.numel() for p in net.parameters()),
                  macs, peak, net.heatmap_size, net.preset.max_params, rows)


def disallowed_modules(net: nn.Module) -> list[str]:
    """Names of leaf modules that are not MCU ops (empty for a valid pose net)."""
    containers = (nn.Sequential, nn.ModuleList, PoseNet, ResBlock)
    return [f"{n or '<root>'} ({type(m).__name__})" for n, m in net.named_modules()
            if not isinstance(m, containers + ALLOWED_LEAF_MODULES)]


# ---------------------------------------------------------------------------------------------- decoding


def decode_heatmaps(heatmaps, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, K, h, w) heatmaps -> keypoints (B, K, 2) in input pixels (continuous coords) and peaks (B, K).

    The argmax cell, refined by the weighted mean of the positive values in its 3x3 neighbourhood; cell
    (i, j) is centred at ((j + 0.5) * stride, (i + 0.5) * stride).
    """
    hm = heatmaps.detach().cpu().numpy() if isinstance(heatmaps, torch.Tensor) else np.asarray(heatmaps)
    hm = hm.astype(np.float64)
    B, K, H, W = hm.shape
    flat = hm.reshape(B, K, -1)
    idx = flat.argmax(-1)
    peak = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    iy, ix = idx // W, idx % W
    pts = np.zeros((B, K, 2))
    pad = np.pad(hm, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=0.0)
    offs = np.arange(-1, 2)
    for b in range(B):
        for k in range(K):
            win = pad[b, k, iy[b, k]: iy[b, k] + 3, ix[b, k]: ix[b, k] + 3]
            w = np.clip(win, 0.0, None)
            s = w.sum()
            dy, dx = ((w.sum(1) @ offs) / s, (w.sum(0) @ offs) / s) if s > 1e-9 else (0.0, 0.0)
            pts[b, k] = ((ix[b, k] + dx + 0.5) * stride, (iy[b, k] + dy + 0.5) * stride)
    return pts, peak


def render_heatmaps(points: np.ndarray, weights: np.ndarray, size: int, stride: int, sigma: float) -> np.ndarray:
    """Training targets (B, K, size, size): Gaussians of peak 1 (sigma in cells) at `points` (input pixels).

    A point whose weight is 0 or that lies outside the frame gets an all-zero map.
    """
    B, K = points.shape[:2]
    c = (np.arange(size) + 0.5) * stride
    gx = (c[None, None, :] - points[..., 0:1]) / stride
    gy = (c[None, None, :] - points[..., 1:2]) / stride
    maps = np.exp(-(gy[..., :, None] ** 2 + gx[..., None, :] ** 2) / (2 * sigma**2))
    inside = (points[..., 0] >= 0) & (points[..., 0] < size * stride) & (points[..., 1] >= 0) & (
        points[..., 1] < size * stride)
    return (maps * (inside & (weights > 0))[..., None, None]).astype(np.float32).reshape(B, K, size, size)


def div_round_away(num: int, den: int) -> int:
    """num / den rounded half away from zero, in integers (as C computes it with truncating division)."""
    q, r = divmod(abs(num) * 2 + den, 2 * den)
    return q if num >= 0 else -q


def decode_heatmaps_int8(q: np.ndarray, zero_point: int, stride: int, layout: str = "NHWC"):
    """Integer-only decoding of one int8 heatmap tensor, as the firmware does it (bit-exact reference).

    q: (H, W, K) int8 (NHWC, the engine's layout) or (K, H, W) with layout="CHW". Per keypoint: the first
    maximum in raster order; w = max(q - zero_point, 0) on its 3x3 neighbourhood (0 outside the map);
    offset = round_half_away(256 * sum(w * d) / sum(w)) (0 when sum(w) = 0). Returns keypoints (K, 2) int64 in
    Q8 pixels (x * 256) and peaks (K,) int8: x_q8 = (2 * ix + 1) * stride * 128 + offset_x * stride. Dividing
    by 256 gives what `decode_heatmaps` returns on the dequantized tensor, up to that last rounding.
    """
    q = np.asarray(q)
    if q.dtype != np.int8 or q.ndim != 3:
        raise ValueError(f"expected a 3-D int8 heatmap tensor, got {q.shape} {q.dtype}")
    chw = q.transpose(2, 0, 1) if layout == "NHWC" else q
    K, H, W = chw.shape
    pts = np.zeros((K, 2), np.int64)
    peaks = np.zeros(K, np.int8)
    for k in range(K):
        m = chw[k].astype(np.int64)
        flat = int(m.argmax())  # numpy returns the first maximum, like a strict '>' scan in C
        iy, ix = divmod(flat, W)
        peaks[k] = chw[k, iy, ix]
        s = sx = sy = 0
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                y, x = iy + dy, ix + dx
                if 0 <= y < H and 0 <= x < W:
                    w = max(int(m[y, x]) - int(zero_point), 0)
                    s, sx, sy = s + w, sx + w * dx, sy + w * dy
        ox = div_round_away(256 * sx, s) if s else 0
        oy = div_round_away(256 * sy, s) if s else 0
        pts[k] = ((2 * ix + 1) * stride * 128 + ox * stride, (2 * iy + 1) * stride * 128 + oy * stride)
    return pts, peaks
