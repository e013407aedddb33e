"""Host side of the firmware's serial protocol (see firmware/src/ee_harness.h and docs/firmware.md).

One command line out, one reply line back: `ok <command> key=value ...` or `err <code> <message>`.
Every read has a deadline, so a silent, wrong or vanished device is a `DeviceError`, never a hang.
"""

from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass

import numpy as np

FIRMWARE_ID = "tinyml-bench"
PROTO_VERSION = 1
CHUNK = 256  # bytes per load/results chunk (EE_CHUNK_MAX in the firmware)


class DeviceError(RuntimeError):
    """The device did not answer in time, answered garbage, or went away."""


class ProtocolError(RuntimeError):
    """The device answered with `err <code> ...`."""

    def __init__(self, code: str, message: str, command: str):
        super().__init__(f"device refused '{command}': {code}: {message}")
        self.code = code


@dataclass
class Reply:
    command: str
    fields: dict
    line: str

    def int(self, key: str) -> int:
        return int(self.fields[key])

    def hex(self, key: str) -> int:
        return int(self.fields[key], 16)


def parse_reply(line: str) -> Reply:
    """Parses one reply line; raises ProtocolError for `err` replies and DeviceError for anything else."""
    words = line.strip().split(" ")
    if len(words) >= 2 and words[0] == "err":
        raise ProtocolError(words[1], " ".join(words[2:]), "?")
    if len(words) < 2 or words[0] != "ok":
        raise DeviceError(f"unparseable reply from device: {line.strip()[:120]!r}")
    fields = {}
    for w in words[2:]:
        if "=" not in w:
            raise DeviceError(f"unparseable field {w!r} in reply: {line.strip()[:120]!r}")
        k, v = w.split("=", 1)
        fields[k] = v
    return Reply(words[1], fields, line)


def selftest_input(n: int) -> np.ndarray:
    """The firmware's built-in self-test input (xorshift32, top byte), as int8."""
    x = 0x2545F491
    out = np.empty(n, np.uint8)
    for i in range(n):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = x >> 24
    return out.view(np.int8)


def crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def bits_to_float(h: str) -> float:
    return struct.unpack("<f", struct.pack("<I", int(h, 16)))[0]


