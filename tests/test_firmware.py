"""The benchmark firmware: unit tests on the host and under QEMU, protocol robustness against the built
program, the fuzz harness, the STM32H743 bare-metal image, and the reproducible model registry."""

import bisect
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from toolkit.bench import firmware, pio

QEMU = ["qemu-system-arm", "-display", "none", "-monitor", "none", "-serial", "stdio",
        "-icount", "shift=0,align=off,sleep=off", "-semihosting-config", "enable=on,target=native"]
RESULT = re.compile(r"firmware unit tests on (\S+): (\d+) passed, (\d+) failed")


def _unit_result(cmd) -> tuple[str, int, int, str]:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    m = RESULT.search(proc.stdout)
    assert m, f"no result line (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return m.group(1), int(m.group(2)), int(m.group(3)), proc.stdout


def test_unit_tests_native(bench_firmware_dir):
    program = pio.build("test_native", fw_dir=bench_firmware_dir)
    board, passed, failed, out = _unit_result([str(program)])
    assert board == "native" and failed == 0 and passed >= 70, out


@pytest.mark.parametrize("env, machine", [("test_qemu_m4", "mps2-an386"), ("test_qemu_m7", "mps2-an500")])
def test_unit_tests_qemu(bench_firmware_dir, env, machine):
    elf = pio.build(env, fw_dir=bench_firmware_dir)
    board, passed, failed, out = _unit_result(QEMU + ["-M", machine, "-kernel", str(elf)])
    assert board == env.removeprefix("test_").replace("_", "-") and failed == 0 and passed >= 70, out
    # the tick/instruction ratio the bench report relies on (1 tick = 40 instructions)
    ticks = int(re.search(r"icount calibration: (\d+) ticks for 2000000 instructions", out).group(1))
    assert abs(ticks - 50000) <= 10  # + the few instructions of the timer reads


def _native_link(fw_dir):
    from toolkit.bench import transport

    return transport.open_native(pio.build("native", fw_dir=fw_dir), timeout=5)


def test_protocol_rejects_bad_frames_and_keeps_working(bench_firmware_dir):
    """Garbage over the real program's stdin: one error line per bad frame, then normal service."""
    from toolkit.bench.protocol import ProtocolError

    with _native_link(bench_firmware_dir) as link:
        port = link.port
        frames = [b"x" * 5000, b"\x00\xff\x01binary", b"load", b"infer a b c d e f g h i j", b"results -1 5",
                  b"load m 0 abc 0", b"selftest nosuch", b"\xc3\xa9t\xc3\xa9", b"model 99999999999"]
        for f in frames:
            port.write(f + b"\n")
            line = link._read_line(5)
            assert line.startswith("err "), (f[:20], line)
        assert link.command("name").fields["fw"] == "tinyml-bench"
        with pytest.raises(ProtocolError) as e:
            link.command("infer nosuch 1")
        assert e.value.code == "unknown_model"
        info = link.command("info").fields
        assert info["timer"] == "ns" and int(info["line_max"]) == 639 and int(info["chunk_max"]) == 256


