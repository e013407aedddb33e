"""Every command the README and docs/*.md show parses: fenced `toolkit ...` commands and the README's usage
column with the CLI's own argparse (verb, required flags, value types), other inline `toolkit ...` mentions
flag by flag, benchmark scripts against their --help, `pio run -e ENV` against platformio.ini."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(\.\.\.)?/?")  # DIR, RUN, N, IMG..., PHOTOS/


def _fenced_lines(text: str) -> list[str]:
    """Lines of the fenced blocks, continuation lines joined and comments cut."""
    lines = []
    for block in re.findall(r"```[^\n]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(line.split(" #")[0].strip())
    return lines


def _argv(command: str) -> list[str]:
    """The toolkit arguments of a documented command line: optional [groups] taken, the first of a|b
    alternatives, placeholders as a value every option type accepts."""
    command = re.sub(r"\[([^\]]*)\]", r"\1", command).replace("\\|", "|")
    words = [w.split("|")[0] for w in shlex.split(command)]
    return ["1" if PLACEHOLDER.fullmatch(w) else w for w in words]


def _readme_usage() -> list[str]:
    """The command column of the README's user guide table."""
    rows = [re.split(r"(?<!\\)\|", line) for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("| ")]
    return [c for row in rows if len(row) > 3 for c in re.findall(r"`(toolkit [^`]*)`", row[2])]


def _commands(kind: str) -> list[tuple[str, str]]:
    """(where, command) of every complete command (`kind` "complete": fenced, README usage column) or of
    every other inline `toolkit ...` span (kind "inline": mentions in prose, often without their arguments)."""
    usage = _readme_usage()
    out = []
    for doc in DOCS:
        text = doc.read_text()
        if kind == "complete":
            found = [line for line in _fenced_lines(text) if re.search(r"^toolkit |-m toolkit\.cli ", line)]
            found += usage if doc.name == "README.md" else []
        else:
            prose = re.sub(r"```.*?```", "", text, flags=re.S)
            found = [c for c in re.findall(r"`(toolkit [a-z][^`]*)`", prose) if c not in usage]
        out += [(f"{doc.name}: {c}", c) for c in found]
    return out


def _verb_argv(command: str) -> list[str]:
    argv = _argv(command)
    return argv[argv.index("toolkit.cli") + 1:] if "toolkit.cli" in argv else argv[1:]


@pytest.mark.parametrize("where, command", _commands("complete"), ids=lambda v: v[:70])
def test_documented_command_parses(where, command):
    argv = _verb_argv(command)
    try:
        args = build_parser(argv[0]).parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where} does not parse (argv {argv})")
    assert getattr(args, "func", None), where


def _parser_for(argv: list[str]):
    """The (sub)parser that handles argv's options: the verb's, or its action's for `data build` etc."""
    parser = build_parser(argv[0])
    for word in argv:
        subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs or word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
    return parser


@pytest.mark.parametrize("where, command", _commands("inline"), ids=lambda v: v[:70])
def test_inline_command_flags_exist(where, command):
    argv = _verb_argv(command)
    known = _parser_for(argv)._option_string_actions
    unknown = [w for w in argv if w.startswith("--") and w.split("=")[0] not in known]
    assert not unknown, f"{where}: no such option {unknown}"


def test_benchmark_and_firmware_commands_exist():
    envs = set(re.findall(r"^\[env:([\w-]+)\]", (ROOT / "firmware" / "platformio.ini").read_text(), re.M))
    checked = 0
    for doc in DOCS:
        for line in _fenced_lines(doc.read_text()):
            words = _argv(line)
            if words[:1] == ["python"] and len(words) > 1 and words[1].startswith("benchmarks/"):
                help_text = subprocess.run([sys.executable, str(ROOT / words[1]), "--help"], capture_output=True,
                                           text=True, timeout=120).stdout
                missing = [w for w in words if w.startswith("--") and w not in help_text]
                assert not missing, f"{doc.name}: {line}: {missing} not in its --help"
                checked += 1
            elif words[:3] == ["pio", "run", "-e"]:
                assert words[3] in envs, f"{doc.name}: {line}: no env {words[3]} in platformio.ini"
                checked += 1
    assert checked >= 2
