"""`toolkit quantize` for a pose run: the same NNCF QAT -> ONNX-QDQ -> fit check -> .tflite path as the student.

The pose network is already a plain single-input net (`PoseNet.export_module()`); what this module adds is its
real inputs: augmented 96x96 views of the run's own training regions (`train_regions.npz`, the anonymized
pixels the model was trained on), so calibration never needs the original photos.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from toolkit.pose import data as D
from toolkit.pose.train import REGIONS_FILE, STAGE


class PoseInputs:
    """`sample_inputs(n, seed) -> (n, 3, S, S)` float views in [-1, 1] from a pose run's training regions."""

    def __init__(self, run_dir):
        from toolkit.pose.model import PoseNet

        run_dir = Path(run_dir)
        self.net = PoseNet.from_pretrained(run_dir).eval()
        path = run_dir / REGIONS_FILE
        if not path.exists():
            raise FileNotFoundError(f"{run_dir}: {REGIONS_FILE} is missing; quantization needs the run's training "
                                    "regions for calibration (re-run `toolkit pose train`)")
        self.regions = D.Regions.load(path)
        if len(self.regions) == 0:
            raise ValueError(f"{path}: holds no training regions")

    def sample_inputs(self, n: int, seed: int):
        rng = np.random.default_rng(int(seed))
        if self.net.multi_person:  # the frames it is trained on: 0-4 people composed from the regions
            from toolkit.pose.multi import compose_frames

            imgs, *_ = compose_frames(self.regions, int(n), rng, self.net.resolution)
        elif self.net.verifier:  # the verifier's own training frames (toolkit.pose.heads)
            from toolkit.pose.heads import compose_frames as compose_verifier_frames

            imgs, *_ = compose_verifier_frames(self.regions, int(n), rng, self.net.resolution)
        else:
            imgs, *_ = D.random_views(self.regions, int(n), rng, self.net.resolution)
        return D.to_model_input(imgs)


def quantize_pose(model_run, target: str, out, settings, tflite: bool = True, progress: bool = True) -> dict:
    """Quantize a pose run for `target`; writes a "quantized" artifact (model_kind "pose") and returns its manifest.

    The manifest lists the network under `steps["0"]` like a one-step student, so `toolkit export` and the
    quantize table read it unchanged.
    """
    from toolkit.artifacts import read_manifest, write_manifest
    from toolkit.boards import load_board
    from toolkit.deploy.quantize import quantize_and_export, settings_dict

    model_run, out = Path(model_run), Path(out)
    board = load_board(target)
    source = read_manifest(model_run, expect_stage=STAGE)
    if out.resolve() == model_run.resolve():
        raise ValueError("--out must differ from --model (the input run is never overwritten)")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: exists and is not empty; pick a new --out directory")
    inputs = PoseInputs(model_run)
    net = inputs.net
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    print(f"pose model: quantizing for {board.name}", file=sys.stderr)
    try:
        result = quantize_and_export(net.export_module(), inputs.sample_inputs, out / "step0", board, settings,
                                     data_range=None, tflite=tflite, progress=progress)
    except BaseException:
        if created:
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    verifier = None
    if net.verifier:  # its int8 threshold, calibrated on the int8 outputs (toolkit.pose.heads)
        from toolkit.deploy.ir import load_qdq
        from toolkit.pose.heads import calibrate_int8

        seed = ((source.get("verifier") or {}).get("seed"))
        if seed is None:
            raise ValueError(f"--model {model_run}: a verifier run without its calibration (`verifier` in "
                             "toolkit.json); retrain it with this toolkit")
        verifier = calibrate_int8(load_qdq(out / "step0" / result["files"]["qdq_onnx"]), inputs.regions, int(seed),
                                  size=net.resolution)
    result["files"] = {name: f"step0/{rel}" for name, rel in result["files"].items()}
    S, H = net.resolution, net.heatmap_size
    return write_manifest(
        out, "quantized",
        source={"path": str(model_run.resolve()), "stage": STAGE, "manifest": source},
        model_kind="pose",
        target=board.name,
        board=asdict(board),
        resolution=S,
        input={"shape": [1, 3, S, S], "layout": "NCHW", "content": "RGB frame, uint8 p -> p / 127.5 - 1"},
        output={"shape": [1, net.out_channels, H, H], "outputs": net.preset.outputs,
                "content": "head centre, 7 visibilities, 14 keypoint offsets (toolkit.pose.multi)"
                if net.multi_person else "face-presence logit per cell (toolkit.pose.heads)" if net.verifier
                else "keypoint heatmaps (toolkit.keypoints.NAMES order)",
                "stride": net.stride, "decoding": net.config()["decoding"]},
        steps={"0": result},
        verifier=verifier,
        quantization=settings_dict(settings),
        calibration={"data": str((model_run / REGIONS_FILE).resolve()), "people": len(inputs.regions),
                     "held_out": "training regions, other seeds (other augmented views)",
                     "inputs": "augmented views of the run's (anonymized) training regions"},
        tflite_note="recalibrated by the TFLite converter (onnx2tf drops QDQ); the ONNX-QDQ file is canonical"
        if tflite else "not produced (--no-tflite)",
        seconds=round(time.time() - t0, 1),
    )
