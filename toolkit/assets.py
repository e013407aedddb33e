"""Offline assets: pretrained detector models and real sample photos, fetched by package name.

Nothing comes from a model hub. Every file is taken out of a package that an ordinary package client
downloads from its registry:

- `mediapipe==0.10.21` wheel (pip): the BlazeFace / BlazePose `.tflite` models;
- `face-recognition==1.3.0` sdist (pip): real test photos (obama*.jpg, biden.jpg);
- Debian `opencv-doc` (apt-get download): `messi5.jpg` and `vtest.avi` (a few frames are decoded);
- scikit-image (already installed): `astronaut` and the 25x25 `lfw_subset` faces, written as PNGs.

Files land in `toolkit_home()/models` and `toolkit_home()/samples`. Each file's sha256 is pinned below
(upstream bytes) or recorded when it is derived (PNG written from pixels); `fetch` re-verifies everything
on each call, which takes a few tens of milliseconds once the cache is complete.

Offline use: `toolkit assets fetch --from DIR` where DIR holds the downloaded wheel / sdist / .deb, or the
already extracted files (e.g. `pose_detection.tflite`, `messi5.jpg`, `vtest.avi`), in any sub-folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from toolkit.paths import toolkit_home

MEDIAPIPE_SPEC = "mediapipe==0.10.21"
FACE_RECOGNITION_SPEC = "face-recognition==1.3.0"
OPENCV_DOC_PACKAGE = "opencv-doc"

# Frames of vtest.avi kept as sample photos (small pedestrians; a hard case for the detectors).
VTEST_FRAMES = (0, 100, 200, 300, 400, 500, 600, 700)
LFW_FACES = 100  # lfw_subset holds 100 faces followed by 100 non-faces (patches of the same news photos)
# Photographs without people in scikit-image, plus LFW's 100 non-faces: real scenes that `data build
# --backgrounds` puts around tightly cropped training faces instead of edge-replicated streaks.
# Not astronaut or camera: those show people.
SKIMAGE_SCENES = ("brick", "chelsea", "clock", "coffee", "coins", "grass", "gravel", "moon", "page", "rocket",
                  "text")
# Keypoints of the astronaut photo (512x512 px, toolkit.keypoints order): the output of this toolkit's BlazePose
# detector on the photo, recorded once. A regression reference for the detector, not ground truth: its left
# eye sits 9 px under the pupil. What a person can see is ASTRONAUT_FACE_POINTS_BY_EYE.
ASTRONAUT_KEYPOINTS = np.array([(223, 128), (249, 112), (205, 103), (268, 123), (190, 107), (306, 257), (113, 240)],
                               np.float64)
# Nose tip and the two pupil centres, read by eye on 10-20x enlarged crops of the photo with a 2-5 px grid
# (within 2 px). The ears are under her hair and the shoulders under the suit: nobody can place those by eye.
ASTRONAUT_FACE_POINTS_BY_EYE = np.array([(224, 127), (247, 103), (203, 102)], np.float64)


@dataclass(frozen=True)
class Asset:
    name: str  # public name, e.g. "face_detection_short_range", "messi5", "lfw_007"
    kind: str  # "model" | "photo" | "lfw" | "background"
    source: str  # "mediapipe" | "face_recognition" | "opencv_doc" | "skimage"
    relpath: str  # where it lives under toolkit_home()
    member: str = ""  # file name inside the source package (basename is used to search --from DIR)
    sha256: str = ""  # pinned sha256 of the upstream bytes ("" for derived files, see PIXEL_SHA256)

    def path(self) -> Path:
        return toolkit_home() / self.relpath


# Upstream bytes, pinned after the first fetch: a changed upstream file is refused, not used silently.
_PINNED = {
    "face_detection_short_range": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "face_detection_full_range": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    "pose_detection": "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c",
    "pose_landmark_full": "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f",
    "obama": "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
    "obama2": "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
    "obama3": "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
    "obama_partial_face": "c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117",
    "obama_partial_face2": "9a812347f97633542b8cd9992de22def11b74f79d82056bc3ee830f13878e028",
    "biden": "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
    "messi5": "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9",
    "vtest.avi": "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf",
}
# Derived files are PNGs written by us; the pixels they come from are pinned instead of PNG bytes
# (zlib versions differ). vtest frames depend on the video decoder, so only the .avi is pinned.
PIXEL_SHA256 = {
    "astronaut": "b07500ad778fcb86f5755d95a7bce56672c40b79f33078a66275030700f09152",
    "lfw_subset": "ef9a7096677f4158e0020702d61d944b75037abec78a06ab6e15a07d493716dd",
}

_MP = "mediapipe/modules"
MODELS = (
    Asset("face_detection_short_range", "model", "mediapipe", "models/face_detection_short_range.tflite",
          f"{_MP}/face_detection/face_detection_short_range.tflite"),
    # The wheel ships the full-range face detector only in its sparse (densify) form.
    Asset("face_detection_full_range", "model", "mediapipe", "models/face_detection_full_range.tflite",
          f"{_MP}/face_detection/face_detection_full_range_sparse.tflite"),
    Asset("pose_detection", "model", "mediapipe", "models/pose_detection.tflite",
          f"{_MP}/pose_detection/pose_detection.tflite"),
    Asset("pose_landmark_full", "model", "mediapipe", "models/pose_landmark_full.tflite",
          f"{_MP}/pose_landmark/pose_landmark_full.tflite"),
)
_FR = "face_recognition-1.3.0/tests/test_images"
_FR_PHOTOS = ("obama", "obama2", "obama3", "obama_partial_face", "obama_partial_face2", "biden")
PHOTOS = (
    Asset("astronaut", "photo", "skimage", "samples/astronaut.png"),
    *(Asset(n, "photo", "face_recognition", f"samples/{n}.jpg", f"{_FR}/{n}.jpg") for n in _FR_PHOTOS),
    Asset("messi5", "photo", "opencv_doc", "samples/messi5.jpg",
          "./usr/share/doc/opencv-doc/examples/data/messi5.jpg"),
    *(Asset(f"vtest_{i:03d}", "photo", "opencv_doc", f"samples/vtest_{i:03d}.png",
            "./usr/share/doc/opencv-doc/examples/data/vtest.avi") for i in VTEST_FRAMES),
)
LFW = tuple(Asset(f"lfw_{i:03d}", "lfw", "skimage", f"samples/lfw/{i:03d}.png") for i in range(LFW_FACES))
BACKGROUNDS = (*(Asset(f"bg_{n}", "background", "skimage", f"samples/backgrounds/{n}.png") for n in SKIMAGE_SCENES),
               *(Asset(f"bg_lfw_{i:03d}", "background", "skimage", f"samples/backgrounds/lfw_{i:03d}.png")
                 for i in range(LFW_FACES)))
ALL_ASSETS = {a.name: a for a in (*MODELS, *PHOTOS, *LFW, *BACKGROUNDS)}
GROUPS = {
    "models": [a.name for a in MODELS],
    "photos": [a.name for a in PHOTOS],
    "lfw": [a.name for a in LFW],
    "backgrounds": [a.name for a in BACKGROUNDS],
    "vtest": [a.name for a in PHOTOS if a.name.startswith("vtest_")],
}
SOURCE_HINT = {
    "mediapipe": f"pip download --no-deps --only-binary :all: --platform manylinux_2_28_x86_64 "
                 f"--python-version 3.11 {MEDIAPIPE_SPEC}",
    "face_recognition": f"pip download --no-deps --no-binary :all: {FACE_RECOGNITION_SPEC}",
    "opencv_doc": f"apt-get update && apt-get download {OPENCV_DOC_PACKAGE}",
    "skimage": "pip install scikit-image",
}

RECORD_NAME = "assets.json"  # sha256 of every file as written, so `list`/`fetch` can verify derived files
NETWORK_TIMEOUT_S = 600


class AssetError(RuntimeError):
    """An asset is missing and cannot be obtained, or a file does not match its pinned sha256."""


# ----------------------------------------------------------------------------------------------------
# hashing and the local record


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record_path() -> Path:
    return toolkit_home() / RECORD_NAME


def _load_record() -> dict:
    try:
        return json.loads(_record_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _save_record(record: dict) -> None:
    tmp = _record_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(_record_path())


def _expected_sha(asset: Asset, record: dict) -> str:
    return _PINNED.get(asset.name) or record.get(asset.name, {}).get("sha256", "")


def verify(asset: Asset, record: dict | None = None) -> tuple[bool, str]:
    """(ok, reason): the cached file exists and matches its pinned or recorded sha256."""
    record = _load_record() if record is None else record
    path = asset.path()
    if not path.is_file():
        return False, "missing"
    expected = _expected_sha(asset, record)
    if not expected:
        return False, "no sha256 recorded"
    # Always a full hash: the whole cache is ~20 MB, i.e. tens of milliseconds.
    actual = sha256_file(path)
    if actual != expected:
        return False, f"sha256 mismatch (expected {expected[:12]}…, got {actual[:12]}…)"
    return True, "ok"


def _write_file(asset: Asset, data: bytes, record: dict) -> Path:
    """Store upstream bytes after checking the pin; atomic so a crash leaves no half file."""
    sha = _sha256_bytes(data)
    pinned = _PINNED.get(asset.name)
    if pinned and sha != pinned:
        raise AssetError(
            f"{asset.name}: upstream file has sha256 {sha}, expected {pinned}; the package changed "
            f"(wrong version?) — refusing to use it")
    path = asset.path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    _remember(asset, sha, record)
    return path


def _remember(asset: Asset, sha: str, record: dict) -> None:
    stat = asset.path().stat()
    record[asset.name] = {"sha256": sha, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                          "source": asset.source}


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------
# package readers (wheel/sdist/deb) shared by the network path and --from DIR


def _zip_members(path: Path, members: set[str]) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        return {m: zf.read(m) for m in members if m in names}


def _tar_members(fileobj, members: set[str], mode: str = "r|*") -> dict[str, bytes]:
    out = {}
    wanted = {m.lstrip("./") for m in members}
    with tarfile.open(fileobj=fileobj, mode=mode) as tf:
        for info in tf:
            key = info.name.lstrip("./")
            if key in wanted and info.isfile():
                out[next(m for m in members if m.lstrip("./") == key)] = tf.extractfile(info).read()
                if len(out) == len(members):
                    break
    return out


def _deb_members(path: Path, members: set[str]) -> dict[str, bytes]:
    """Read files from a .deb without dpkg: an `ar` archive whose data.tar.* holds the file tree.

    The tar is decompressed as a stream and reading stops once every wanted member is found (the
    opencv-doc data is ~100 MB of xz; the sample files sit near its start).
    """
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise AssetError(f"{path}: not a Debian package (.deb)")
        while True:
            header = f.read(60)
            if len(header) < 60:
                break
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            if name.startswith("data.tar"):
                body = _Window(f, f.tell(), size)
                if name.endswith(".xz") or name.endswith(".lzma"):
                    stream = lzma.LZMAFile(body)
                elif name.endswith(".gz"):
                    import gzip

                    stream = gzip.GzipFile(fileobj=body)
                elif name.endswith(".tar"):
                    stream = body
                else:
                    raise AssetError(f"{path}: {name} is not supported here; extract it with `dpkg -x` "
                                     f"and pass the folder to --from")
                return _tar_members(stream, members, mode="r|")
            f.seek(size + (size & 1), 1)
    return {}


class _Window(io.RawIOBase):
    """A read-only view of `size` bytes of an open file starting at `start`."""

    def __init__(self, f, start: int, size: int):
        self.f, self.pos, self.end = f, start, start + size

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.end - self.pos)
        if n <= 0:
            return 0
        self.f.seek(self.pos)
        data = self.f.read(n)
        buf[: len(data)] = data
        self.pos += len(data)
        return len(data)


def _read_package(source: str, package: Path, members: set[str]) -> dict[str, bytes]:
    if source == "mediapipe":
        return _zip_members(package, members)
    if source == "face_recognition":
        with open(package, "rb") as f:
            return _tar_members(f, members)
    if source == "opencv_doc":
        return _deb_members(package, members)
    raise AssertionError(source)


_PACKAGE_GLOBS = {
    "mediapipe": "mediapipe-0.10.21-*.whl",
    "face_recognition": "face_recognition-1.3.0.tar.gz",
    "opencv_doc": "opencv-doc_*.deb",
}


def _download(source: str, dest: Path, progress: bool) -> Path:
    """Fetch the package of `source` into dest with the registry's own client; return its path."""
    if source == "mediapipe":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
               "--abi", "cp311", "-d", str(dest), MEDIAPIPE_SPEC]
    elif source == "face_recognition":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(dest),
               FACE_RECOGNITION_SPEC]
    elif source == "opencv_doc":
        if not shutil.which("apt-get"):
            raise AssetError("apt-get is not available on this machine")
        cmd = ["apt-get", "download", OPENCV_DOC_PACKAGE]
    else:
        raise AssertionError(source)
    if progress:
        tqdm.write(f"assets: downloading {source}: {' '.join(cmd[2:] if cmd[0] == sys.executable else cmd)}",
                   file=sys.stderr)
    try:
        proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=NETWORK_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise AssetError(f"{' '.join(cmd)} timed out after {NETWORK_TIMEOUT_S} s") from exc
    found = sorted(dest.glob(_PACKAGE_GLOBS[source]))
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise AssetError(f"`{' '.join(cmd)}` failed: {' | '.join(tail) or 'no file downloaded'}")
    return found[-1]


