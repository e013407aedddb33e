"""Ways to reach the benchmark firmware: a host process (native), QEMU with a TCP serial, or a real port.

Each opener is a context manager yielding a `protocol.Link`; leaving it always stops what it started
(QEMU and the native program are terminated, then killed), also on errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import time
from pathlib import Path

from toolkit.bench.protocol import DeviceError, Link

QEMU_ICOUNT = "shift=0,align=off,sleep=off"
# Under -icount shift=0 an instruction advances virtual time by 1 ns and QEMU's mps2 SysTick counts the
# 25 MHz board clock: 1 tick = 40 instructions (checked by the firmware unit test `icount_ratio`).
ICOUNT_INSNS_PER_TICK = 40


class _PipePort:
    """Subprocess stdin/stdout with the small port interface Link uses."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def write(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise DeviceError(f"the firmware process exited (status {self.proc.poll()})") from exc

    def recv_some(self, timeout: float) -> bytes:
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            if self.proc.poll() is not None:
                raise DeviceError(f"the firmware process exited (status {self.proc.returncode})")
            return b""
        data = os.read(fd, 65536)
        if not data:
            raise DeviceError(f"the firmware process closed its output (status {self.proc.wait(5)})")
        return data

    def close(self) -> None:
        _stop(self.proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            with contextlib.suppress(Exception):
                stream.close()


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def open_native(program: Path, timeout: float = 10.0):
    proc = subprocess.Popen([str(program)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    link = Link(_PipePort(proc), timeout=timeout)
    try:
        link.wait_banner(timeout)
        yield link
    finally:
        link.close()


def qemu_command(machine: str, elf: Path, port: int) -> list[str]:
    return [
        "qemu-system-arm", "-M", machine, "-display", "none", "-monitor", "none",
        "-icount", QEMU_ICOUNT,
        "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on",
        "-kernel", str(elf),
    ]


@contextlib.contextmanager
def open_qemu(machine: str, elf: Path, timeout: float = 10.0, start_timeout: float = 20.0):
    """Starts QEMU (`-icount`, serial on a free local TCP port), connects with pyserial, waits for the banner."""
    import serial

    if not shutil.which("qemu-system-arm"):
        raise RuntimeError("qemu-system-arm is not on PATH (Debian: apt-get install qemu-system-arm)")
    port = free_tcp_port()
    cmd = qemu_command(machine, elf, port)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    link = None
    try:
        deadline = time.monotonic() + start_timeout
        ser = None
        while ser is None:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip()
                raise RuntimeError(f"QEMU exited at start (status {proc.returncode}): {err[-500:]}")
            try:
                ser = serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=0.1, write_timeout=timeout)
            except serial.SerialException:
                if time.monotonic() > deadline:
                    raise DeviceError(f"QEMU did not open its serial port {port} within {start_timeout:.0f} s")
                time.sleep(0.05)
        link = Link(ser, timeout=timeout)
        link.wait_banner(timeout)
        link.qemu_cmd = cmd
        yield link
    finally:
        if link is not None:
            link.close()
        _stop(proc)


@contextlib.contextmanager
def open_port(url: str, baudrate: int = 115200, timeout: float = 10.0):
    """A real board (`/dev/ttyACM0`, `COM3`) or any pyserial URL (`socket://host:port`, `rfc2217://...`).

    The board may have booted long ago, so no banner is awaited: the caller starts with `name`."""
    import serial

    try:
        ser = serial.serial_for_url(url, baudrate=baudrate, timeout=0.1, write_timeout=timeout)
    except (serial.SerialException, ValueError) as exc:
        raise RuntimeError(f"cannot open serial port {url}: {exc}") from exc
    link = Link(ser, timeout=timeout)
    try:
        with contextlib.suppress(Exception):
            ser.reset_input_buffer()
        # a half-sent line from an earlier session would make the first command an error: end it first
        ser.write(b"\n")
        time.sleep(0.2)
        with contextlib.suppress(Exception):
            ser.reset_input_buffer()
        link._buf = b""
        yield link
    finally:
        link.close()


def unit_note(unit: str) -> str:
    return {
        "icount_ticks": "SysTick ticks under QEMU -icount shift=0,align=off,sleep=off: exactly repeatable and "
                        f"proportional to instructions executed (1 tick = {ICOUNT_INSNS_PER_TICK} instructions); "
                        "not cycles and not time on any real chip",
        "cycles": "core clock cycles (DWT CYCCNT on Cortex-M, CCOUNT on ESP32-S3)",
        "ns": "host wall-clock nanoseconds (CLOCK_MONOTONIC); the host is not the target",
    }.get(unit, unit)


@contextlib.contextmanager
def open_device(args, fw_dir: Path, timeout: float):
    """A link to `--port`, or to the firmware built in `fw_dir` for `--board` (QEMU or the host); yields
    (link, what it runs on)."""
    from toolkit.bench import pio
    from toolkit.boards import load_board

    if args.port:
        with open_port(args.port, args.baud, timeout=timeout) as link:
            yield link, {"board": None, "port": args.port}
        return
    board = load_board(args.board)
    program = pio.build(board.platformio_env, fw_dir)
    meta = {"board": board.name, "env": board.platformio_env, "program": str(program)}
    if board.qemu_machine:
        with open_qemu(board.qemu_machine, program, timeout=timeout) as link:
            meta["qemu"] = " ".join(link.qemu_cmd)
            yield link, meta
    else:
        with open_native(program, timeout=timeout) as link:
            yield link, meta
