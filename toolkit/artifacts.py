"""Artifact directories: diffusers-style weights + `toolkit.json`, which records what produced them.

Every stage reads its input's `toolkit.json` through `read_manifest(..., expect_stage=...)` and refuses a
mismatched artifact with a message that says what it found and what it wanted.
"""

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


def update_manifest(directory, **fields) -> dict:
    manifest = read_manifest(directory)
    manifest.update(fields)
    write_json_atomic(Path(directory) / MANIFEST, manifest)
    return manifest
