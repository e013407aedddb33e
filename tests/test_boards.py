"""Board profiles: the bundled ones found as package data, the user's merged over them (`--boards-dir`,
`$TOOLKIT_BOARDS`), bad profiles refused with a clear error."""

import json
from pathlib import Path

import pytest

from toolkit.boards import BOARDS_ENV, board_files, load_board
from toolkit.cli import main
from toolkit.paths import bundled_dir

REPO = Path(__file__).resolve().parents[1]
DESIGN_BOARDS = {"esp32s3", "stm32h743", "stm32f746", "qemu-m4", "qemu-m7", "native"}


@pytest.fixture
def no_user_boards(monkeypatch):
    monkeypatch.delenv(BOARDS_ENV, raising=False)


def _profile(folder: Path, name: str, base: str = "qemu-m7", **changes) -> Path:
    data = {**json.loads((REPO / "boards" / f"{base}.json").read_text()), "name": name, **changes}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def test_bundled_profiles_are_the_repository_folder_as_package_data(no_user_boards):
    bundled = bundled_dir("boards")
    assert bundled.parts[-3:] == ("toolkit", "bundled", "boards")
    assert sorted(p.name for p in bundled.glob("*.json")) == sorted(p.name for p in (REPO / "boards").glob("*.json"))
    profiles = board_files()
    assert DESIGN_BOARDS <= set(profiles) and all(p.parent == bundled for p in profiles.values())
    assert all(load_board(name).name == name for name in profiles)


def test_user_profiles_merge_over_the_bundled_ones(tmp_path, monkeypatch, capsys):
    env_dir, cli_dir = tmp_path / "env", tmp_path / "cli"
    mine = _profile(env_dir, "my-m7")
    _profile(env_dir, "stm32f405", base="stm32f405", clock_hz=100_000_000)  # replaces the bundled one
    _profile(cli_dir, "my-m7", clock_hz=50_000_000)  # --boards-dir is searched before $TOOLKIT_BOARDS
    monkeypatch.setenv(BOARDS_ENV, str(env_dir))
    assert load_board("my-m7").clock_hz == 25_000_000 and load_board("stm32f405").clock_hz == 100_000_000
    assert board_files()["my-m7"] == mine and board_files()["native"].parent == bundled_dir("boards")

    for argv in (["--boards-dir", str(cli_dir), "boards"], ["boards", "--boards-dir", str(cli_dir)]):
        assert main(argv) == 0
        rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
        assert rows["my-m7"].split()[2] == "50" and rows["my-m7"].endswith(str(cli_dir / "my-m7.json"))
        assert rows["stm32f405"].endswith(str(env_dir / "stm32f405.json"))
        assert rows["native"].endswith("bundled") and DESIGN_BOARDS <= set(rows)
    # the option holds for that command only
    assert load_board("my-m7").clock_hz == 25_000_000


@pytest.mark.parametrize("text, message", [
    ("{not json", "Expecting property name"),
    ('{"name": "bad"}', "missing 5 required"),
    ('{"name": "bad", "description": "", "core": "m4", "clock_hz": 1, "flash_bytes": 1, "sram_bytes": 1, '
     '"flash_kib": 1}', "unexpected keyword argument 'flash_kib'"),
    ('{"name": "other", "description": "", "core": "m4", "clock_hz": 1, "flash_bytes": 1, "sram_bytes": 1}',
     "its name is 'other'; name the file other.json"),
])
def test_bad_user_profile_is_a_clear_error(tmp_path, capsys, no_user_boards, text, message):
    (tmp_path / "bad.json").write_text(text)
    assert main(["boards", "--boards-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"toolkit boards: error: board profile {tmp_path / 'bad.json'}: ") and message in err


def test_missing_boards_folder_and_unknown_target_are_clear_errors(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(BOARDS_ENV, str(tmp_path / "nope"))
    assert main(["boards"]) == 2
    assert f"board profiles folder {tmp_path / 'nope'} (from --boards-dir or ${BOARDS_ENV}) does not exist" \
        in capsys.readouterr().err
    _profile(tmp_path, "my-m7")
    monkeypatch.setenv(BOARDS_ENV, str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown target 'nope'; known boards: esp32s3, my-m7, native, "):
        load_board("nope")
