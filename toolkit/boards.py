"""Board profiles (`boards/*.json`): memory and clock of each `--target NAME`.

The profiles bundled with the toolkit, under those of the user: folders named in `$TOOLKIT_BOARDS`
(os.pathsep-separated, first wins) or given as `toolkit --boards-dir DIR`. A user profile of the same name
replaces the bundled one.
"""

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.paths import bundled_dir

BOARDS_ENV = "TOOLKIT_BOARDS"


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    core: str
    clock_hz: int
    flash_bytes: int
    sram_bytes: int  # largest SRAM usable for the activation arena
    psram_bytes: int = 0  # external PSRAM on the board (informative: the pool below is what a model gets)
    # The pool the firmware port allocates for input, output and arena where it is not `sram_bytes` (the
    # ESP32-S3 port takes 4 MiB of its PSRAM). Only source of that size: the port is built with it
    # (firmware/tools/pio_board_pool.py).
    pool_bytes: int | None = None
    qemu_machine: str | None = None
    platformio_env: str | None = None
    memory_regions: dict = field(default_factory=dict)

    @property
    def arena_budget_bytes(self) -> int:
        """RAM the firmware gives a model (input, output, arena): its pool."""
        return self.pool_bytes if self.pool_bytes is not None else self.sram_bytes


def board_dirs() -> list[Path]:
    """Folders searched for `<name>.json`, first match wins: the user's ($TOOLKIT_BOARDS), then the bundled."""
    user = [Path(d) for d in os.environ.get(BOARDS_ENV, "").split(os.pathsep) if d]
    for d in user:
        if not d.is_dir():
            raise FileNotFoundError(f"board profiles folder {d} (from --boards-dir or ${BOARDS_ENV}) does not exist")
    return user + [bundled_dir("boards")]


@contextlib.contextmanager
def extra_boards_dir(folder):
    """`toolkit --boards-dir DIR`: DIR searched first while the command runs (through $TOOLKIT_BOARDS, so
    worker processes see it too)."""
    before = os.environ.get(BOARDS_ENV)
    os.environ[BOARDS_ENV] = os.pathsep.join([str(Path(folder).resolve())] + ([before] if before else []))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(BOARDS_ENV, None)
        else:
            os.environ[BOARDS_ENV] = before


def board_files() -> dict[str, Path]:
    """Board name -> the profile that defines it, sorted by name."""
    found = {}
    for d in reversed(board_dirs()):
        found.update((p.stem, p) for p in d.glob("*.json"))
    return dict(sorted(found.items()))


def load_board(name: str) -> Board:
    profiles = board_files()
    if name not in profiles:
        raise ValueError(f"unknown target '{name}'; known boards: {', '.join(profiles)}")
    path = profiles[name]
    try:
        board = Board(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:  # bad JSON, unknown or missing fields
        raise ValueError(f"board profile {path}: {exc}") from exc
    if board.name != name:
        raise ValueError(f"board profile {path}: its name is '{board.name}'; name the file {board.name}.json")
    return board
