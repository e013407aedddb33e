"""The README's main command at its smallest setting: the whole chain on the bundled photos, then resume."""

import json
from pathlib import Path

from toolkit.cli import main


def test_demo_fast_runs_whole_chain_and_resumes(tmp_path, assets, capsys):
    from toolkit.assets import sha256_file
    from toolkit.demo import SIZES, _stages
    from toolkit.images import list_images

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--fast", "--threads", "1"]) == 0
    log = capsys.readouterr().out
    summary = (out / "README.md").read_text()

    # The generator never sees the faces it anonymizes: its dataset comes from the LFW photos only, and no
    # file of them has the content of an anonymized photo.
    dataset = json.loads((out / "dataset" / "toolkit.json").read_text())
    assert Path(dataset["images"]).resolve() == (out / "training-photos").resolve()
    assert dataset["num_faces"] >= 50 and "training faces:" in log
    training = {sha256_file(p) for p in list_images([out / "training-photos"])}
    anonymized = {sha256_file(p) for p in list_images([out / "photos"])}
    assert len(training) == 100 and len(anonymized) >= 10 and not training & anonymized

    bench = json.loads((out / "bench" / "results.json").read_text())["summary"]
    assert bench["all_bit_exact"] is True and bench["unit"] == "icount_ticks"
    evaluation = json.loads((out / "eval" / "eval.json").read_text())["summary"]
    assert set(evaluation) == {"ddpm", "student", "student-int8", "blur", "pixelate", "mask"}
    assert all(figures["faces"] > 0 for figures in evaluation.values())
    assert (out / "eval" / "report.html").exists() and "On-device benchmark" in summary
    assert list((out / "anonymized-teacher").glob("*.png")) and list((out / "export").glob("*.c"))

    # Pose: trained on student-anonymized photos, measured on held-out people, quantized for the target.
    pose = json.loads((out / "pose" / "toolkit.json").read_text())
    assert pose["stage"] == "pose" and pose["method"] == "ddpm"
    held_out = {p.name for p in list_images([out / "pose-photos" / "heldout"])}
    assert held_out and not held_out & {p.name for p in list_images([out / "pose-photos" / "train"])}
    pose_eval = json.loads((out / "pose-eval" / "pose_eval.json").read_text())
    assert 0.0 <= pose_eval["pck@0.2"] <= 1.0 and "PCK@0.2" in summary
    assert json.loads((out / "pose-int8" / "toolkit.json").read_text())["stage"] == "quantized"
    # The on-device frame pipeline ran on QEMU, agreed with the host bit for bit and refused the empty frame.
    pipeline = json.loads((out / "pipeline" / "results.json").read_text())["summary"]
    assert pipeline["all_bit_exact"] and pipeline["fail_closed"] and pipeline["fit"]["stm32h743"]["fits"]
    assert "On-device frame pipeline" in summary

    # Run again: every stage that ran is found finished and skipped.
    stages = _stages(out, SIZES["fast"], 1)
    assert main(["demo", "--out", str(out), "--fast", "--threads", "1"]) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == len(stages)
