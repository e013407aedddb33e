"""Resuming `toolkit anonymize`: a journal of finished inputs, and the settings hash that keys it.

Each process appends one JSON line per finished input to its own file in OUT/.anonymize_journal/, after
the output has been renamed into place, so a killed run (SIGKILL included) leaves at most a torn last
line, which is ignored. A re-run skips an input only when a journal line says it was written under the
same settings hash, the input file has not changed since (size, mtime), and the output file is still the
one written (size, sha256); everything else is done again. Refused and unreadable inputs are always
retried (the user may have fixed them).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

JOURNAL_DIR = ".anonymize_journal"


def settings_hash(settings: dict) -> str:
    """A short hash of everything that decides the outputs (JSON-canonical)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_fingerprint(run_dir) -> str:
    """sha256 over a model run's files (names and bytes), so a retrained model in the same folder counts as new."""
    digest = hashlib.sha256()
    root = Path(run_dir)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat(path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


class Journal:
    """Finished inputs of earlier runs into the same --out, and this process's record of its own."""

    def __init__(self, out_dir, rank: int, settings: str):
        self.dir = Path(out_dir) / JOURNAL_DIR
        self.path = self.dir / f"rank{rank}.jsonl"
        self.settings = settings

    def clear(self) -> None:
        """--restart: forget every earlier run (call on one process, before the others read)."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def load(self) -> dict[str, dict]:
        """input path -> the last journal line written under the current settings (any process's file)."""
        done: dict[str, dict] = {}
        for path in sorted(self.dir.glob("rank*.jsonl")):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if not line.endswith("\n"):
                        break  # torn by a kill mid-write
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    if rec.get("settings") == self.settings:
                        done[rec["input"]] = rec
        return done

    @staticmethod
    def still_valid(rec: dict) -> bool:
        """The input is unchanged and the output is exactly the file that was written."""
        entry = rec["entry"]
        out = entry.get("output")
        if out is None or _stat(entry["input"]) != rec["input_stat"]:
            return False
        st = _stat(out)
        return st is not None and st[0] == rec["output_size"] and file_sha256(out) == rec["output_sha256"]

    def record(self, entry: dict) -> None:
        """Append a finished input; only written outputs are worth resuming from."""
        if entry.get("output") is None:
            return
        rec = {"settings": self.settings, "input": entry["input"], "input_stat": _stat(entry["input"]),
               "output_size": os.path.getsize(entry["output"]), "output_sha256": file_sha256(entry["output"]),
               "entry": entry}
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, default=str) + "\n")
            f.flush()
