"""Where the toolkit finds the folders it ships (board profiles, firmware project) and keeps its cache."""

import os
from importlib.resources import files
from pathlib import Path


def bundled_dir(name: str) -> Path:
    """A folder shipped with the toolkit: `boards` (the profiles) or `firmware` (the PlatformIO project).

    Package data under `toolkit/bundled/` in the wheel; in a checkout `toolkit/bundled/` holds links to the
    top-level folders, so both are found the same way. Read-only: copy before building or writing."""
    path = files("toolkit") / "bundled" / name
    if not (isinstance(path, Path) and path.is_dir()):
        raise FileNotFoundError(f"the toolkit's bundled '{name}' folder is missing ({path}); reinstall the package")
    return path


def toolkit_home() -> Path:
    """`$TOOLKIT_HOME`, default `~/.cache/toolkit`. Created on first use."""
    home = Path(os.environ.get("TOOLKIT_HOME") or Path.home() / ".cache" / "toolkit")
    home.mkdir(parents=True, exist_ok=True)
    return home


def models_dir() -> Path:
    d = toolkit_home() / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d


def samples_dir() -> Path:
    d = toolkit_home() / "samples"
    d.mkdir(parents=True, exist_ok=True)
    return d
