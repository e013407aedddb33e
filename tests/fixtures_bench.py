"""Fixtures for the firmware and `toolkit bench` tests."""

import os

import pytest


@pytest.fixture(scope="session")
def bench_model(request):
    """The int8 QDQ student to benchmark: the quantized student run, or `TK_BENCH_MODEL=path` (a quantize run
    or a QDQ .onnx)."""
    return os.environ.get("TK_BENCH_MODEL") or request.getfixturevalue("quantized_student_run")


@pytest.fixture(scope="session")
def bench_firmware_dir(tmp_path_factory):
    """A private copy of firmware/ to export into and build, so tests never modify the repository's
    firmware/generated/."""
    from toolkit.bench.firmware import copy_project

    return copy_project(tmp_path_factory.mktemp("firmware") / "fw")
