"""`toolkit bench`: end to end under QEMU on real face crops, and its failure modes (never a hang)."""

import json
import socket
import threading
import time

import numpy as np
import psutil
import pytest

from toolkit.cli import main


def _qemu_children():
    return [p for p in psutil.Process().children(recursive=True) if "qemu" in p.name()]


def test_bench_qemu_m7_end_to_end_bit_exact(bench_model, bench_firmware_dir, tmp_path, capsys):
    out = tmp_path / "bench" / "m7.json"
    rc = main(["bench", "--board", "qemu-m7", "--model", str(bench_model), "-n", "2", "--inputs", "2",
               "--out", str(out), "--firmware-dir", str(bench_firmware_dir), "--name", "bench_student"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    r = json.loads(out.read_text())
    assert r["timer"]["unit"] == "icount_ticks" and r["device"]["board"] == "qemu-m7"
    assert "-icount shift=0,align=off,sleep=off" in r["device"]["qemu"]
    models = list(r["models"])  # one network, or one per denoising step of a student
    assert models and all(m == "bench_student" or m.startswith("bench_student_step") for m in models)
    assert [(x["model"], x["input"]) for x in r["results"]] == [
        (m, i) for m in models for i in ("astronaut", "astronaut_mirrored")]
    for row in r["results"]:
        assert row["bit_exact"] and row["max_abs_diff_lsb"] == 0 and row["runs"] == 2
        assert 0 < row["min"] <= row["mean"] <= row["max"]
        # -icount makes counts repeatable: two runs of one input differ only by a few timer-read ticks
        assert row["max"] - row["min"] <= max(8, row["min"] // 10000)
    for m in models:
        assert r["selftest"][m]["bit_exact"]
        pm = r["summary"]["models"][m]
        assert pm["macs"] > 0 and pm["instructions_per_inference"] > pm["macs"]
        # the mirrored photo is a different input: a different output
        crcs = [x["output_crc"] for x in r["results"] if x["model"] == m]
        assert crcs[0] != crcs[1]
    assert r["summary"]["all_bit_exact"]
    csv_lines = out.with_suffix(".csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 2 * len(models) and csv_lines[0].startswith("model,input,runs,unit")
    assert out.with_suffix(".png").stat().st_size > 5000
    assert "bit-exact with the host int8 reference" in printed and ": yes" in printed
    assert not _qemu_children(), "QEMU left running"

    # the exported model is now in the firmware: bench it by name on the host build (fast)
    out2 = tmp_path / "native.json"
    rc = main(["bench", "--board", "native", "--model", "bench_student", "-n", "1", "--inputs", "3",
               "--out", str(out2), "--firmware-dir", str(bench_firmware_dir)])
    assert rc == 0
    r2 = json.loads(out2.read_text())
    assert r2["timer"]["unit"] == "ns" and list(r2["models"]) == models
    assert len(r2["results"]) == 3 * len(models) and all(x["bit_exact"] for x in r2["results"])
    # same int8 arithmetic on host and Cortex-M7: identical outputs for the same real inputs
    host = {(x["model"], x["input"]): x["output_crc"] for x in r2["results"]}
    assert all(host[(x["model"], x["input"])] == x["output_crc"] for x in r["results"])


def test_bench_unknown_model_name_is_clear(bench_firmware_dir, tmp_path, capsys):
    rc = main(["bench", "--board", "native", "--model", "no_such_model", "--out", str(tmp_path / "x.json"),
               "--firmware-dir", str(bench_firmware_dir)])
    assert rc == 2
    assert "no exported model 'no_such_model'" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_pipeline_options_without_pipeline_are_refused(tmp_path, capsys):
    rc = main(["bench", "--board", "native", "--model", "m", "--frames", "4", "--seed", "2",
               "--out", str(tmp_path / "x.json")])
    assert rc == 2 and "--frames, --seed only apply with --pipeline" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_bench_missing_port_is_clear(bench_model, bench_firmware_dir, tmp_path, capsys):
    rc = main(["bench", "--port", "/dev/ttyNOSUCH9", "--model", str(bench_model), "--name", "bench_student",
               "--out", str(tmp_path / "x.json"), "--firmware-dir", str(bench_firmware_dir)])
    assert rc == 2
    assert "cannot open serial port /dev/ttyNOSUCH9" in capsys.readouterr().err


class _FakeBoard:
    """A TCP 'serial port' that answers like some other firmware, or not at all."""

    def __init__(self, reply):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        conn, _ = self.srv.accept()
        conn.settimeout(30)
        buf = b""
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if self.reply and line.strip():
                        conn.sendall(self.reply(line.decode()).encode())
        except OSError:
            return
        finally:
            conn.close()


@pytest.mark.parametrize("reply, message", [
    (None, "no reply within 2 s"),
    (lambda line: "ok name fw=some-other-firmware proto=1 board=x\n", "not the benchmark firmware"),
    (lambda line: "Hello from a different sketch\n", "unparseable reply"),
    (lambda line: "ok name fw=tinyml-bench proto=1 board=x\n" if line == "name" else
     "ok info board=x clock_hz=1 timer=cycles timer_hz=1 pool=1 flash_used=1 ram_used=1 line_max=639 "
     "chunk_max=256 models=1 names=other\n", "wrong firmware: model 'bench_student"),
])
def test_bench_wrong_or_silent_device_fails_fast(bench_model, bench_firmware_dir, tmp_path, capsys, reply,
                                                  message):
    board = _FakeBoard(reply)
    t0 = time.monotonic()
    rc = main(["bench", "--port", f"socket://127.0.0.1:{board.port}", "--model", str(bench_model),
               "--name", "bench_student", "--timeout", "2", "--out", str(tmp_path / "x.json"),
               "--firmware-dir", str(bench_firmware_dir)])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert time.monotonic() - t0 < 60


def test_device_that_vanishes_is_an_error(bench_firmware_dir):
    from toolkit.bench import pio, transport
    from toolkit.bench.protocol import Device, DeviceError

    program = pio.build("native", fw_dir=bench_firmware_dir)
    with transport.open_native(program, timeout=5) as link:
        dev = Device(link)
        assert dev.identify().fields["board"] == "native"
        link.port.proc.kill()
        link.port.proc.wait(5)
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="exited|closed"):
            dev.info()
        assert time.monotonic() - t0 < 10


def test_selftest_input_matches_firmware_generator():
    from toolkit.bench.protocol import selftest_input

    x = selftest_input(5)
    # first xorshift32 states from the seed 0x2545F491, top byte as int8 (same as ee_selftest_input)
    s, expect = 0x2545F491, []
    for _ in range(5):
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        expect.append(np.uint8(s >> 24).view(np.int8))
    assert list(x) == expect and x.dtype == np.int8