class Link:
    """A line link over something with `write(bytes)`, `read(n)` honouring a timeout, and `close()`:
    a pyserial port (real board or QEMU's TCP serial) or a subprocess pipe adapter (native)."""

    def __init__(self, port, timeout: float = 10.0, log=None):
        self.port = port
        self.timeout = timeout
        self._buf = b""
        self.log = log  # optional list collecting the conversation, for error reports

    def close(self):
        try:
            self.port.close()
        except Exception:
            pass

    def _read_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            if time.monotonic() > deadline:
                raise DeviceError(f"no reply within {timeout:.0f} s (device silent, hung or wrong firmware)")
            self._buf += self._recv()
            if len(self._buf) > 1 << 16:
                raise DeviceError("device sends data without line breaks (wrong baud rate or firmware?)")
        line, self._buf = self._buf.split(b"\n", 1)
        text = line.decode("ascii", "replace").rstrip("\r")
        if self.log is not None:
            self.log.append("< " + text[:200])
        return text

    def _recv(self) -> bytes:
        """Whatever bytes arrive within ~0.1 s (b"" if none). Raises DeviceError if the port is gone."""
        port = self.port
        try:
            if hasattr(port, "recv_some"):
                return port.recv_some(0.1)
            data = port.read(1)  # the port's own timeout (0.1 s) bounds this
            if data:
                waiting = port.in_waiting
                if waiting:
                    data += port.read(waiting)
            return data
        except DeviceError:
            raise
        except Exception as exc:  # serial.SerialException, OSError, ...: the port went away
            raise DeviceError(f"serial port failed: {exc}") from exc

    def wait_banner(self, timeout: float) -> Reply:
        """Waits for the `ok ready` line the firmware prints at boot."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeviceError(f"firmware did not announce itself within {timeout:.0f} s")
            line = self._read_line(left)
            if line.startswith("ok ready"):
                return parse_reply(line)

    def command(self, line: str, timeout: float | None = None) -> Reply:
        if "\n" in line or len(line) > 639:
            raise ValueError(f"command too long or multi-line: {line[:60]!r}")
        if self.log is not None:
            self.log.append("> " + line[:200])
        try:
            self.port.write((line + "\n").encode("ascii"))
            if hasattr(self.port, "flush"):
                self.port.flush()
        except Exception as exc:
            raise DeviceError(f"serial port failed: {exc}") from exc
        text = self._read_line(self.timeout if timeout is None else timeout)
        if text.startswith("err fault"):
            raise DeviceError(f"the device crashed: {text}")
        try:
            return parse_reply(text)
        except ProtocolError as exc:
            raise ProtocolError(exc.code, str(exc).split(": ", 2)[-1], line.split(" ")[0]) from None


class Device:
    """The benchmark firmware behind a Link."""

    def __init__(self, link: Link):
        self.link = link

    def identify(self) -> Reply:
        r = self.link.command("name")
        if r.fields.get("fw") != FIRMWARE_ID:
            raise DeviceError(f"not the benchmark firmware (name reply: {r.line.strip()!r})")
        if int(r.fields.get("proto", -1)) != PROTO_VERSION:
            raise DeviceError(f"firmware speaks protocol {r.fields.get('proto')}, this toolkit {PROTO_VERSION}")
        return r

    def info(self) -> dict:
        r = self.link.command("info")
        info = dict(r.fields)
        info["names"] = [] if info.get("names") in (None, "-") else info["names"].split(",")
        return info

    def model(self, name: str) -> dict:
        r = self.link.command(f"model {name}")
        f = dict(r.fields)
        for k in ("index", "input", "output", "arena", "weights", "macs"):
            f[k] = int(f[k])
        for k in ("in_shape", "out_shape"):
            f[k] = [int(v) for v in f[k].split("x")]
        f["in_scale"] = bits_to_float(f["in_scale"])
        f["out_scale"] = bits_to_float(f["out_scale"])
        f["in_zp"], f["out_zp"] = int(f["in_zp"]), int(f["out_zp"])
        return f

    def _upload(self, command: str, raw: bytes, retries: int, what: str) -> None:
        """`command <offset> <hex> <crc32>` chunks in order; a chunk garbled on the wire is resent."""
        for off in range(0, len(raw), CHUNK):
            chunk = raw[off: off + CHUNK]
            for attempt in range(retries + 1):
                try:
                    r = self.link.command(f"{command} {off} {chunk.hex()} {crc32(chunk):08x}")
                    break
                except ProtocolError as exc:  # a byte lost on the wire: resend that chunk
                    if exc.code != "bad_crc" or attempt == retries:
                        raise
            if r.int("have") != off + len(chunk):
                raise DeviceError(f"device acknowledged {r.fields.get('have')} {what} bytes, expected {off + len(chunk)}")

    def load(self, name: str, data: np.ndarray, retries: int = 2) -> None:
        self._upload(f"load {name}", np.ascontiguousarray(data, dtype=np.int8).tobytes(), retries, "input")

    def infer(self, name: str, n: int, timeout: float) -> dict:
        r = self.link.command(f"infer {name} {n}", timeout=timeout)
        return {"unit": r.fields["unit"], "n": r.int("n"), "total": r.int("total"), "min": r.int("min"),
                "max": r.int("max"), "crc": r.hex("crc")}

    def _read_back(self, command: str, size: int, dtype, what: str) -> np.ndarray:
        """`command` (digest), then `command <offset> <n>` chunks, each and the whole checked by CRC-32."""
        digest = self.link.command(command)
        if digest.int("total") != size:
            raise DeviceError(f"device {what} has {digest.int('total')} bytes, expected {size}")
        out = bytearray()
        for off in range(0, size, CHUNK):
            n = min(CHUNK, size - off)
            r = self.link.command(f"{command} {off} {n}")
            data = bytes.fromhex(r.fields["data"])
            if len(data) != n or crc32(data) != r.hex("crc"):
                raise DeviceError(f"{what} chunk at {off} corrupted in transit")
            out += data
        if crc32(bytes(out)) != digest.hex("crc"):
            raise DeviceError(f"{what} checksum mismatch after reassembly")
        return np.frombuffer(bytes(out), dtype).copy()

    def results(self, size: int) -> np.ndarray:
        return self._read_back("results", size, np.int8, "output")

    def selftest(self, name: str, timeout: float) -> dict:
        r = self.link.command(f"selftest {name}", timeout=timeout)
        return {"crc": r.hex("crc"), "unit": r.fields["unit"], "ticks": r.int("total")}

    # ---- on-device pipeline (firmware built with a pipeline config; docs/firmware.md) ----------------

    def pipeline(self) -> dict:
        """Layout of the built-in pipeline: model names, frame and crop size, memory per buffer, stage names."""
        f = dict(self.link.command("pipeline").fields)
        out = {"pose": f["pose"], "steps": f["steps"].split(","), "stages": f["stages"].split(","),
               "verifier": None if f.get("verifier", "none") == "none" else f["verifier"]}
        for k in ("h", "w", "size", "frame", "arena", "model_in", "model_out", "scratch", "total", "pool"):
            out[k] = int(f[k])
        return out

    def load_frame(self, frame: np.ndarray, retries: int = 2) -> None:
        self._upload("frame", np.ascontiguousarray(frame, dtype=np.uint8).tobytes(), retries, "frame")

    @staticmethod
    def _pipeline_fields(fields: dict) -> dict:
        """Ticks, and per face found (groups separated by ';'): keypoints, peaks, visibility, box and crop. The
        first face's also at the top level (zeros when there is none), as the host reference reports them."""
        out = {"unit": fields.get("unit"), "ticks": [int(v) for v in fields.get("ticks", "").split(",") if v],
               "total": int(fields.get("total", 0)), "people": int(fields.get("people", 0))}
        groups = {key: [g for g in fields.get(key, "").split(";") if g] for key in ("kp", "vis", "box", "crop")}
        faces = []
        for i, kp in enumerate(groups["kp"]):
            kps = [p.split(":") for p in kp.split(",")]
            face = {"keypoints_q8": [[int(x), int(y)] for x, y, _ in kps], "peaks": [int(p) for _, _, p in kps],
                    "visible": [c == "1" for c in groups["vis"][i]] if i < len(groups["vis"]) else []}
            for key in ("box", "crop"):
                if i < len(groups[key]):
                    face[key] = [int(v) for v in groups[key][i].split(",")]
            faces.append(face)
        first = faces[0] if faces else {"keypoints_q8": [[0, 0]] * 7, "peaks": [0] * 7, "visible": [False] * 7}
        out.update(first)
        out["faces"] = faces
        if "left" in fields:
            out["verify_left"] = int(fields["left"])
        if "heads_left" in fields:
            out["verifier_left"] = int(fields["heads_left"])
        if "crc" in fields:
            out["crc"] = int(fields["crc"], 16)
        return out

    REFUSALS = ("no_face", "too_many_faces", "verify_failed")

    def anonymize(self, seed: int, timeout: float) -> dict:
        """Runs the pipeline on the loaded frame. status "ok" (frame readable with `frame_out`) or a refusal,
        one of REFUSALS (the device wiped the frame); keypoints and boxes per face, per-stage ticks, output CRC."""
        try:
            r = self.link.command(f"anonymize {int(seed)}", timeout=timeout)
        except ProtocolError as exc:
            if exc.code not in self.REFUSALS:
                raise
            msg = str(exc).split(": ", 2)[-1]
            fields = dict(w.split("=", 1) for w in msg.split(" ") if "=" in w)
            return {"status": exc.code, **self._pipeline_fields(fields)}
        return {"status": r.fields["status"], "seed": r.int("seed"), **self._pipeline_fields(r.fields)}

    def frame_out(self, size: int) -> np.ndarray:
        return self._read_back("frame_out", size, np.uint8, "frame")
