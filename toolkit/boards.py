"""Board profiles (`boards/*.json`): memory and clock of each `--target NAME`."""

import json
from dataclasses import dataclass, field
from pathlib import Path

BOARDS_DIR = Path(__file__).resolve().parent.parent / "boards"


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


def _boards_dir() -> Path:
    if BOARDS_DIR.is_dir():
        return BOARDS_DIR
    raise FileNotFoundError(f"board profiles not found at {BOARDS_DIR}")


def list_boards() -> list[Board]:
    return [load_board(p.stem) for p in sorted(_boards_dir().glob("*.json"))]


def load_board(name: str) -> Board:
    path = _boards_dir() / f"{name}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in _boards_dir().glob("*.json")))
        raise ValueError(f"unknown target '{name}'; known boards: {known}")
    data = json.loads(path.read_text())
    return Board(**data)
