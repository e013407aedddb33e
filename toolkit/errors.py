"""Errors that the command line turns into one clear message instead of a traceback or a silent exit."""

from __future__ import annotations

TAIL_LINES = 15  # of a library's own output, kept in the message: its reason is usually in the last lines


def output_tail(output: str, lines: int = TAIL_LINES) -> str:
    kept = [line for line in output.strip().splitlines() if line.strip()][-lines:]
    return "\n".join("    " + line for line in kept)


class LibraryFailure(RuntimeError):
    """A third-party library gave up (exit status, sys.exit, abort) while a stage used it."""

    def __init__(self, library: str, doing: str, status, output: str = ""):
        self.library, self.status = library, status
        message = f"{library} failed (exit status {status}) {doing}"
        tail = output_tail(output)
        super().__init__(message + (f"; its last output lines:\n{tail}" if tail else "; it printed nothing"))
