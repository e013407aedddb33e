"""The package as a user installs it: the sdist, the wheel built from that sdist, installed into a fresh
virtual environment (the heavy dependencies come from the system site-packages), run from a folder outside
the checkout with no PYTHONPATH, its own $TOOLKIT_HOME and its own PlatformIO core folder."""

import json
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd, cwd, env=None, timeout=600) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n" \
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from the sdist (so the sdist is complete and no build/ folder of the checkout leaks in)."""
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-c", "import sys; from setuptools import build_meta; build_meta.build_sdist(sys.argv[1])",
          dist], cwd=REPO)
    (sdist,) = dist.glob("*.tar.gz")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, sdist], cwd=dist)
    (whl,) = dist.glob("*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory):
    """(environment, working folder, installed package folder) of a fresh venv holding the wheel."""
    root = tmp_path_factory.mktemp("installed")
    venv.create(root / "venv", system_site_packages=True)  # no pip of its own: the system's installs into it
    python = root / "venv" / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TOOLKIT_BOARDS")}
    env.update(PATH=f"{python.parent}{os.pathsep}{env['PATH']}", TOOLKIT_HOME=str(root / "home"),
               PLATFORMIO_CORE_DIR=str(root / "platformio"))
    # --no-index: the dependencies must already be satisfied, nothing is downloaded
    _run([python, "-m", "pip", "install", "-q", "--no-index", wheel], root, env)
    work = root / "work"
    work.mkdir()
    package = Path(_run(["python", "-c", "import toolkit; print(toolkit.__file__)"], work, env).strip()).parent
    assert package.is_relative_to(root / "venv"), package
    return env, work, package


def test_wheel_carries_the_board_profiles_and_the_firmware_project(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    boards = {f"toolkit/bundled/boards/{p.name}" for p in (REPO / "boards").glob("*.json")}
    firmware = {f"toolkit/bundled/firmware/{p.relative_to(REPO / 'firmware')}" for p in (REPO / "firmware").rglob("*")
                if p.is_file() and not {".pio", "generated", "__pycache__"} & set(p.parts)}
    assert len(boards) >= 6 and boards <= names
    assert {"toolkit/bundled/firmware/platformio.ini", "toolkit/bundled/firmware/ld/mps2.ld",
            "toolkit/bundled/firmware/platforms/tinyml-local/platform.json"} <= firmware <= names
    assert not any("/generated/" in n or "/.pio/" in n or n.endswith(".pyc") for n in names)


def test_installed_toolkit_lists_its_boards_and_yours(installed, tmp_path):
    env, work, package = installed
    assert "usage: toolkit" in _run(["toolkit", "--help"], work, env)
    rows = {r.split()[0]: r for r in _run(["toolkit", "boards"], work, env).splitlines()[1:]}
    assert {p.stem for p in (REPO / "boards").glob("*.json")} == set(rows)
    assert all(r.endswith("bundled") for r in rows.values())
    mine = {**json.loads((REPO / "boards" / "qemu-m7.json").read_text()), "name": "my-m7"}
    (tmp_path / "my-m7.json").write_text(json.dumps(mine))
    out = _run(["toolkit", "boards", "--boards-dir", tmp_path], work, env)
    assert any(r.startswith("my-m7 ") and r.endswith(str(tmp_path / "my-m7.json")) for r in out.splitlines())
    assert not (package / "bundled" / "boards" / "my-m7.json").exists()


def test_installed_toolkit_quantizes_exports_and_benchmarks(installed, tiny_student_run, tmp_path):
    """quantize for a board profile of the user's own, export, then `bench --board native`: the firmware
    is copied into $TOOLKIT_HOME/firmware and built there; the installed package is never written."""
    env, work, package = installed
    boards = tmp_path / "boards"
    boards.mkdir()
    mine = {**json.loads((REPO / "boards" / "stm32f405.json").read_text()), "name": "my-f405"}
    (boards / "my-f405.json").write_text(json.dumps(mine))
    _run(["toolkit", "--boards-dir", boards, "quantize", "--model", tiny_student_run, "--target", "my-f405",
          "--out", "q", "--qat-steps", "2", "--calib", "4", "--eval", "2", "--no-tflite", "--threads", "1",
          "--no-progress"], work, env)
    assert json.loads((work / "q" / "toolkit.json").read_text())["target"] == "my-f405"

    _run(["toolkit", "export", "--model", "q", "--target", "my-f405", "--out", "c", "--name", "tiny"],
         work, {**env, "TOOLKIT_BOARDS": str(boards)})
    assert {"tiny_step0.c", "tiny_step0.h", "tiny_step1.c", "tiny_step1.h"} <= {p.name for p in (work / "c").iterdir()}

    _run(["toolkit", "bench", "--board", "native", "--model", "q", "-n", "1", "--inputs", "1",
          "--out", "bench.json"], work, env)
    result = json.loads((work / "bench.json").read_text())
    assert result["summary"]["all_bit_exact"] and len(result["models"]) == 2
    build = Path(env["TOOLKIT_HOME"]) / "firmware"
    assert Path(result["device"]["program"]).is_relative_to(build)
    assert set(result["models"]) <= {p.stem for p in (build / "generated").glob("*.c")}
    assert not any(p.name in (".pio", "generated") for p in (package / "bundled" / "firmware").rglob("*"))
