"""Fixtures for the firmware and `toolkit bench` tests."""

import os

import pytest


@pytest.fixture(scope="session")
def bench_model(request):
    """An int8 QDQ student to benchmark: the quantized student run when the quantize tests provide one
    (`quantized_student_run`), else the export tests' student-shaped QDQ model quantized on real crops.
    `TK_BENCH_MODEL=path` benchmarks that quantize run or QDQ .onnx instead."""
    if os.environ.get("TK_BENCH_MODEL"):
        return os.environ["TK_BENCH_MODEL"]
    try:
        return request.getfixturevalue("quantized_student_run")
    except pytest.FixtureLookupError:
        return request.getfixturevalue("export_models")["student"]


@pytest.fixture(scope="session")
def bench_firmware_dir(tmp_path_factory):
    """A private copy of firmware/ to export into and build, so tests never modify the repository's
    firmware/generated/."""
    from toolkit.bench.firmware import copy_project

    return copy_project(tmp_path_factory.mktemp("firmware") / "fw")