def test_fuzz_harness_runs_clean_under_sanitizers(tmp_path):
    """The random-frame fuzz driver under ASan+UBSan (run_all.sh runs libFuzzer longer when clang has it)."""
    fw = pio.FIRMWARE_DIR
    exe = tmp_path / "fuzz"
    srcs = ["src/ee_harness.c", "src/ee_protocol.c", "src/port/port_native.c", "test/support/tiny_model.c",
            "test/support/tiny_pipeline.c", "src/app/tk_frame.c", "test/fuzz/fuzz_protocol.c"]
    subprocess.run(["gcc", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                    "-DTK_FUZZ_STANDALONE", "-DTH_NATIVE_POOL_BYTES=65536", "-Isrc", "-Isrc/app", "-Ilib/tkengine/include",
                    *srcs, "-o", str(exe)], cwd=fw, check=True)
    proc = subprocess.run([str(exe), "3"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    frames = int(re.search(r"fuzz: (\d+) frames tried", proc.stdout).group(1))
    assert frames > 10000


@pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"), reason="arm-none-eabi-gcc not installed")
def test_stm32h743_bare_metal_image_links(tmp_path):
    """The NUCLEO-H743ZI image (own startup + linker script) links: vectors at the flash base, data in
    DTCM, the pool spanning AXI SRAM. (Flashing needs the board; PlatformIO's ststm32 builds the same.)"""
    fw = pio.FIRMWARE_DIR
    elf = tmp_path / "h743.elf"
    flags = ["-mcpu=cortex-m7", "-mthumb", "-mfpu=fpv5-d16", "-mfloat-abi=hard", "-O2", "-ffunction-sections",
             "-fdata-sections", "-Isrc", "-Isrc/app", "-Ilib/tkengine/include"]
    srcs = ["src/main.c", "src/ee_harness.c", "src/ee_protocol.c", "src/port/port_stm32h7.c",
            "src/port/cortexm_common.c", "test/support/tiny_model.c", "test/support/tiny_pipeline.c",
            "src/app/tk_frame.c"]
    subprocess.run(["arm-none-eabi-gcc", *flags, *srcs, "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs",
                    "-Wl,--gc-sections", "-Lld", "-Tld/stm32h743.ld", "-o", str(elf)], cwd=fw, check=True)
    syms = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    addr = {s.split()[2]: int(s.split()[0], 16) for s in syms.splitlines() if len(s.split()) == 3}
    assert addr["tk_vectors"] == 0x08000000
    assert addr["__pool_start"] == 0x24000000 and addr["__pool_end"] == 0x24080000
    assert 0x20000000 <= addr["__stack_top"] <= 0x20020000


def test_registry_lists_complete_exports_only(tmp_path):
    gen = tmp_path / "generated"
    gen.mkdir()
    (gen / "toolkit.json").write_text(json.dumps({"stage": "exported", "models": {
        "beta": {"source": "b.onnx"}, "alpha": {"source": "a.onnx"}, "half": {"source": "h.onnx"}}}))
    for name, complete in (("beta", True), ("alpha", True), ("half", False)):
        (gen / f"{name}.h").write_text("")
        if complete:
            (gen / f"{name}.c").write_text("")
    assert firmware.write_registry(gen) == ["alpha", "beta"]
    text = (gen / "models.c").read_text()
    assert '#include "alpha.h"' in text and "{&alpha_model, &beta_model, NULL}" in text
    assert "tk_model_count = 2;" in text and "half" not in text
    before = (gen / "models.c").stat().st_mtime_ns
    firmware.write_registry(gen)  # unchanged content: file untouched, so no rebuild
    assert (gen / "models.c").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="no exported model 'gamma'"):
        firmware.resolve_exported("gamma", fw_dir=tmp_path)


def test_generated_code_is_never_tracked():
    """firmware/generated/ holds only what the toolkit writes: no tracked file there, and git ignores it."""
    repo = Path(__file__).resolve().parent.parent  # the checkout the tests live in
    tracked = subprocess.run(["git", "ls-files", "--", "firmware/generated"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout
    assert tracked == ""
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", "firmware/generated/models.c"], cwd=repo)
    assert ignored.returncode == 0


def test_esp32s3_budget_is_the_pool_the_port_allocates():
    """The fit check gives a model the pool the ESP32-S3 port allocates (boards/esp32s3.json's pool_bytes,
    the define the build script hands the port), not the board's 8 MB of PSRAM."""
    from toolkit.boards import load_board
    from toolkit.deploy.fit import RAM_RESERVE, LayerMemory, MemoryEstimate, budgets, check_fit

    class _Env:  # the part of PlatformIO's SCons environment the build script uses
        def __init__(self):
            self.defines = []

        def GetProjectOption(self, name):
            return {"custom_board_profile": "esp32s3"}[name]

        def subst(self, s):
            return str(pio.FIRMWARE_DIR) if s == "$PROJECT_DIR" else s

        def Append(self, CPPDEFINES):
            self.defines += CPPDEFINES

    env = _Env()
    script = pio.FIRMWARE_DIR / "tools" / "pio_board_pool.py"
    exec(compile(script.read_text(), str(script), "exec"), {"Import": lambda _: None, "env": env})
    board = load_board("esp32s3")
    assert env.defines == [("TH_POOL_BYTES", board.pool_bytes)] and board.pool_bytes < board.psram_bytes
    port = (pio.FIRMWARE_DIR / "src" / "port" / "port_esp32s3.cpp").read_text()
    assert "pool_size = TH_POOL_BYTES;" in port and "#define TH_POOL_BYTES" not in port
    assert budgets(board)["ram_bytes"] == board.pool_bytes - RAM_RESERVE
    # a model needing 6 MiB of RAM does not fit the 4 MiB pool, whatever the PSRAM chip holds
    layer = LayerMemory("conv", "conv", (1, 64, 64, 64), 1 << 18, 1 << 20)
    with pytest.raises(ValueError, match="does not fit target 'esp32s3'"):
        check_fit(MemoryEstimate(1 << 20, 6 << 20, layer, 1 << 12, 1 << 12, "test"), board)


# The per-element kernels of a network: each may call only functions of the engine itself, never the C
# library or compiler helpers (an out-of-line memcpy per 4-byte load made the engine 4x slower once).
HOT_KERNELS = ("tk_conv2d_wide_s8", "tk_conv2d_s8", "tk_conv2d_3x3_s8", "tk_conv2d_1x1_s8",
               "tk_depthwise_conv2d_s8", "tk_add_s8", "tk_requantize_s8", "tk_concat_s8")


def _call_graph(elf) -> dict:
    """{function: {functions it calls or tail-calls}} from the disassembly of `elf`."""
    dis = subprocess.run(["arm-none-eabi-objdump", "-d", "--no-show-raw-insn", str(elf)], capture_output=True,
                         text=True, check=True).stdout
    starts, branches, fn = [], [], None
    for line in dis.splitlines():
        m = re.match(r"^([0-9a-f]+) <([^>]+)>:$", line)
        if m:
            fn = m.group(2)
            starts.append((int(m.group(1), 16), fn))
            continue
        m = re.search(r"\s(?:bl|blx|b|b\.w|b\.n)\s+([0-9a-f]+) <", line)
        if m and fn is not None:
            branches.append((fn, int(m.group(1), 16)))
    # A target is named by the function whose code holds its address, not by objdump's label: an absolute
    # linker symbol (STACK_SIZE = 0x8000) can share the address of a branch inside a kernel.
    starts.sort()
    addresses = [a for a, _ in starts]
    calls = {f: set() for _, f in starts}
    for fn, target in branches:
        k = bisect.bisect_right(addresses, target) - 1
        callee = starts[k][1] if k >= 0 else f"0x{target:x}"
        calls[fn].add(callee)
    return {f: callees - {f} for f, callees in calls.items()}


@pytest.mark.skipif(not shutil.which("arm-none-eabi-gcc"), reason="arm-none-eabi-gcc not installed")
@pytest.mark.parametrize("env", ["qemu_m4", "qemu_m7"])
def test_hot_kernels_call_no_out_of_line_helpers(export_models, tmp_path, env):
    """The firmware as built (the platform's own flags) with a model using every kernel, wide and int8
    convolutions: every call reachable from a hot kernel stays inside the engine library."""
    from toolkit.artifacts import write_manifest
    from toolkit.deploy import codegen, ir

    fw = firmware.copy_project(tmp_path / "fw")
    gen = fw / "generated"
    graph = ir.load_qdq(export_models["every"])
    for name, wide in (("every_wide", True), ("every_int8", False)):
        codegen.write_files(codegen.generate(graph, name, wide=wide)[0], gen)
    write_manifest(gen, firmware.EXPORT_STAGE, models={n: {"source": "every"} for n in ("every_wide", "every_int8")})
    assert firmware.write_registry(gen) == ["every_int8", "every_wide"]
    elf = pio.build(env, fw_dir=fw)
    lib = next((fw / ".pio" / "build" / env).glob("lib*/libtkengine.a"))
    nm = subprocess.run(["arm-none-eabi-nm", "--defined-only", str(lib)], capture_output=True, text=True,
                        check=True).stdout
    engine = {parts[2] for parts in map(str.split, nm.splitlines()) if len(parts) == 3 and parts[1] in "Tt"}
    graph_calls = _call_graph(elf)
    hot = [k for k in HOT_KERNELS if k in graph_calls]  # the model needs no requantize op
    assert len(hot) == len(HOT_KERNELS) - 1 and "tk_requantize_s8" not in hot, hot
    seen, todo, outside = set(), list(hot), []
    while todo:
        f = todo.pop()
        for callee in graph_calls.get(f, ()):
            if callee not in engine:
                outside.append(f"{f} -> {callee}")
            elif callee not in seen:
                seen.add(callee)
                todo.append(callee)
    assert not outside, f"hot kernels call out-of-line helpers: {outside}"
