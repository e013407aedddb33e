"""Artifact directories: diffusers-style weights + `toolkit.json`, which records what produced them.

Every stage reads its input's `toolkit.json` through `read_manifest(..., expect_stage=...)` and refuses a
mismatched artifact with a message that says what it found and what it wanted. `load(run_dir)` finds the
loader of an artifact by the stage its manifest names (`LOADERS`), so a consumer never imports the stage
that produced its input (docs/architecture.md).
"""

import importlib
import json
import os
import platform
import time
from pathlib import Path

from toolkit import __version__

MANIFEST = "toolkit.json"


class ArtifactError(ValueError):
    """An input artifact that is missing, corrupt, or from the wrong stage."""


def write_json_atomic(path, data) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def write_manifest(directory, stage: str, **fields) -> dict:
    """Write `toolkit.json` with the stage name, toolkit version and whatever the stage records."""
    manifest = {
        "stage": stage,
        "toolkit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        **fields,
    }
    write_json_atomic(Path(directory) / MANIFEST, manifest)
    return manifest


def read_manifest(directory, expect_stage=None) -> dict:
    """The artifact's manifest; `expect_stage` (str or tuple of str) makes a mismatch a clear error."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.exists():
        raise ArtifactError(f"{directory}: no such artifact directory")
    if not path.exists():
        raise ArtifactError(f"{directory}: not a toolkit artifact (no {MANIFEST}); was it produced by `toolkit`?")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: corrupt manifest ({exc})") from exc
    if expect_stage is not None:
        wanted = (expect_stage,) if isinstance(expect_stage, str) else tuple(expect_stage)
        if manifest.get("stage") not in wanted:
            raise ArtifactError(
                f"{directory}: is a '{manifest.get('stage')}' artifact, but this step needs "
                f"{' or '.join(repr(w) for w in wanted)}"
            )
    return manifest


# stage -> "module:function(run_dir, device=None)" that loads its artifact; imported only when one is loaded.
LOADERS = {
    "teacher": "toolkit.diffusion:load_teacher",
    "student": "toolkit.distill:load_student_inpainter",
    "quantized": "toolkit.distill:load_int8_inpainter",
    "pose": "toolkit.pose:load_pose",
}
# Stages whose artifacts are inpainters (the contract in toolkit/diffusion/__init__.py).
INPAINTER_STAGES = ("teacher", "student", "quantized")


def load(directory, expect_stage=None, device=None):
    """The object an artifact directory holds, loaded by its stage's loader (`LOADERS`).

    `expect_stage` (str or tuple) narrows what is accepted; `device`: torch device string or None (default)."""
    manifest = read_manifest(directory, expect_stage=expect_stage or tuple(LOADERS))
    stage = manifest.get("stage")
    if stage not in LOADERS:
        raise ArtifactError(f"{directory}: a '{stage}' artifact has no loader (loadable: {', '.join(LOADERS)})")
    module, name = LOADERS[stage].split(":")
    return getattr(importlib.import_module(module), name)(directory, device=device)


def load_inpainter(run_dir, device=None):
    """The inpainter of a `teacher`, `student` or `quantized` (student) run directory (see the contract in
    toolkit/diffusion/__init__.py); anything else is an ArtifactError naming what it found."""
    return load(run_dir, expect_stage=INPAINTER_STAGES, device=device)


def update_manifest(directory, **fields) -> dict:
    manifest = read_manifest(directory)
    manifest.update(fields)
    write_json_atomic(Path(directory) / MANIFEST, manifest)
    return manifest
