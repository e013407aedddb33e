"""Where the toolkit keeps its cache (downloaded models and sample photos)."""

import os
from pathlib import Path


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
