"""`toolkit eval` end to end on real photos: figures sane per method, report written."""

import json
import shutil

import pytest

from toolkit.cli import main


@pytest.fixture(scope="module")
def eval_images(tmp_path_factory, assets):
    from toolkit import assets as _assets

    folder = tmp_path_factory.mktemp("eval_images")
    for name in ("astronaut", "obama", "biden"):
        src = _assets.sample_photo(name)
        shutil.copy(src, folder / src.name)
    return folder


def test_eval_reports_sane_figures_per_method(tmp_path, eval_images, tiny_teacher_run):
    out = tmp_path / "report"
    rc = main(["eval", "--images", str(eval_images), "--methods", "ddpm,blur,mask", "--blur-sigma", "1",
               "--teacher", str(tiny_teacher_run), "--steps", "10", "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "eval.json").read_text())
    summary = result["summary"]
    assert summary["blur"]["faces"] == summary["mask"]["faces"] == summary["ddpm"]["faces"] >= 3
    assert summary["mask"]["identity_faces"] == summary["mask"]["faces"]  # portraits: all faces big enough
    # A light blur (sigma 1 px) leaves the person recognizable; a solid mask does not.
    assert summary["blur"]["unrecognized_share"] < 0.5
    assert summary["mask"]["unrecognized_share"] == 1.0
    # Replacement never touches pixels outside the expanded face box.
    assert summary["ddpm"]["psnr_outside_mean"] == float("inf")
    assert summary["ddpm"]["ssim_outside_mean"] == pytest.approx(1.0, abs=1e-9)
    assert summary["mask"]["psnr_outside_mean"] == float("inf")
    # KID on the same faces, with a bootstrap interval: a light blur is closer to the originals than a mask
    for name in ("ddpm", "blur", "mask"):
        f = summary[name]
        assert f["realism_faces"] == f["faces"] and f["kid_faces_ci"][0] <= f["kid_faces_ci"][1], f
    assert summary["blur"]["kid_faces"] < summary["mask"]["kid_faces"]
    assert "KID" in (out / "report.md").read_text()
    for name in ("report.md", "report.html", "faces.csv", "identity_distance_mean.png"):
        assert (out / name).stat().st_size > 0
    assert len(list((out / "grids").glob("*.png"))) == 3


def test_eval_refuses_model_method_without_model(tmp_path, eval_images, capsys):
    rc = main(["eval", "--images", str(eval_images), "--methods", "student", "--out", str(tmp_path / "r")])
    assert rc == 2
    assert "--student" in capsys.readouterr().err


def test_eval_reports_the_int8_student_beside_the_float_one(tmp_path, eval_images, tiny_student_run,
                                                            quantized_student_run):
    out = tmp_path / "report"
    rc = main(["eval", "--images", str(eval_images), "--methods", "student,student-int8", "--no-fid",
               "--student", str(tiny_student_run), "--student-int8", str(quantized_student_run), "--out", str(out)])
    assert rc == 0
    result = json.loads((out / "eval.json").read_text())
    summary = result["summary"]
    assert set(summary) == {"student", "student-int8"}
    assert summary["student-int8"]["faces"] == summary["student"]["faces"] >= 3
    assert summary["student-int8"]["psnr_outside_mean"] == float("inf")  # replacement stays inside the box
    assert summary["student-int8"]["time_per_face_s"] > 0
    # Both generate faces: identity measured on every portrait face.
    assert summary["student-int8"]["identity_faces"] == summary["student-int8"]["faces"]
    assert "student-int8" in (out / "report.md").read_text()


def test_eval_refuses_a_run_of_the_wrong_kind(tmp_path, eval_images, tiny_student_run, capsys):
    rc = main(["eval", "--images", str(eval_images), "--methods", "student-int8",
               "--student-int8", str(tiny_student_run), "--out", str(tmp_path / "r")])
    assert rc == 2
    assert "needs a 'quantized' run" in capsys.readouterr().err
