"""Full-int8 `.tflite` for TFLite Micro, and a check that it runs in the TFLM Python interpreter.

Path: float ONNX → onnx2tf (float SavedModel, NHWC) → tf.lite.TFLiteConverter full int8 with a
representative dataset. onnx2tf folds QDQ nodes away, so the QAT scales cannot reach this file: its
activation ranges are recalibrated by the converter (the manifest says so). The ONNX-QDQ file stays the
canonical int8 artifact; this one is for users of the TFLM runtime.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))


# onnx2tf runs in a child process: it writes helper files into its working directory, reads a sample-data file
# from there, and reports failures with sys.exit(1) and a message on stdout. A child of its own contains all three
# without touching this process's working directory (paths are resolved before it starts).
_ONNX2TF_CHILD = """
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
# onnx2tf downloads sample photos for its output self-check whenever every input is an NHWC 3-channel image (the
# pose model's RGB frame); it reads a local copy from the working directory first. The values only feed that check.
np.save("calibration_image_sample_data_20x128x128x3_float32.npy",
        np.random.default_rng(0).random((20, 128, 128, 3), dtype=np.float32))
import onnx2tf
onnx2tf.convert(input_onnx_file_path=sys.argv[1], output_folder_path=sys.argv[2], non_verbose=True,
                verbosity="error",
                # torch's exporter already folds constants; onnxsim would add ~30 s per model for nothing
                not_use_onnxsim=True)
"""


def onnx_to_saved_model(float_onnx, out_dir) -> Path:
    """onnx2tf conversion (float only; its own int8 output mis-handles some graphs, so we quantize in TF)."""
    import subprocess
    import sys

    from toolkit.errors import LibraryFailure

    float_onnx, out_dir = Path(float_onnx).resolve(), Path(out_dir).resolve()
    if not float_onnx.is_file():
        raise FileNotFoundError(f"no ONNX file to convert at {float_onnx}")
    with tempfile.TemporaryDirectory(prefix="toolkit-onnx2tf-cwd-") as cwd:
        proc = subprocess.run([sys.executable, "-c", _ONNX2TF_CHILD, str(float_onnx), str(out_dir)], cwd=cwd,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise LibraryFailure("onnx2tf", f"converting {float_onnx} to a TF SavedModel", proc.returncode, output)
    if not (out_dir / "saved_model.pb").exists():
        raise LibraryFailure("onnx2tf", f"converting {float_onnx}: it wrote no SavedModel to {out_dir}",
                             proc.returncode, output)
    return out_dir


def saved_model_to_int8_tflite(saved_model_dir, representative_nchw: np.ndarray, path) -> Path:
    """Full-integer conversion: int8 in, int8 out, int8 kernels only (what TFLM's reference kernels run)."""
    import tensorflow as tf

    rep = nchw_to_nhwc(representative_nchw.astype(np.float32))

    def representative():
        for i in range(rep.shape[0]):
            yield [rep[i : i + 1]]

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    path = Path(path)
    path.write_bytes(converter.convert())
    return path


def float_onnx_to_int8_tflite(float_onnx, representative_nchw: np.ndarray, path) -> Path:
    """float ONNX → int8 .tflite; the intermediate SavedModel lives in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="toolkit-onnx2tf-") as tmp:
        saved = onnx_to_saved_model(float_onnx, Path(tmp) / "saved_model")
        return saved_model_to_int8_tflite(saved, representative_nchw, path)


class TflmModel:
    """An int8 .tflite in the TFLite Micro interpreter (the same kernels as on the MCU, run on the host)."""

    def __init__(self, path, arena_size: int | None = None):
        from tflite_micro.python.tflite_micro import runtime

        self.path = Path(path)
        kwargs = {"arena_size": arena_size} if arena_size else {}
        self.interpreter = runtime.Interpreter.from_bytes(self.path.read_bytes(), **kwargs)
        self.input = self.interpreter.get_input_details(0)
        self.output = self.interpreter.get_output_details(0)

    @property
    def arena_used_bytes(self) -> int:
        """Arena bytes TFLM allocated for this model (its allocation recording: head + tail)."""
        import re

        text = _capture_stderr(self.interpreter.print_allocations)
        found = re.search(r"Arena allocation total (\d+) bytes", text)
        if not found:
            raise RuntimeError(f"could not read the TFLM arena size from:\n{text[:1000]}")
        return int(found.group(1))

    def run(self, inputs_nchw: np.ndarray) -> np.ndarray:
        """Float NCHW in, float NCHW out; quantization at the edges uses the model's own scales."""
        q_in, q_out = self.input["quantization_parameters"], self.output["quantization_parameters"]
        in_scale, in_zp = q_in["scales"][0], q_in["zero_points"][0]
        out_scale, out_zp = q_out["scales"][0], q_out["zero_points"][0]
        outs = []
        for x in nchw_to_nhwc(inputs_nchw.astype(np.float32)):
            q = np.clip(np.round(x / in_scale) + in_zp, -128, 127).astype(np.int8)[None]
            self.interpreter.set_input(q, 0)
            self.interpreter.invoke()
            y = self.interpreter.get_output(0).astype(np.float32)
            outs.append((y - out_zp) * out_scale)
        return nhwc_to_nchw(np.concatenate(outs))


def _capture_stderr(fn) -> str:
    """TFLM's MicroPrintf writes to fd 2 from C++: capture at the file-descriptor level (flushing C stdio)."""
    import ctypes
    import sys

    libc = ctypes.CDLL(None)

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            fn()
        finally:
            libc.fflush(None)
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        return tmp.read().decode(errors="replace")


def remove_tree(path) -> None:
    shutil.rmtree(path, ignore_errors=True)
