"""`--json FILE` for the benchmark scripts: the Markdown tables a script prints, also written as JSON.

A script calls `capture_tables(args.json)` once after parsing its arguments; everything it prints still goes to
stdout, and at exit every Markdown table (with the nearest heading above it) lands in FILE as
[{"title": ..., "columns": [...], "rows": [{column: value}]}]. Numbers become numbers ("1,234" -> 1234,
"0.5" -> 0.5); other cells stay text. One format for all scripts, and the tables stay the single source.
"""

from __future__ import annotations

import atexit
import io
import json
import re
import sys
from pathlib import Path

_NUMBER = re.compile(r"^[-+]?(\d[\d,]*\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def _value(cell: str):
    text = cell.strip().strip("*")
    if _NUMBER.match(text):
        plain = text.replace(",", "")
        return float(plain) if any(c in plain for c in ".eE") else int(plain)
    return text


def parse_markdown_tables(text: str) -> list[dict]:
    tables, title, lines = [], None, text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("#"):
            title = line.lstrip("#").strip()
        is_header = line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|$", lines[i + 1].strip())
        if not is_header:
            i += 1
            continue
        columns = [c.strip() for c in line.strip("|").split("|")]
        rows = []
        i += 2
        while i < len(lines) and lines[i].strip().startswith("|"):
            cells = [c for c in lines[i].strip().strip("|").split("|")]
            rows.append({col: _value(cell) for col, cell in zip(columns, cells)})
            i += 1
        tables.append({"title": title, "columns": columns, "rows": rows})
    return tables


class _Tee(io.TextIOBase):
    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text):
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()


def capture_tables(path) -> None:
    """From now on, copy stdout; at exit write its Markdown tables to `path` as JSON (no-op when None)."""
    if not path:
        return
    tee = _Tee(sys.stdout)
    sys.stdout = tee

    def write():
        tables = parse_markdown_tables(tee.copy.getvalue())
        Path(path).write_text(json.dumps({"script": Path(sys.argv[0]).name, "argv": sys.argv[1:],
                                          "tables": tables}, indent=2) + "\n")
        print(f"wrote {path} ({len(tables)} table(s))", file=sys.stderr)

    atexit.register(write)