# ----------------------------------------------------------------------------------------------------
# producing assets


class _Sources:
    """Finds package files (or already extracted files) in --from DIR, else downloads them once per fetch."""

    def __init__(self, from_dir: Path | None, offline: bool, progress: bool, tmp: Path):
        self.from_dir = from_dir
        self.offline = offline
        self.progress = progress
        self.tmp = tmp
        self._packages: dict[str, Path] = {}
        self._index: dict[str, list[Path]] | None = None
        self.rejected: list[str] = []  # files in --from DIR with the right name but the wrong content

    def _files_by_name(self) -> dict[str, list[Path]]:
        if self._index is None:
            self._index = {}
            if self.from_dir is not None:
                for p in sorted(self.from_dir.rglob("*")):
                    if p.is_file():
                        self._index.setdefault(p.name, []).append(p)
        return self._index

    def loose_file(self, asset: Asset, basename: str) -> bytes | None:
        """An extracted file named `basename` in --from DIR that matches the pin (any sub-folder)."""
        for p in self._files_by_name().get(basename, []):
            data = p.read_bytes()
            pinned = _PINNED.get(asset.name if basename != "vtest.avi" else "vtest.avi")
            if not pinned or _sha256_bytes(data) == pinned:
                return data
            self.rejected.append(f"{p} (sha256 differs from the pinned one)")
        return None

    def package(self, source: str) -> Path:
        if source in self._packages:
            return self._packages[source]
        if self.from_dir is not None:
            hits = sorted(self.from_dir.rglob(_PACKAGE_GLOBS[source]))
            if hits:
                self._packages[source] = hits[-1]
                return hits[-1]
        if self.offline:
            where = f"not found in {self.from_dir}" if self.from_dir is not None else "no --from DIR given"
            if self.rejected:
                where += "; ignored " + ", ".join(self.rejected)
            raise AssetError(f"offline (--offline or TOOLKIT_OFFLINE=1) and {where}")
        dest = self.tmp / source
        dest.mkdir(parents=True, exist_ok=True)
        self._packages[source] = _download(source, dest, self.progress)
        return self._packages[source]


