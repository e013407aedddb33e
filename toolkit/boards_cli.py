"""`toolkit boards`: print the board profiles and where each comes from."""

from toolkit.boards import board_files, load_board
from toolkit.paths import bundled_dir


def register(sub):
    p = sub.add_parser("boards", help="list the board profiles (--target names)")
    p.set_defaults(func=run)


def run(args) -> int:
    bundled = bundled_dir("boards")
    rows = [("name", "core", "clock MHz", "flash KiB", "SRAM KiB", "PSRAM KiB", "description", "from")]
    for name, path in board_files().items():
        b = load_board(name)
        rows.append((b.name, b.core, f"{b.clock_hz / 1e6:g}", f"{b.flash_bytes // 1024}",
                     f"{b.sram_bytes // 1024}", f"{b.psram_bytes // 1024}",
                     b.description, "bundled" if path.parent == bundled else str(path)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0
