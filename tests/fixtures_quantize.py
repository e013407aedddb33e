"""Shared fixture: `quantized_student_run`, `tiny_student_run` quantized for stm32f405 by `toolkit quantize`."""

import pytest

QUANT_TARGET = "stm32f405"
QUANT_QAT_STEPS = 40
QUANT_CALIB = 16
QUANT_EVAL = 8


@pytest.fixture(scope="session")
def quantized_student_run(tmp_path_factory, tiny_student_run):
    """Path of a "quantized" artifact made from `tiny_student_run` by the `toolkit quantize` CLI (read-only).

    Both step networks are quantized for QUANT_TARGET: NNCF PTQ on QUANT_CALIB real crops, QUANT_QAT_STEPS
    fine-tuning steps, then `step<k>/model_int8_qdq.onnx` (QDQ, the input of `toolkit export`),
    `step<k>/model_float.onnx`, `step<k>/model_int8.tflite` and `step<k>/nncf/`; figures and file names per
    step in `toolkit.json["steps"][str(k)]`.
    """
    from toolkit.cli import main

    out = tmp_path_factory.mktemp("quantized") / f"tiny-2step-{QUANT_TARGET}"
    rc = main([
        "--debug", "quantize", "--model", str(tiny_student_run), "--target", QUANT_TARGET, "--out", str(out),
        "--qat-steps", str(QUANT_QAT_STEPS), "--calib", str(QUANT_CALIB), "--eval", str(QUANT_EVAL),
        "--threads", "1", "--no-progress",
    ])
    assert rc == 0, "toolkit quantize failed on the tiny student (see captured stderr)"
    return out