def _produce_from_package(assets: list[Asset], src: _Sources, record: dict) -> None:
    """Extract all `assets` of one package source (each loose file in --from DIR wins over the package)."""
    source = assets[0].source
    pending = []
    for a in assets:
        loose_name = "vtest.avi" if a.name.startswith("vtest_") else Path(a.member).name
        if a.name.startswith("vtest_"):
            pending.append(a)  # frames are decoded below from the .avi
            continue
        data = src.loose_file(a, loose_name)
        if data is None and a.source == "mediapipe":
            # Renamed copies in --from DIR (e.g. face_detection_full_range.tflite) are accepted too.
            data = src.loose_file(a, Path(a.relpath).name)
        if data is not None:
            _write_file(a, data, record)
        else:
            pending.append(a)
    if not pending:
        return
    vtest = [a for a in pending if a.name.startswith("vtest_")]
    need_avi = bool(vtest)
    avi = src.loose_file(Asset("vtest.avi", "photo", source, ""), "vtest.avi") if need_avi else None
    members = {a.member for a in pending if not a.name.startswith("vtest_")}
    if need_avi and avi is None:
        members.add(vtest[0].member)
    got = {}
    if members:
        package = src.package(source)
        got = _read_package(source, package, members)
        missing = members - set(got)
        if missing:
            raise AssetError(f"{package.name} does not contain {', '.join(sorted(missing))}")
    for a in pending:
        if not a.name.startswith("vtest_"):
            _write_file(a, got[a.member], record)
    if vtest:
        if avi is None:
            avi = got[vtest[0].member]
            if _PINNED["vtest.avi"] and _sha256_bytes(avi) != _PINNED["vtest.avi"]:
                raise AssetError("vtest.avi: sha256 does not match the pinned value; refusing to use it")
        _write_vtest_frames(avi, vtest, record, src.tmp)


