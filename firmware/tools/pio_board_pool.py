"""PlatformIO extra script: builds the port with its board profile's pool size (`pool_bytes` of
boards/<custom_board_profile>.json), so the toolkit's fit check and the firmware share one number."""

import json
from pathlib import Path

Import("env")  # noqa: F821  (SCons injects it)

_profile = env.GetProjectOption("custom_board_profile")  # noqa: F821
_board = json.loads((Path(env.subst("$PROJECT_DIR")).parent / "boards" / f"{_profile}.json").read_text())  # noqa: F821
env.Append(CPPDEFINES=[("TH_POOL_BYTES", _board["pool_bytes"])])  # noqa: F821
