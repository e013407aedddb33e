"""The README's main command at its smallest setting: the whole chain on the bundled photos, then resume.

It runs as a user types it, with a relative --out, and every other verb then runs on its artifacts with
relative paths from another working directory: a path bug (a library changing the cwd, a path resolved
against the wrong folder) cannot come back unnoticed.
"""

import json
from pathlib import Path

from toolkit.cli import main


def test_demo_fast_runs_whole_chain_and_resumes(tmp_path, assets, capsys, monkeypatch):
    from toolkit.assets import sha256_file
    from toolkit.cli import VERBS
    from toolkit.demo import SIZES, _stages
    from toolkit.images import list_images

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "demo"
    assert main(["demo", "--out", "demo", "--fast", "--threads", "1"]) == 0
    log = capsys.readouterr().out
    summary = (out / "README.md").read_text()

    # The generator never sees the faces it anonymizes: its dataset comes from the LFW photos only, and no
    # file of them has the content of an anonymized photo.
    dataset = json.loads((out / "dataset" / "toolkit.json").read_text())
    assert Path(dataset["images"]).resolve() == (out / "training-photos").resolve()
    assert dataset["num_faces"] >= 50 and "training faces:" in log
    training = {sha256_file(p) for p in list_images([out / "training-photos"])}
    scenes = {sha256_file(p) for p in list_images([out / "training-backgrounds"])}
    anonymized = {sha256_file(p) for p in list_images([out / "photos"])}
    assert len(training) == 100 and len(anonymized) >= 10 and not (training | scenes) & anonymized
    assert dataset["crop"]["padding"] == "backgrounds" and len(dataset["backgrounds"]["used"]) > 100

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
    stages = _stages(Path("demo"), SIZES["fast"], 1)
    assert main(["demo", "--out", "demo", "--fast", "--threads", "1"]) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == len(stages)
    assert "Not run: `toolkit demo --sensor`" in summary

    # --sensor on the same folder: only the multi-person stages run; every delivered frame is checked against
    # the teacher (a face left fails the stage), and the demo README gets the per-people table.
    assert main(["demo", "--out", "demo", "--fast", "--threads", "1", "--sensor"]) == 0
    log = capsys.readouterr().out
    assert log.count("done earlier, skipped") == len(stages)
    sensor = json.loads((out / "sensor" / "results.json").read_text())
    assert sensor["verifier"] and sensor["summary"]["all_bit_exact"]
    assert sensor["summary"]["delivered_with_face_left"] == 0 and sensor["summary"]["fail_closed"]
    assert {r["people_truth"] for r in sensor["results"] if "people_truth" in r} == {1, 2, 3, 4}
    summary = (out / "README.md").read_text()
    assert "Anonymize at the sensor: multi-person frames (qemu-m7)" in summary
    assert "| **all** | 4 |" in summary

    # The verbs the demo does not run, on its artifacts, with relative paths from another folder.
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    others = [["detect", "../demo/photos/obama.jpg", "--json", "detect.json"],
              ["data", "check", "../demo/dataset"],
              ["sample", "--model", "../demo/teacher", "--data", "../demo/dataset", "--out", "samples", "-n", "2",
               "--steps", "2"],
              ["boards"]]
    for argv in others:
        assert main(argv) == 0, argv
    assert json.loads(Path("detect.json").read_text())
    assert len(list(Path("samples/images").glob("*.png"))) == 2
    ran = {argv[0] for argv in others} | {a[0] for _, a, _ in stages if isinstance(a, list)} | {"demo"}
    assert ran == set(VERBS), f"verbs never run with relative paths: {set(VERBS) - ran}"
