"""Shared fixtures. Each area keeps its fixtures in `fixtures_<area>.py` beside this file."""

import os
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))

# One cache for all tests of a run (models + sample photos), so assets are fetched once.
os.environ.setdefault("TOOLKIT_HOME", str(Path(__file__).resolve().parent.parent / ".toolkit-test-home"))

for _name in sorted(p.stem for p in Path(__file__).parent.glob("fixtures_*.py")):
    _module = __import__(_name)
    globals().update({k: v for k, v in vars(_module).items() if not k.startswith("_")})
