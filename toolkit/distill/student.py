"""The microcontroller student: a small conv-only U-Net that denoises in 1, 2 or 4 fixed steps.

Why it looks like this (each choice is for int8 inference on a microcontroller):
  - only Conv2d (3x3, stride 2 for downsampling), ReLU / ReLU6, nearest 2x upsampling, skip concat and
    residual add: every one of these has an exact int8 kernel (TFLM / CMSIS-NN style) and no float math;
  - no normalization at all (GroupNorm lowers to a dozen ops incl. transposes); residual blocks whose
    second conv starts near zero keep the unnormalized net trainable;
  - no timestep embedding: the student runs at a few *fixed* timesteps, so the conditioning is a learnable
    per-step bias added after every conv. For step k the bias folds into the conv's own bias, and
    `Student.step_module(k)` is a plain network (no step input) for quantization and C code generation;
  - input = one tensor (B, 14, S, S): x_t (3) + masked context (3) + mask (1) + keypoint maps (7), the same
    conditioning layout the teacher uses; output = the predicted clean image x0 (B, 3, S, S) in [-1, 1]
    (not eps: at the first step x_t is almost pure noise and eps -> x0 would divide by sqrt(alpha_bar) ~ 0,
    which amplifies int8 error; an x0 head has a bounded output range, good for a per-tensor int8 scale).

Presets are data (`PRESETS`); `budget(preset)` counts parameters and multiply-accumulates with forward hooks
on a real forward pass of the exported step network.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from toolkit.pretrained import PretrainedMixin

IN_CHANNELS = 14  # x_t(3) + masked context(3) + mask(1) + keypoint maps(7)
OUT_CHANNELS = 3

# Module types that may appear in an exported step network, and the ONNX ops they lower to.
ALLOWED_LEAF_MODULES = (nn.Conv2d, nn.ReLU, nn.ReLU6, nn.Upsample)
ALLOWED_ONNX_OPS = {"Conv", "Relu", "Clip", "Resize", "Concat", "Add", "Constant"}



@dataclass(frozen=True)
class StudentPreset:
    name: str
    resolution: int
    channels: tuple  # feature width per U-Net level (level i works at resolution / 2**i)
    res_blocks: tuple  # residual blocks per level in the encoder (the decoder has one fusion conv per level)
    activation: str = "relu6"  # relu6 bounds activations: a fixed, known range for int8 scales
    max_params: int | None = None  # budget per step network (what is flashed)
    max_macs: int | None = None  # multiply-accumulates per step
    target: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["res_blocks"] = list(self.res_blocks)
        return d


PRESETS = {
    p.name: p
    for p in (
        # 32x32 faces on Cortex-M4/M7 class boards (STM32H743 / F746: 1-2 MB flash, 512 KB-1 MB SRAM).
        StudentPreset(
            "mcu32", 32, (20, 40, 64), (1, 1, 2),
            max_params=300_000, max_macs=60_000_000, target="Cortex-M4/M7, 32x32 faces",
        ),
        # 64x64 faces on ESP32-S3: weights in flash, activations in its 4 MiB PSRAM pool.
        StudentPreset(
            "mcu64", 64, (16, 32, 64, 96), (1, 1, 1, 2),
            max_params=1_000_000, max_macs=250_000_000, target="ESP32-S3 + PSRAM, 64x64 faces",
        ),
        # Tiny net for tests and smoke runs at any resolution (resolution is overridden by the teacher's).
        StudentPreset("tiny", 32, (8, 16), (1, 1), target="tests"),
    )
}


def get_preset(name: str) -> StudentPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown student preset '{name}'; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def _act(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "relu6":
        return nn.ReLU6()
    raise ValueError(f"unknown activation '{name}' (relu or relu6)")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=True)


class ResBlock(nn.Module):
    """act(x + conv(act(conv(x)))): the add is a plain int8 elementwise add."""

    def __init__(self, ch: int, activation: str):
        super().__init__()
        self.conv1 = _conv(ch, ch)
        self.act1 = _act(activation)
        self.conv2 = _conv(ch, ch)
        self.act2 = _act(activation)
        # Start as (almost) identity: without normalization, deep stacks of fresh convs blow up or die.
        # (Biases keep their default random init: equal all-zero biases get merged by the ONNX exporter
        # into an extra Identity node.)
        nn.init.normal_(self.conv2.weight, std=1e-3)

    def forward(self, x):
        return self.act2(x + self.conv2(self.act1(self.conv1(x))))


class StudentNet(nn.Module):
    """The step network: (B, 14, S, S) -> x0 (B, 3, S, S). Only allowed modules; cat / add in forward."""

    def __init__(self, channels, res_blocks, activation="relu6", in_channels=IN_CHANNELS):
        super().__init__()
        channels, res_blocks = tuple(channels), tuple(res_blocks)
        if len(channels) != len(res_blocks) or not channels:
            raise ValueError("channels and res_blocks need one entry per level")
        self.stem = _conv(in_channels, channels[0])
        self.stem_act = _act(activation)
        self.down = nn.ModuleList()  # strided conv into level i (i >= 1)
        self.down_act = nn.ModuleList()
        self.enc = nn.ModuleList()
        for i, (ch, nb) in enumerate(zip(channels, res_blocks)):
            if i > 0:
                self.down.append(_conv(channels[i - 1], ch, stride=2))
                self.down_act.append(_act(activation))
            self.enc.append(nn.Sequential(*[ResBlock(ch, activation) for _ in range(nb)]))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = nn.ModuleList()  # decoder: upsample level i+1, concat skip of level i, conv to width i
        self.fuse_act = nn.ModuleList()
        for i in range(len(channels) - 1):
            self.fuse.append(_conv(channels[i + 1] + channels[i], channels[i]))
            self.fuse_act.append(_act(activation))
        self.head = _conv(channels[0], OUT_CHANNELS)

    def forward(self, x):
        h = self.enc[0](self.stem_act(self.stem(x)))
        skips = [h]
        for i in range(1, len(self.enc)):
            h = self.enc[i](self.down_act[i - 1](self.down[i - 1](h)))
            skips.append(h)
        for i in range(len(self.enc) - 2, -1, -1):
            h = self.fuse_act[i](self.fuse[i](torch.cat([self.up(h), skips[i]], dim=1)))
        return self.head(h)


def conv_names(net: nn.Module) -> list[str]:
    return [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]


class Student(PretrainedMixin, nn.Module):
    """StudentNet + a per-step bias table (num_steps, out_channels) for every conv.

    `forward(x, step)` runs step index `step` (0 = the first, noisiest timestep) of the fixed schedule
    `timesteps` (teacher timesteps, descending). Biases are applied by swapping each conv's bias for
    bias + table[step] (exactly what `step_module` bakes in), so training and export compute the same function.
    """

    def __init__(self, preset: StudentPreset, timesteps, resolution: int | None = None,
                 alphas_cumprod=None, keypoint_maps: dict | None = None):
        super().__init__()
        # Sampling constants travel with the weights, so a student runs without its teacher.
        self.alphas_cumprod = [float(a) for a in alphas_cumprod] if alphas_cumprod is not None else None
        self.keypoint_maps = dict(keypoint_maps or {"kind": "gaussian", "sigma_px": 1.0})
        self.preset = preset
        self.resolution = int(resolution or preset.resolution)
        self.timesteps = [int(t) for t in timesteps]
        if not self.timesteps or sorted(self.timesteps, reverse=True) != self.timesteps:
            raise ValueError(f"student timesteps must be a non-empty descending list, got {self.timesteps}")
        levels = len(preset.channels)
        if self.resolution % (2 ** (levels - 1)):
            raise ValueError(f"resolution {self.resolution} is not divisible by 2**{levels - 1} (preset {preset.name})")
        self.net = StudentNet(preset.channels, preset.res_blocks, preset.activation)
        self._conv_names = conv_names(self.net)
        convs = dict(self.net.named_modules())
        self.step_bias = nn.ParameterList(
            [nn.Parameter(torch.zeros(len(self.timesteps), convs[n].out_channels)) for n in self._conv_names]
        )

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def _biases(self, step: int) -> dict:
        if not 0 <= step < self.num_steps:
            raise IndexError(f"step {step} out of range for a {self.num_steps}-step student")
        convs = dict(self.net.named_modules())
        return {f"{n}.bias": convs[n].bias + table[step] for n, table in zip(self._conv_names, self.step_bias)}

    def forward(self, x, step: int):
        return functional_call(self.net, self._biases(step), (x,))

    @torch.no_grad()
    def step_module(self, step: int) -> StudentNet:
        """Plain network for step `step` (input (1,14,S,S) -> (1,3,S,S)), biases folded, in eval mode."""
        biases = self._biases(step)
        net = copy.deepcopy(self.net).eval()
        modules = dict(net.named_modules())
        for key, value in biases.items():
            modules[key[: -len(".bias")]].bias.copy_(value)
        for p in net.parameters():
            p.requires_grad_(False)
        return net

    # --- save_pretrained-style persistence ---------------------------------------------------------
    def config(self) -> dict:
        return {
            "_class_name": "Student",
            "preset": self.preset.to_dict(),
            "resolution": self.resolution,
            "timesteps": self.timesteps,
            "in_channels": IN_CHANNELS,
            "out_channels": OUT_CHANNELS,
            "prediction": "x0",
            "alphas_cumprod": self.alphas_cumprod,
            "keypoint_maps": self.keypoint_maps,
        }

    @classmethod
    def from_config(cls, config: dict) -> "Student":
        p = dict(config["preset"])
        p["channels"], p["res_blocks"] = tuple(p["channels"]), tuple(p["res_blocks"])
        return cls(StudentPreset(**p), config["timesteps"], config["resolution"],
                   config.get("alphas_cumprod"), config.get("keypoint_maps"))


@dataclass
class Budget:
    preset: str
    resolution: int
    params: int  # parameters of one step network (conv weights + folded biases)
    step_bias_params: int  # extra per-step bias table entries (folded away at export)
    macs: int  # multiply-accumulates per step, counted by hooks on a real forward
    peak_activation_bytes_int8: int  # largest (input + output) tensor pair of any conv, at 1 byte/value
    max_params: int | None = None
    max_macs: int | None = None
    per_layer: list = field(default_factory=list)

    @property
    def within(self) -> bool:
        return (self.max_params is None or self.params <= self.max_params) and (
            self.max_macs is None or self.macs <= self.max_macs
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("per_layer")
        d["within_budget"] = self.within
        return d


def count_macs(net: nn.Module, resolution: int, in_channels: int = IN_CHANNELS) -> tuple[int, int, list]:
    """(MACs, peak conv in+out bytes at int8, per-layer rows) from forward hooks on one real forward pass.

    Works for any single-input conv net (the pose model uses it too)."""
    rows = []

    def hook(module, inputs, output, name=None):
        cin = module.in_channels // module.groups
        kh, kw = module.kernel_size
        macs = output[0].numel() * cin * kh * kw  # per sample: every output value is cin*kh*kw MACs
        rows.append((name, tuple(inputs[0].shape[1:]), tuple(output.shape[1:]), macs,
                     inputs[0][0].numel() + output[0].numel()))

    handles = [
        m.register_forward_hook(lambda mod, i, o, n=n: hook(mod, i, o, n))
        for n, m in net.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    try:
        with torch.no_grad():
            net(torch.zeros(1, in_channels, resolution, resolution))
    finally:
        for h in handles:
            h.remove()
    return sum(r[3] for r in rows), max(r[4] for r in rows), rows


def budget(preset: StudentPreset | str, num_steps: int = 1, resolution: int | None = None) -> Budget:
    preset = get_preset(preset) if isinstance(preset, str) else preset
    res = int(resolution or preset.resolution)
    student = Student(preset, list(range(num_steps - 1, -1, -1)), res)
    net = student.step_module(0)
    macs, peak, rows = count_macs(net, res)
    return Budget(
        preset=preset.name,
        resolution=res,
        params=sum(p.numel() for p in net.parameters()),
        step_bias_params=sum(p.numel() for p in student.step_bias.parameters()),
        macs=macs,
        peak_activation_bytes_int8=peak,
        max_params=preset.max_params,
        max_macs=preset.max_macs,
        per_layer=rows,
    )


def format_budget(b: Budget, per_layer: bool = False) -> str:
    lim_p = f" (budget {b.max_params:,})" if b.max_params else ""
    lim_m = f" (budget {b.max_macs:,})" if b.max_macs else ""
    lines = [
        f"student preset {b.preset} at {b.resolution}x{b.resolution}",
        f"  parameters per step network: {b.params:,}{lim_p}",
        f"  MACs per step:               {b.macs:,}{lim_m}",
        f"  per-step bias table:         {b.step_bias_params:,} values (folded into conv biases at export)",
        f"  largest conv in+out (int8):  {b.peak_activation_bytes_int8:,} bytes",
        f"  within budget:               {'yes' if b.within else 'NO'}",
    ]
    if per_layer:
        lines.append(f"  {'layer':<24} {'input':>14} {'output':>14} {'MACs':>12}")
        for name, ishape, oshape, macs, _ in b.per_layer:
            lines.append(f"  {name:<24} {str(ishape):>14} {str(oshape):>14} {macs:>12,}")
    return "\n".join(lines)
