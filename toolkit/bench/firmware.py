"""The models built into the benchmark firmware.

`toolkit export --out firmware/generated` writes each network flat into that folder (`<name>.c`, `<name>.h`,
`<name>_weights.c`, ...) and lists them in its `toolkit.json` (stage "exported", `models`: name -> source
QDQ ONNX, sha256, ...); several exports share the folder. This module writes the registry
`firmware/generated/models.c` from that list (through toolkit.deploy.csource, the one C writer), so
everything there is reproducible from the toolkit and the folder is ignored by git. `toolkit bench` and the
tests export and build in a copy of the project (`project_dir`, `copy_project`), never in firmware/:

    python -m toolkit.bench.firmware registry              # rewrite models.c from generated/toolkit.json
    python -m toolkit.bench.firmware add RUN_DIR [TARGET]  # export a quantized model (+ registry)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from toolkit.bench.pio import FIRMWARE_DIR
from toolkit.deploy.csource import registry_source, write_sources
from toolkit.paths import toolkit_home

GENERATED_DIR = FIRMWARE_DIR / "generated"
REGISTRY = GENERATED_DIR / "models.c"
EXPORT_STAGE = "exported"
# written by toolkit.onboard.config beside the exports when the frame pipeline is built in
CONFIG_FILES = ("pipeline_config.c", "pipeline_config.h", "pipeline_config.json")


def _manifest_models(generated: Path) -> dict:
    meta = Path(generated) / "toolkit.json"
    if not meta.is_file():
        return {}
    data = json.loads(meta.read_text())
    if data.get("stage") != EXPORT_STAGE:
        raise ValueError(f"{meta} is a '{data.get('stage')}' artifact, not an export; clean {generated}")
    return data.get("models") or {}


def exported_models(generated: Path = GENERATED_DIR) -> list[str]:
    """Names of the complete exports in generated/ (listed in toolkit.json, with their .c and .h present)."""
    generated = Path(generated)
    return sorted(n for n in _manifest_models(generated)
                  if (generated / f"{n}.c").is_file() and (generated / f"{n}.h").is_file())


def write_registry(generated: Path = GENERATED_DIR) -> list[str]:
    """Rewrites models.c for the exports present; only touches the file when it changes (no rebuild)."""
    generated = Path(generated)
    names = exported_models(generated)
    # the pipeline config is linked only when every network it calls is exported beside it
    wanted = configured_models(generated)
    write_sources({"models.c": registry_source(names, pipeline=bool(wanted) and set(wanted) <= set(names))},
                  generated)
    return names


def configured_models(generated) -> list[str] | None:
    """Model names the generated pipeline config (toolkit.onboard.config) refers to, or None when the folder
    has no pipeline."""
    generated = Path(generated)
    meta = generated / "pipeline_config.json"
    if not all((generated / n).is_file() for n in CONFIG_FILES):
        return None
    return list(json.loads(meta.read_text()).get("models") or [])


def export_model(model, target: str, fw_dir: Path, name: str | None = None) -> list[tuple[str, Path]]:
    """`toolkit export` of a quantize run dir (every step network) or QDQ .onnx into generated/.

    Returns [(C model name, QDQ onnx)]. Skipped when generated/ already holds these networks from the same
    source bytes (sha256), so repeated benchmarks do not rebuild the firmware."""
    from toolkit.deploy import codegen
    from toolkit.deploy.export import export_all, model_units

    generated = Path(fw_dir) / "generated"
    units, manifest = model_units(model)
    base = name or codegen.c_name(manifest.get("name") or (Path(model).name if Path(model).is_dir()
                                                           else Path(model).stem))
    wanted = [(base if k is None else f"{base}_step{k}", onnx) for k, onnx, _ in units]
    have = _manifest_models(generated)
    present = set(exported_models(generated))
    if not all(n in present and have[n].get("source_sha256") == codegen.sha256_file(p) for n, p in wanted):
        # the firmware runs the generated code, not TFLM: no embedded .tflite
        export_all(model, target, generated, base, embed_tflite=False)
    write_registry(generated)
    return wanted


def resolve_exported(name: str, fw_dir: Path) -> list[tuple[str, Path]]:
    """[(model name, QDQ onnx it was exported from)] for `name` (one network, or `<name>_step*` of a student)."""
    generated = Path(fw_dir) / "generated"
    models = _manifest_models(generated)
    present = exported_models(generated)
    names = [name] if name in present else [n for n in present if n.startswith(f"{name}_step")]
    if not names:
        raise ValueError(f"no exported model '{name}' in {generated} (exported: {', '.join(present) or 'none'}); "
                         "pass a quantized run directory or a QDQ .onnx as --model to export one")
    out = []
    for n in sorted(names, key=lambda s: (len(s), s)):
        src = Path(models[n].get("source", ""))
        if not src.is_file():
            raise FileNotFoundError(f"model '{n}' was exported from {src}, which no longer exists: the host "
                                    "reference cannot be computed; export it again from its run directory")
        out.append((n, src))
    return out


def copy_project(dst: Path, src: Path = FIRMWARE_DIR) -> Path:
    """A private copy of the firmware project (sources, kernels, board files; no exports, no build output),
    so a benchmark or test can export and build without touching the repository's firmware/."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for item in ("platformio.ini", "src", "lib", "ld", "test", "tools"):
        s_, d_ = src / item, dst / item
        if d_.exists():
            shutil.rmtree(d_) if d_.is_dir() else d_.unlink()
        if s_.is_dir():
            shutil.copytree(s_, d_, ignore=shutil.ignore_patterns(".pio", "__pycache__"))
        elif s_.is_file():
            shutil.copy2(s_, d_)
    (dst / "generated").mkdir(exist_ok=True)
    write_registry(dst / "generated")
    return dst


def project_dir(firmware_dir=None) -> Path:
    """The firmware project `toolkit bench` exports into and builds, never the bundled one: `--firmware-dir`
    (a copy is made there when it holds no project), else the toolkit's own build folder
    `$TOOLKIT_HOME/firmware`, refreshed from the bundled project each time (exports and builds stay)."""
    if firmware_dir:
        fw_dir = Path(firmware_dir).resolve()
        return fw_dir if (fw_dir / "platformio.ini").is_file() else copy_project(fw_dir)
    return copy_project(toolkit_home() / "firmware")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] == "registry":
        names = write_registry()
        print(f"{REGISTRY}: {len(names)} model(s): {', '.join(names) or '-'}")
        return 0
    if argv[0] == "add" and len(argv) >= 2:
        target = argv[2] if len(argv) > 2 else "qemu-m7"
        for name, _ in export_model(argv[1], target, FIRMWARE_DIR):
            print(f"exported {name} into {GENERATED_DIR}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