def _write_vtest_frames(avi: bytes, assets: list[Asset], record: dict, tmp: Path) -> None:
    import cv2

    video = tmp / "vtest.avi"
    video.write_bytes(avi)
    wanted = {int(a.name.split("_")[1]): a for a in assets}
    cap = cv2.VideoCapture(str(video))
    try:
        index = 0
        while wanted and index <= max(wanted):
            ok, frame = cap.read()
            if not ok:
                break
            if index in wanted:
                a = wanted.pop(index)
                data = _png_bytes(np.ascontiguousarray(frame[..., ::-1]))
                _write_derived(a, data, record)
            index += 1
    finally:
        cap.release()
    if wanted:
        raise AssetError(f"vtest.avi: could not decode frames {sorted(wanted)} (OpenCV without a video backend?)")


def _write_derived(asset: Asset, data: bytes, record: dict) -> None:
    path = asset.path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    _remember(asset, _sha256_bytes(data), record)


def _pixel_sha(arr: np.ndarray) -> str:
    return _sha256_bytes(np.ascontiguousarray(arr).tobytes() + str(arr.shape).encode())


def _produce_skimage(assets: list[Asset], record: dict) -> None:
    try:
        from skimage import data as skdata
    except ImportError as exc:
        raise AssetError("scikit-image is not installed") from exc
    names = {a.name for a in assets}
    if "astronaut" in names:
        arr = skdata.astronaut()
        _check_pixels("astronaut", arr)
        _write_derived(ALL_ASSETS["astronaut"], _png_bytes(arr), record)
    lfw = [a for a in assets if a.kind == "lfw" or a.name.startswith("bg_lfw_")]
    if lfw:
        faces = skdata.lfw_subset()
        # Floats in [0,1] in recent scikit-image; store as 8-bit grayscale PNGs.
        faces8 = np.clip(np.round(faces * 255.0), 0, 255).astype(np.uint8) if faces.dtype != np.uint8 else faces
        _check_pixels("lfw_subset", faces8)
        for a in lfw:
            i = int(a.name.rsplit("_", 1)[1])
            _write_derived(a, _png_bytes(faces8[i if a.kind == "lfw" else LFW_FACES + i]), record)
    for a in assets:
        if a.kind == "background" and not a.name.startswith("bg_lfw_"):
            _write_derived(a, _png_bytes(np.asarray(getattr(skdata, a.name[3:])())), record)


