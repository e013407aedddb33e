"""The integer lowering (toolkit.deploy.ir) and the Python int8 reference executor (toolkit.deploy.int8ref)."""

import math
from fractions import Fraction

import numpy as np
import onnx
import pytest

from toolkit.deploy import int8ref, ir


def _exact_round_half_away(x: int, m: int, shift: int) -> int:
    v = Fraction(x * m, 2 ** (31 - shift))
    r = math.floor(abs(v) + Fraction(1, 2))
    return r if v >= 0 else -r


def test_quantize_multiplier_is_q31_and_accurate():
    for real in (1e-6, 0.0003, 0.02, 0.25, 0.5, 0.7071, 0.999999999, 1.0, 3.5, 1000.0):
        m, s = ir.quantize_multiplier(real)
        assert 2**30 <= m < 2**31
        assert abs(m * 2.0 ** (s - 31) - real) <= real * 2**-30
    assert ir.quantize_multiplier(0.0) == (0, 0)
    with pytest.raises(ValueError):
        ir.quantize_multiplier(-0.5)


def test_requantization_rounds_once_half_away_from_zero():
    rng = np.random.default_rng(0)
    xs = rng.integers(-(2**24), 2**24, 400)
    for real in (0.00123, 0.0371, 0.5, 0.9, 2.75):
        m, s = ir.quantize_multiplier(real)
        got = int8ref.multiply_by_quantized_multiplier(xs, m, s)
        assert [int(g) for g in got] == [_exact_round_half_away(int(x), m, s) for x in xs]
    # exact ties: 3 * 0.5 = 1.5 -> 2 and -1.5 -> -2 (TFLite's double rounding would agree here,
    # but e.g. 32.4997 must give 32, which double rounding turns into 33)
    m, s = ir.quantize_multiplier(0.5)
    assert list(int8ref.multiply_by_quantized_multiplier(np.array([3, -3, 1, -1]), m, s)) == [2, -2, 1, -1]
    m, s = ir.quantize_multiplier(32.4997 / 10766)
    assert int(int8ref.multiply_by_quantized_multiplier(np.array([10766]), m, s)[0]) == 32


@pytest.mark.parametrize("key", ["student", "every", "every_u8"])
def test_reference_agrees_with_onnxruntime_on_real_inputs(export_models, export_test_inputs, key):
    inputs = export_test_inputs["student" if key == "student" else "every"]
    assert int8ref.compare_with_onnxruntime(export_models[key], inputs) <= 1


def test_lowering_covers_every_kernel(export_models):
    g = ir.load_qdq(export_models["every"])
    kinds = {op.kind for op in g.ops}
    assert {"conv", "depthwise", "add", "pad", "upsample", "concat"} <= kinds
    kernels = {op.params["kernel"] for op in g.ops if op.kind == "conv"}
    assert {(5, 5), (3, 3), (1, 1), (3, 1)} <= kernels
    strides = {op.params["stride"] for op in g.ops if op.kind in ("conv", "depthwise")}
    assert {(1, 1), (2, 2)} <= strides
    # relu6 after the first conv is a clamp at the quantized 6.0 (or the int8 limit)
    first = g.ops[0]
    t = g.tensors[first.output]
    assert first.params["act_min"] == max(-128, t.zero_point)
    assert first.params["act_max"] == min(127, t.zero_point + round(6.0 / t.scale))
    # weights are stored OHWI / HWC with per-channel int32 parameters
    for op in g.ops:
        if op.kind == "conv":
            assert op.params["weights"].shape[3] == g.tensors[op.inputs[0]].shape[3]
        if op.kind in ("conv", "depthwise"):
            assert op.params["multiplier"].shape == op.params["bias"].shape == (g.tensors[op.output].shape[3],)


def test_uint8_activations_become_int8_with_shifted_zero_point(export_models, export_test_inputs):
    g8 = ir.load_qdq(export_models["every"])
    gu = ir.load_qdq(export_models["every_u8"])
    assert all(-128 <= t.zero_point <= 127 for t in gu.tensors.values())
    x = export_test_inputs["every"][0]
    y8 = int8ref.run_float(g8, x)
    yu = int8ref.run_float(gu, x)
    # same float model, different calibration grids: the outputs agree to a few quantization steps
    assert np.abs(y8 - yu).max() < 6 * max(g8.tensors[g8.output].scale, gu.tensors[gu.output].scale)


def test_int8_output_tracks_the_float_model(export_models, export_test_inputs, tmp_path):
    import onnxruntime as ort

    g = ir.load_qdq(export_models["student"])
    float_path = export_models["student"].parent / "student32_float.onnx"
    sess = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"])
    for x in export_test_inputs["student"]:
        ref = sess.run(None, {"x": x})[0]
        got = int8ref.run_float(g, x)
        assert got.shape == ref.shape == (1, 3, 32, 32)
        span = ref.max() - ref.min()
        assert np.abs(got - ref).mean() < 0.03 * span
        assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.98


def test_input_output_conversions(export_models, export_test_inputs):
    g = ir.load_qdq(export_models["student"])
    x = export_test_inputs["student"][0]
    q = int8ref.quantize_input(g, x)
    assert q.dtype == np.int8 and q.shape == (1, 32, 32, 14)
    t = g.tensors[g.input]
    assert np.abs((q.astype(np.float32) - t.zero_point) * t.scale - x.transpose(0, 2, 3, 1)).max() <= t.scale / 2 + 1e-6
    with pytest.raises(ValueError, match="input shape"):
        int8ref.quantize_input(g, x[:, :3])
    with pytest.raises(ValueError, match="int8"):
        int8ref.run(g, q.astype(np.int16))
    y = int8ref.run(g, q)
    assert y.shape == (1, 32, 32, 3) and y.dtype == np.int8
    assert int8ref.dequantize_output(g, y).shape == (1, 3, 32, 32)


def test_unsupported_models_are_refused_clearly(export_models, tmp_path):
    # the float (not quantized) model
    with pytest.raises(ir.UnsupportedModelError, match="QuantizeLinear"):
        ir.load_qdq(export_models["student"].parent / "student32_float.onnx")
    # an op the engine does not have: put a Sigmoid between the last DequantizeLinear and the output
    m = onnx.load(str(export_models["student"]))
    out = m.graph.output[0].name
    for node in m.graph.node:
        for i, name in enumerate(node.output):
            if name == out:
                node.output[i] = out + "_pre"
    m.graph.node.append(onnx.helper.make_node("Sigmoid", [out + "_pre"], [out], name="head_sigmoid"))
    bad = tmp_path / "sigmoid.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(ir.UnsupportedModelError, match="Sigmoid.*head_sigmoid"):
        ir.load_qdq(bad)
    with pytest.raises(FileNotFoundError):
        ir.load_qdq(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        ir.load_qdq(junk)


def test_upsample_feeding_a_concat_is_folded_into_it(export_models, export_test_inputs):
    """The student's up(b) ++ a: the concat reads b at (y/2, x/2), the upsampled tensor is never stored."""
    g = ir.load_qdq(export_models["student"])
    assert "upsample" not in {op.kind for op in g.ops}
    (concat,) = [op for op in g.ops if op.kind == "concat"]
    assert concat.params["factors"] == [(2, 2), (1, 1)]
    assert g.tensors[concat.inputs[0]].shape == (1, 16, 16, 24)
    # the rewritten graph still agrees with onnxruntime (which runs the Resize)
    assert int8ref.compare_with_onnxruntime(export_models["student"], export_test_inputs["student"][:2], g) <= 1
