"""A library that gives up inside a stage becomes one clear error naming the stage, the command and the
library's own last lines; no library code changes the process's working directory."""

import ast
import sys
from pathlib import Path

import pytest

from toolkit.cli import main

TOOLKIT = Path(__file__).resolve().parent.parent / "toolkit"


def test_onnx2tf_failure_names_the_library_and_keeps_its_last_lines(tmp_path, monkeypatch):
    from toolkit.deploy.tflite_export import onnx_to_saved_model
    from toolkit.errors import LibraryFailure

    monkeypatch.chdir(tmp_path)
    Path("broken.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(LibraryFailure) as failure:
        onnx_to_saved_model("broken.onnx", "saved")  # relative paths, as a user types them
    message = str(failure.value)
    assert message.startswith("onnx2tf failed (exit status 1) converting")
    assert str(tmp_path / "broken.onnx") in message and "its last output lines:" in message
    # onnx2tf's own words (its reason for giving up) are in the message, not lost in a redirected buffer
    assert "onnx.ModelProto" in message  # its DecodeError, the real reason
    assert Path.cwd() == tmp_path and list(tmp_path.iterdir()) == [tmp_path / "broken.onnx"]


def test_library_failure_in_a_verb_prints_stage_command_and_reason(monkeypatch, capsys):
    import toolkit.boards_cli
    from toolkit.errors import LibraryFailure

    def give_up(args):
        raise LibraryFailure("somelib", "doing its job", 1, "line one\nsomelib: the real reason\n")

    monkeypatch.setattr(toolkit.boards_cli, "run", give_up)
    assert main(["boards"]) == 2
    err = capsys.readouterr().err
    assert "toolkit boards: error: somelib failed (exit status 1) doing its job" in err
    assert "somelib: the real reason" in err and "command: toolkit boards" in err


def test_sys_exit_inside_a_verb_is_reported_not_silent(monkeypatch, capsys):
    import toolkit.boards_cli

    def library_exits(args):
        print("somelib: cannot go on")
        sys.exit(1)

    monkeypatch.setattr(toolkit.boards_cli, "run", library_exits)
    assert main(["boards"]) == 2
    captured = capsys.readouterr()
    assert "somelib: cannot go on" in captured.out
    assert "toolkit boards: error: a library called sys.exit(1) during `toolkit boards`" in captured.err


@pytest.mark.parametrize("how", ["exit", "raise"])
def test_demo_names_the_failed_stage_and_how_to_resume(monkeypatch, tmp_path, capsys, how):
    import toolkit.demo

    def first(dest):
        """a stage that works"""
        dest.mkdir()

    def second(dest):
        """a stage whose library gives up"""
        if how == "exit":
            sys.exit(3)
        raise OSError("disk on fire")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(toolkit.demo, "_stages", lambda out, size, threads, sensor: [
        ("first", first, out / "first"), ("second", second, out / "second")])
    if how == "exit":
        assert main(["demo", "--out", "demo-out", "--fast"]) == 2
    else:
        with pytest.raises(OSError):
            main(["demo", "--out", "demo-out", "--fast"])
    err = capsys.readouterr().err
    assert "demo: stage 'second' failed" in err
    assert "run `toolkit demo --out demo-out --fast` again to resume from 'second'" in err
    assert (tmp_path / "demo-out" / ".done" / "first").exists()
    assert not (tmp_path / "demo-out" / ".done" / "second").exists()


def test_no_library_code_changes_the_working_directory():
    calls = []
    for path in TOOLKIT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("chdir", "fchdir"):
                calls.append(f"{path.relative_to(TOOLKIT.parent)}:{node.lineno}")
    assert not calls, f"library code changes the working directory: {calls}"
