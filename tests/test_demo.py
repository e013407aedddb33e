"""The README's main command at its smallest setting: the whole chain on the bundled photos, then resume."""

import json

from toolkit.cli import main


def test_demo_fast_runs_whole_chain_and_resumes(tmp_path, assets, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--fast"]) == 0
    summary = (out / "README.md").read_text()
    bench = json.loads((out / "bench" / "results.json").read_text())["summary"]
    assert bench["all_bit_exact"] is True and bench["unit"] == "icount_ticks"
    evaluation = json.loads((out / "eval" / "eval.json").read_text())["summary"]
    assert set(evaluation) == {"ddpm", "student", "blur", "pixelate", "mask"}
    assert all(figures["faces"] > 0 for figures in evaluation.values())
    assert (out / "eval" / "report.html").exists() and "On-device benchmark" in summary
    assert list((out / "anonymized-teacher").glob("*.png")) and list((out / "export").glob("*.c"))

    # Run again: every stage is found finished and skipped.
    capsys.readouterr()
    assert main(["demo", "--out", str(out), "--fast"]) == 0
    assert capsys.readouterr().out.count("done earlier, skipped") == 12
