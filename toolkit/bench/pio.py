"""PlatformIO, offline: seed the core's `tool-scons` package and install the local dev-platform.

PlatformIO's own registry is unreachable here, but a build needs only SCons (a core package) and a
platform. SCons comes from PyPI (`scons==4.11.1`, installed with the `bench` extra or downloaded as a
wheel); the platform is the bundled firmware project's `platforms/tinyml-local`, installed as a symlink.
Idempotent.

    python -m toolkit.bench.pio setup       # what CI and `toolkit bench` call
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from toolkit.paths import bundled_dir

FIRMWARE_DIR = bundled_dir("firmware")  # read-only: builds run in a copy (toolkit.bench.firmware.project_dir)
PLATFORM_DIR = FIRMWARE_DIR / "platforms" / "tinyml-local"
SCONS_VERSION = "4.11.1"
# PlatformIO names tool-scons versions 4.<4 digits of the SCons version>.0 (core requires ~4.41101.0).
SCONS_PKG_VERSION = "4.41101.0"

_SCONS_LAUNCHER = '''"""Launcher PlatformIO runs (tool-scons/scons.py), seeded by toolkit.bench.pio."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from SCons.Script.Main import main  # noqa: E402

if __name__ == "__main__":
    main()
'''


def cortex_m_flags(board: str) -> list[str]:
    """The C flags the firmware build uses for a board of the local platform (e.g. 'mps2_an386'): its
    builder's machine flags (from the board JSON) plus the shared build_flags.json."""
    build = json.loads((PLATFORM_DIR / "boards" / f"{board}.json").read_text())["build"]
    flags = json.loads((PLATFORM_DIR / "build_flags.json").read_text())
    machine = [f"-mcpu={build['cpu']}", "-mthumb"]
    machine += [f"-mfpu={build['fpu']}", "-mfloat-abi=hard"] if build.get("fpu") else ["-mfloat-abi=soft"]
    return machine + flags["ccflags"] + flags["cflags"]


def core_dir() -> Path:
    return Path(os.environ.get("PLATFORMIO_CORE_DIR") or Path.home() / ".platformio")


def pio_env() -> dict:
    """Environment for every pio call: no telemetry, no update checks, offline-friendly."""
    env = dict(os.environ)
    env["PLATFORMIO_SETTING_ENABLE_TELEMETRY"] = "No"
    env["PLATFORMIO_SETTING_CHECK_PLATFORMIO_INTERVAL"] = "3650"
    env["PLATFORMIO_SETTING_CHECK_PRUNE_SYSTEM_THRESHOLD"] = "0"
    env.setdefault("PLATFORMIO_CORE_DIR", str(core_dir()))
    return env


def pio_exe() -> list[str]:
    exe = shutil.which("pio") or shutil.which("platformio")
    if exe:
        return [exe]
    try:
        import platformio  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("PlatformIO is not installed: pip install 'tinyml-face-anonymizer[bench]'") from exc
    return [sys.executable, "-m", "platformio"]


def _scons_source() -> Path:
    """The SCons package directory: the installed one, else one unpacked from the PyPI wheel."""
    try:
        import SCons

        if getattr(SCons, "__version__", SCONS_VERSION) == SCONS_VERSION:
            return Path(SCons.__file__).parent
    except ImportError:
        pass
    tmp = Path(tempfile.mkdtemp(prefix="scons-wheel-"))
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(tmp),
         f"scons=={SCONS_VERSION}"],
        check=True,
    )
    wheel = next(tmp.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp / "x")
    return tmp / "x" / "SCons"


def seed_scons() -> Path:
    pkg = core_dir() / "packages" / "tool-scons"
    meta = pkg / ".piopm"
    if (pkg / "scons.py").is_file() and (pkg / "SCons" / "Script").is_dir() and meta.is_file():
        if json.loads(meta.read_text()).get("version") == SCONS_PKG_VERSION:
            return pkg
    src = _scons_source()
    if pkg.exists():
        shutil.rmtree(pkg)
    pkg.mkdir(parents=True)
    shutil.copytree(src, pkg / "SCons", ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "scons.py").write_text(_SCONS_LAUNCHER)
    (pkg / "package.json").write_text(json.dumps(
        {"name": "tool-scons", "version": SCONS_PKG_VERSION, "description": f"SCons {SCONS_VERSION} (from PyPI)",
         "keywords": ["build tool"], "homepage": "https://scons.org"}, indent=2))
    meta.write_text(json.dumps({
        "type": "tool", "name": "tool-scons", "version": SCONS_PKG_VERSION,
        "spec": {"owner": "platformio", "id": None, "name": "tool-scons", "requirements": None, "uri": None},
    }))
    return pkg


def install_platform() -> None:
    installed = core_dir() / "platforms" / "tinyml-local"
    if (installed / "platform.json").is_file() and (installed / "builder" / "main.py").is_file():
        return
    subprocess.run(
        pio_exe() + ["pkg", "install", "-g", "-p", f"symlink://{PLATFORM_DIR}"],
        check=True, env=pio_env(), stdout=subprocess.DEVNULL,
    )


def setup() -> None:
    """Make `pio run -e native|qemu_m4|qemu_m7` work offline. Cheap when already done."""
    seed_scons()
    install_platform()


def run(args: list[str], fw_dir: Path, capture: bool = False,
        timeout: float | None = 900) -> subprocess.CompletedProcess:
    """`pio <args>` in the firmware project (after setup). Raises RuntimeError with the log tail on failure."""
    setup()
    proc = subprocess.run(
        pio_exe() + args, cwd=fw_dir, env=pio_env(), text=True, timeout=timeout,
        stdout=subprocess.PIPE if capture else None, stderr=subprocess.STDOUT if capture else None,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout or "").splitlines()[-30:])
        raise RuntimeError(f"pio {' '.join(args)} failed (exit {proc.returncode})\n{tail}")
    return proc


def build(env_name: str, fw_dir: Path, quiet: bool = True) -> Path:
    """Builds firmware env `env_name`; returns the program (ELF for boards, executable for native)."""
    run(["run", "-e", env_name] + (["-s"] if quiet else []), Path(fw_dir), capture=quiet)
    build_dir = Path(fw_dir) / ".pio" / "build" / env_name
    for name in ("program.elf", "program"):
        if (build_dir / name).is_file():
            return build_dir / name
    raise RuntimeError(f"pio run -e {env_name} succeeded but left no program in {build_dir}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv not in ([], ["setup"]):
        print(__doc__, file=sys.stderr)
        return 2
    setup()
    print(f"PlatformIO offline setup done (core dir {core_dir()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
