"""Fixtures for the int8 reference / `toolkit export` tests: small QDQ models quantized on real image crops.

Two models are built (and quantized with onnxruntime's static QDQ quantizer, per-channel int8 weights):
- `ExportStudentLike`: the distilled student's shape (14-channel input, conv/ReLU/ReLU6, stride-2 down,
  nearest upsample, skip concat, residual add, 3-channel output);
- `ExportEveryKernel`: uses every kernel of tkengine (general 5x5 and 3x1 conv, 3x3 stride 1 and 2 with and
  without padding, 1x1, depthwise stride 1 and 2, add, concat with requantization, nearest upsample, pad,
  ReLU and ReLU6).
Inputs are crops of skimage's astronaut photo; the student's 14 channels are built like the real student's
(noisy/masked face crop, mask, 7 keypoint heatmaps) from the photo's reference keypoints.
"""

from pathlib import Path

import numpy as np
import pytest

from toolkit.assets import ASTRONAUT_KEYPOINTS


def astronaut_crops(n: int, size: int = 32, seed: int = 0) -> list:
    """`n` RGB crops (3, size, size) in [-1, 1] around the astronaut's head, at random offsets and scales."""
    from skimage import data
    from skimage.transform import resize

    img = data.astronaut().astype(np.float32) / 255.0
    rng = np.random.default_rng(seed)
    crops = []
    for _ in range(n):
        side = int(rng.integers(96, 320))
        cy, cx = ASTRONAUT_KEYPOINTS[0][::-1] + rng.normal(0, 40, 2)
        y0 = int(np.clip(cy - side / 2, 0, 512 - side))
        x0 = int(np.clip(cx - side / 2, 0, 512 - side))
        crop = resize(img[y0:y0 + side, x0:x0 + side], (size, size), anti_aliasing=True)
        crops.append((crop.transpose(2, 0, 1) * 2 - 1).astype(np.float32))
    return crops


def student_inputs(n: int, size: int = 32, seed: int = 0) -> list:
    """(1, 14, size, size) inputs like the student's: noisy masked crop (3), masked crop (3), mask (1),
    7 keypoint heatmaps, from real astronaut crops."""
    from skimage import data
    from skimage.transform import resize

    img = data.astronaut().astype(np.float32) / 255.0
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        side = int(rng.integers(160, 320))
        y0 = int(np.clip(150 - side / 2 + rng.normal(0, 20), 0, 512 - side))
        x0 = int(np.clip(215 - side / 2 + rng.normal(0, 20), 0, 512 - side))
        crop = resize(img[y0:y0 + side, x0:x0 + side], (size, size), anti_aliasing=True).transpose(2, 0, 1) * 2 - 1
        pts = (ASTRONAUT_KEYPOINTS.astype(np.float32) - [x0, y0]) * size / side
        mask = np.ones((1, size, size), np.float32)
        fx0, fy0 = pts[:5].min(0) - size * 0.08
        fx1, fy1 = pts[:5].max(0) + size * 0.08
        mask[:, max(int(fy0), 0):int(fy1) + 1, max(int(fx0), 0):int(fx1) + 1] = 0
        t = float(rng.uniform(0.2, 0.9))
        noisy = np.sqrt(1 - t) * crop + np.sqrt(t) * rng.standard_normal(crop.shape)
        yy, xx = np.mgrid[0:size, 0:size]
        heat = np.exp(-((xx[None] - pts[:, 0, None, None]) ** 2 + (yy[None] - pts[:, 1, None, None]) ** 2)
                      / (2 * (size / 32) ** 2))
        x = np.concatenate([noisy * mask + (1 - mask) * rng.standard_normal(crop.shape), crop * mask, mask * 2 - 1,
                            heat * 2 - 1])
        out.append(x[None].astype(np.float32))
    return out


def _torch_models():
    import torch
    from torch import nn
    import torch.nn.functional as F

    class ExportStudentLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(14, 16, 3, padding=1)
            self.c2 = nn.Conv2d(16, 24, 3, stride=2, padding=1)
            self.c3 = nn.Conv2d(24, 24, 3, padding=1)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.c4 = nn.Conv2d(40, 16, 3, padding=1)
            self.c5 = nn.Conv2d(16, 3, 1)

        def forward(self, x):
            a = torch.relu(self.c1(x))
            b = torch.relu(self.c2(a))
            b = F.relu6(self.c3(b)) + b
            c = torch.cat([self.up(b), a], 1)
            return self.c5(torch.relu(self.c4(c)))

    class ExportEveryKernel(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0 = nn.Conv2d(3, 8, 5, padding=2)  # general conv, padded
            self.dw = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)  # depthwise stride 2
            self.pw = nn.Conv2d(8, 16, 1)  # 1x1
            self.c3 = nn.Conv2d(16, 16, 3, padding=1)  # 3x3 stride 1
            self.c4 = nn.Conv2d(16, 8, 3, stride=2)  # 3x3 stride 2 after an explicit pad
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.c5 = nn.Conv2d(24, 8, (3, 1), padding=(1, 0))  # general, non-square
            self.dw2 = nn.Conv2d(8, 8, 3, padding=1, groups=8)  # depthwise stride 1
            self.c6 = nn.Conv2d(8, 3, 1)

        def forward(self, x):
            a = F.relu6(self.c0(x))
            b = torch.relu(self.pw(torch.relu(self.dw(a))))
            c = torch.relu(self.c3(b) + b)
            d = torch.relu(self.c4(F.pad(c, (1, 1, 1, 1))))
            u = self.up(d)  # two consumers: stays a real upsample (the student's is folded into its concat)
            e = torch.cat([u, b], 1)
            f = torch.relu(self.dw2(torch.relu(self.c5(e)) + u))
            return self.c6(f)

    return ExportStudentLike, ExportEveryKernel


def build_qdq_model(kind: str, out_dir, activation_type: str = "int8", seed: int = 0, size: int = 32) -> Path:
    """Export `kind` ('student' or 'every') to ONNX and quantize it to QDQ on real crops; returns the path."""
    import torch
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    student_cls, every_cls = _torch_models()
    torch.manual_seed(seed)
    model = (student_cls if kind == "student" else every_cls)().eval()
    calib = (student_inputs(12, size, seed=seed + 1) if kind == "student"
             else [c[None] for c in astronaut_crops(12, size, seed=seed + 1)])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    float_path = out_dir / f"{kind}{size}_float.onnx"
    torch.onnx.export(model, torch.from_numpy(calib[0]), str(float_path), opset_version=17, dynamo=False,
                      input_names=["x"], output_names=["y"])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {"x": x}

    q_path = out_dir / f"{kind}{size}_{activation_type}_qdq.onnx"
    act = QuantType.QInt8 if activation_type == "int8" else QuantType.QUInt8
    quantize_static(str(float_path), str(q_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=act, weight_type=QuantType.QInt8)
    return q_path


@pytest.fixture(scope="session")
def export_models(tmp_path_factory):
    """{'student': path, 'every': path, 'every_u8': path} of QDQ ONNX models."""
    d = tmp_path_factory.mktemp("export_models")
    return {
        "student": build_qdq_model("student", d),
        "every": build_qdq_model("every", d),
        "every_u8": build_qdq_model("every", d, activation_type="uint8"),
    }


@pytest.fixture(scope="session")
def export_test_inputs():
    """Real inputs not used for calibration: {'student': [...], 'every': [...]} as NCHW float batches of 1."""
    return {"student": student_inputs(4, seed=100), "every": [c[None] for c in astronaut_crops(4, seed=100)]}