def _check_pixels(key: str, arr: np.ndarray) -> None:
    pinned = PIXEL_SHA256.get(key)
    got = _pixel_sha(arr)
    if pinned and got != pinned:
        raise AssetError(f"{key}: scikit-image returned different pixels (sha256 {got[:12]}…, expected "
                         f"{pinned[:12]}…); a different scikit-image data version?")


# ----------------------------------------------------------------------------------------------------
# public API


def _resolve(only) -> list[Asset]:
    if not only:
        return list(ALL_ASSETS.values())
    if isinstance(only, str):
        only = [s for s in only.replace(",", " ").split() if s]
    names: list[str] = []
    for item in only:
        if item in GROUPS:
            names.extend(GROUPS[item])
        elif item in ALL_ASSETS:
            names.append(item)
        elif item == "obama*":
            names.extend(n for n in ALL_ASSETS if n.startswith("obama"))
        else:
            raise ValueError(f"unknown asset {item!r}; known: {', '.join(GROUPS)} or one of "
                             f"{', '.join(n for n in ALL_ASSETS if not n.startswith('lfw_'))}, lfw_000..lfw_{LFW_FACES - 1:03d}")
    return [ALL_ASSETS[n] for n in dict.fromkeys(names)]


def _offline_default() -> bool:
    return os.environ.get("TOOLKIT_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def fetch(from_dir=None, only=None, progress: bool = True, *, offline: bool | None = None) -> dict[str, Path]:
    """Ensure the assets (all, or `only` names/groups) are cached and verified; return name -> path.

    from_dir: a folder with the downloaded packages or the extracted files (used before the network).
    offline: never use the network (default: env TOOLKIT_OFFLINE=1). Raises AssetError naming what is
    missing and how to supply it.
    """
    wanted = _resolve(only)
    offline = _offline_default() if offline is None else offline
    from_dir = Path(from_dir).expanduser() if from_dir else None
    if from_dir is not None and not from_dir.is_dir():
        raise FileNotFoundError(f"--from {from_dir}: no such folder")
    record = _load_record()
    if all(verify(a, record)[0] for a in wanted):
        return {a.name: a.path() for a in wanted}
    # Several processes (parallel test runs, a pipeline with workers) may fetch at once: one at a time.
    with _home_lock():
        return _fetch_locked(wanted, from_dir, offline, progress)


@contextlib.contextmanager
def _home_lock():
    import fcntl

    with open(toolkit_home() / ".fetch.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _fetch_locked(wanted: list[Asset], from_dir: Path | None, offline: bool, progress: bool) -> dict[str, Path]:
    record = _load_record()
    todo = []
    for a in wanted:
        ok, reason = verify(a, record)
        if not ok:
            if reason.startswith("sha256 mismatch") and progress:
                print(f"assets: {a.name}: {reason}; fetching it again", file=sys.stderr)
            todo.append(a)
    if todo:
        t0 = time.monotonic()
        problems = []
        by_source: dict[str, list[Asset]] = {}
        for a in todo:
            by_source.setdefault(a.source, []).append(a)
        with tempfile.TemporaryDirectory(prefix="toolkit-assets-") as tmp:
            src = _Sources(from_dir, offline, progress, Path(tmp))
            bar = tqdm(by_source.items(), desc="assets", unit="package", disable=not progress, file=sys.stderr)
            for source, assets in bar:
                bar.set_postfix_str(f"{source} ({len(assets)} file(s))")
                try:
                    if source == "skimage":
                        _produce_skimage(assets, record)
                    else:
                        _produce_from_package(assets, src, record)
                except AssetError as exc:
                    problems.append((source, assets, str(exc)))
                finally:
                    _save_record(record)
        if problems:
            raise AssetError(_missing_message(problems, from_dir))
        if progress:
            print(f"assets: fetched {len(todo)} file(s) in {time.monotonic() - t0:.1f} s into {toolkit_home()}",
                  file=sys.stderr)
        for a in todo:  # a last check of what was just written
            ok, reason = verify(a, record)
            if not ok:
                raise AssetError(f"{a.name}: {reason} right after writing it")
    return {a.name: a.path() for a in wanted}


def _missing_message(problems, from_dir) -> str:
    lines = ["some assets are missing and could not be obtained:"]
    for source, assets, reason in problems:
        names = [a.name for a in assets]
        shown = ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
        lines.append(f"  - {shown}: from {source}: {reason}")
        lines.append(f"    supply it: `{SOURCE_HINT[source]}` on a connected machine, copy the file into a "
                     f"folder DIR, then `toolkit assets fetch --from DIR`")
    if from_dir is not None:
        lines.append(f"  (searched --from {from_dir})")
    return "\n".join(lines)


def model_path(name: str) -> Path:
    """Path of a cached detector model (fetched if missing), e.g. "face_detection_short_range"."""
    asset = ALL_ASSETS.get(name)
    if asset is None or asset.kind != "model":
        raise ValueError(f"unknown model {name!r}; known: {', '.join(GROUPS['models'])}")
    return fetch(only=[name], progress=False)[name]


def sample_photos() -> list[Path]:
    """All real full-size sample photos (astronaut, obama*, biden, messi5, vtest frames); not the LFW crops."""
    paths = fetch(only=["photos"], progress=False)
    return [paths[a.name] for a in PHOTOS]


def sample_photo(name: str) -> Path:
    """One sample photo by name: "astronaut", "obama", "obama2", "biden", "messi5", "vtest_000", ..."""
    asset = ALL_ASSETS.get(name)
    if asset is None or asset.kind != "photo":
        raise ValueError(f"unknown sample photo {name!r}; known: {', '.join(GROUPS['photos'])}")
    return fetch(only=[name], progress=False)[name]


def lfw_faces() -> list[Path]:
    """The 100 real 25x25 grayscale LFW face crops from scikit-image, as PNG paths."""
    paths = fetch(only=["lfw"], progress=False)
    return [paths[a.name] for a in LFW]


def backgrounds() -> list[Path]:
    """Real photos without people (scikit-image scenes, LFW's 25x25 non-faces), as PNG paths."""
    paths = fetch(only=["backgrounds"], progress=False)
    return [paths[a.name] for a in BACKGROUNDS]


# ----------------------------------------------------------------------------------------------------
# CLI


def register(sub) -> None:
    p = sub.add_parser(
        "assets",
        help="fetch pretrained detector models and sample photos into the cache",
        description="Pretrained detector models (.tflite from the mediapipe wheel) and real sample photos "
                    "(scikit-image, face-recognition sdist, Debian opencv-doc), taken from package "
                    "registries into $TOOLKIT_HOME (default ~/.cache/toolkit) with sha256 checks. "
                    "Offline: put the downloaded wheel/sdist/.deb (or the extracted files) in a folder "
                    "and run `toolkit assets fetch --from DIR`.",
    )
    verbs = p.add_subparsers(dest="assets_cmd", metavar="CMD")
    f = verbs.add_parser("fetch", help="download (or take from --from DIR) and verify every asset",
                         description="Idempotent: files already cached and verified are not fetched again.")
    f.add_argument("--from", dest="from_dir", metavar="DIR",
                   help="folder holding the downloaded wheel/sdist/.deb or the extracted files (offline use)")
    f.add_argument("--only", metavar="NAMES",
                   help=f"comma-separated asset names or groups ({', '.join(GROUPS)}); default: all")
    f.add_argument("--offline", action="store_true", help="never use the network (also: TOOLKIT_OFFLINE=1)")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    f.set_defaults(func=_run_fetch)
    ls = verbs.add_parser("list", help="what is cached, sizes, and whether each sha256 checks out")
    ls.add_argument("--all", action="store_true", help="list each LFW crop and background too")
    ls.set_defaults(func=_run_list)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _run_fetch(args) -> int:
    t0 = time.monotonic()
    paths = fetch(from_dir=args.from_dir, only=args.only, progress=not args.quiet,
                  offline=True if args.offline else None)
    print(f"{len(paths)} asset(s) ready in {toolkit_home()} ({time.monotonic() - t0:.2f} s)")
    return 0


def _run_list(args) -> int:
    record = _load_record()
    bad = 0
    folded = {"lfw": [0, 0, "lfw_000..lfw_099"], "background": [0, 0, "bg_* (scenes, LFW non-faces)"]}
    print(f"cache: {toolkit_home()}")
    for a in ALL_ASSETS.values():
        ok, reason = verify(a, record)
        bad += not ok
        if a.kind in folded and not args.all:  # 100-file groups: one line each
            folded[a.kind][0] += ok
            folded[a.kind][1] += 1
            continue
        size = a.path().stat().st_size if a.path().is_file() else 0
        print(f"  {a.name:28s} {size / 1e6:8.2f} MB  {'ok' if ok else reason:12s}  {a.relpath}")
    if not args.all:
        for n_ok, total, label in folded.values():
            print(f"  {label:28s} {n_ok}/{total} ok")
    if bad:
        print(f"{bad} asset(s) missing or bad: run `toolkit assets fetch`")
    return 1 if bad else 0
