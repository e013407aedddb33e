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
    psram_bytes: int = 0
    qemu_machine: str | None = None
    platformio_env: str | None = None
    memory_regions: dict = field(default_factory=dict)

    @property
    def arena_budget_bytes(self) -> int:
        """RAM the model arena may use: external PSRAM where present, else the SRAM budget."""
        return max(self.sram_bytes, self.psram_bytes)


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
