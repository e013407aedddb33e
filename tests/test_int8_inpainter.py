"""The quantized student as an inpainter: int8 step networks (bit-exact integer reference) + float glue."""

import json
import shutil

import numpy as np
import pytest
import torch

from toolkit.artifacts import ArtifactError
from toolkit.cli import main


@pytest.fixture(scope="module")
def real_crops(fdf_dir):
    """Up to 8 real held-out face crops of the students' dataset, at the students' 32 px."""
    from toolkit.data import FDFDataset

    ds = FDFDataset(fdf_dir, "val", size=32)
    if len(ds) < 4:
        ds = FDFDataset(fdf_dir, "train", size=32)
    items = [ds[i] for i in range(min(8, len(ds)))]
    return {k: torch.stack([it[k] for it in items]) for k in ("image", "mask", "keypoints", "visible")}


def _inpaint(inpainter, crops, seed=5):
    return inpainter.inpaint(crops["image"], crops["mask"], crops["keypoints"], crops["visible"], seed=seed)


def test_int8_output_is_close_to_the_float_student_but_not_equal(quantized_student_run, tiny_student_run,
                                                                   real_crops):
    from toolkit.artifacts import load_inpainter

    int8 = load_inpainter(quantized_student_run)  # the load_inpainter dispatch on stage "quantized"
    float_ = load_inpainter(tiny_student_run)
    assert type(int8.student).__name__ == "Int8StepNetworks"  # the float student's sampler, int8 networks
    assert int8.resolution == float_.resolution and int8.steps == float_.steps
    out_q, out_f = _inpaint(int8, real_crops), _inpaint(float_, real_crops)
    known = real_crops["mask"].bool().expand_as(out_q)
    assert torch.equal(out_q[known], real_crops["image"][known])  # known pixels: the input's, exactly
    hole = ~known
    diff = (out_q - out_f)[hole]
    psnr = 10 * np.log10(4.0 / float((diff**2).mean()))  # data range 2 ([-1, 1])
    assert psnr > 30, f"int8 student drifts from the float student: {psnr:.1f} dB"
    # Really int8: every generated pixel sits on the output's quantization grid, and not all equal float's.
    assert float(diff.abs().max()) > 1e-3
    # Same seed, same result; another seed, another face.
    assert torch.equal(_inpaint(int8, real_crops), out_q)
    assert not torch.equal(_inpaint(int8, real_crops, seed=6)[hole], out_q[hole])


def test_int8_steps_agree_with_onnxruntime_on_the_qdq_model(quantized_student_run, real_crops):
    """The step networks are the run's QDQ graphs: onnxruntime on the same file agrees within 1 LSB."""
    import onnxruntime as ort

    from toolkit.distill.int8_inpainter import load_int8_inpainter
    from toolkit.distill.inpainter import heatmaps, student_input

    inp = load_int8_inpainter(quantized_student_run)
    manifest = json.loads((quantized_student_run / "toolkit.json").read_text())
    maps = heatmaps(real_crops["keypoints"][:2], real_crops["visible"][:2], inp.resolution, inp.sigma_px)
    noise = torch.randn(2, 3, inp.resolution, inp.resolution, generator=torch.Generator().manual_seed(0))
    x = student_input(noise, real_crops["image"][:2], real_crops["mask"][:2], maps)
    for k in range(inp.steps):
        path = quantized_student_run / manifest["steps"][str(k)]["files"]["qdq_onnx"]
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        t_out = inp.student.graphs[k].tensors[inp.student.graphs[k].output]
        scale = t_out.scale
        ours = inp.student(x, k).numpy()
        # int8 for real: 256 levels at most, each on the output tensor's quantization grid.
        levels = ours / np.float32(scale) + t_out.zero_point
        assert np.abs(levels - np.round(levels)).max() < 1e-3 and len(np.unique(np.round(levels))) <= 256
        assert -128 <= levels.min() and levels.max() <= 127
        theirs = np.concatenate([sess.run(None, {sess.get_inputs()[0].name: xi[None]})[0] for xi in x.numpy()])
        assert np.abs(ours - theirs).max() <= scale * 1.01


def test_anonymize_cli_runs_the_quantized_student(tmp_path, quantized_student_run, sample_photos):
    from toolkit import assets

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(assets.sample_photo("astronaut"), src)
    out = tmp_path / "out"
    assert main(["anonymize", str(src), "--out", str(out), "--model", str(quantized_student_run)]) == 0
    report = json.loads((out / "anonymize_report.json").read_text())
    assert report["model_info"]["stage"] == "quantized"
    assert report["summary"]["faces_anonymized"] == report["summary"]["faces"] >= 1
    from toolkit.images import load_rgb

    before, after = load_rgb(src / "astronaut.png"), load_rgb(out / "astronaut.png")
    assert before.shape == after.shape and not np.array_equal(before, after)


def test_incomplete_or_wrong_artifacts_are_refused(tmp_path, quantized_student_run):
    from toolkit.distill.int8_inpainter import load_int8_inpainter

    one_step = tmp_path / "one-step"
    shutil.copytree(quantized_student_run, one_step)
    manifest = json.loads((one_step / "toolkit.json").read_text())
    del manifest["steps"]["1"]
    (one_step / "toolkit.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="--step all"):
        load_int8_inpainter(one_step)
    manifest["model_kind"] = "pose"
    (one_step / "toolkit.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not a face generator"):
        load_int8_inpainter(one_step)
