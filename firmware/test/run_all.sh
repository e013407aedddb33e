#!/usr/bin/env bash
# Firmware test stage for CI: unit tests on the host and under QEMU (Cortex-M4 and M7), builds of the
# benchmark firmware, and a bounded fuzz run of the serial protocol under ASan/UBSan.
# Each stage prints `N passed, N failed`; the last line is the total. Exit status 0 only if all passed.
#
#   firmware/test/run_all.sh                 # FUZZ_SECONDS=30 by default
#   FUZZ_SECONDS=5 firmware/test/run_all.sh
set -uo pipefail
cd "$(dirname "$0")/.."
FW_DIR=$(pwd)
REPO=$(cd .. && pwd)
FUZZ_SECONDS=${FUZZ_SECONDS:-30}
QEMU_TIMEOUT=${QEMU_TIMEOUT:-120}
export PLATFORMIO_SETTING_ENABLE_TELEMETRY=No
total_pass=0
total_fail=0

stage_result() { # name passed failed
    echo "[$1] $2 passed, $3 failed"
    total_pass=$((total_pass + $2))
    total_fail=$((total_fail + $3))
}

# Runs a unit-test program (command line in "$@") and adds the `N passed, N failed` it prints.
run_unit() {
    local name=$1; shift
    local log; log=$(mktemp)
    timeout "$QEMU_TIMEOUT" "$@" </dev/null >"$log" 2>&1
    local rc=$?
    cat "$log"
    local line; line=$(grep -E '^firmware unit tests on .*: [0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    rm -f "$log"
    if [[ -z "$line" ]]; then
        echo "[$name] no result line (exit $rc: crashed or timed out)"
        stage_result "$name" 0 1
        return
    fi
    local p f
    p=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\1/' <<<"$line")
    f=$(sed -E 's/.*: ([0-9]+) passed, ([0-9]+) failed/\2/' <<<"$line")
    if [[ $rc -ne 0 && $f -eq 0 ]]; then f=1; fi # a nonzero exit is a failure even if the count says 0
    stage_result "$name" "$p" "$f"
}

(cd "$REPO" && python -m toolkit.bench.pio setup) || { echo "0 passed, 1 failed"; exit 1; }

mkdir -p .pio
# The tests build the benchmark firmware in a private copy of the project (.pio/smoke/fw) and export the models
# they need there themselves: firmware/generated/ (ignored, a developer's own exports) never changes what runs.
SMOKE=$FW_DIR/.pio/smoke
(cd "$REPO" && python -c 'import sys; from toolkit.bench import firmware; firmware.copy_project(sys.argv[1])' \
    "$SMOKE/fw") || { echo "0 passed, 1 failed"; exit 1; }

# 1. builds: the benchmark firmware for every offline env (in the copy), and the unit-test programs
bp=0; bf=0
for env in native qemu_m4 qemu_m7 test_native test_qemu_m4 test_qemu_m7; do
    dir=$FW_DIR; [[ $env == test_* ]] || dir=$SMOKE/fw
    if pio run -s -d "$dir" -e "$env" >.pio/build_$env.log 2>&1; then
        bp=$((bp + 1))
    else
        bf=$((bf + 1)); echo "build of $env failed:"; tail -30 .pio/build_$env.log
    fi
done
stage_result builds $bp $bf

# 2. unit tests: the same sources on the host and on both emulated cores
QEMU=(qemu-system-arm -display none -monitor none -serial stdio -icount shift=0,align=off,sleep=off
      -semihosting-config enable=on,target=native)
run_unit native .pio/build/test_native/program
run_unit qemu_m4 "${QEMU[@]}" -M mps2-an386 -kernel .pio/build/test_qemu_m4/program.elf
run_unit qemu_m7 "${QEMU[@]}" -M mps2-an500 -kernel .pio/build/test_qemu_m7/program.elf

# 3. kernels smoke: two small real models (the student-shaped net and the every-kernel net, int8 quantized on
#    crops of the astronaut photo, as the export tests build them), exported into the private copy, run the
#    firmware's built-in input on the host and both QEMU cores, with the same output CRC everywhere and the
#    Python int8 reference's CRC.
if (cd "$REPO" && python - "$SMOKE" <<'PY'
import contextlib
import sys
from pathlib import Path
from toolkit.bench import firmware, pio, transport
from toolkit.bench.protocol import Device, crc32, selftest_input
from toolkit.deploy import int8ref, ir
smoke = Path(sys.argv[1])
fw = smoke / "fw"
sys.path.insert(0, str(Path.cwd() / "tests"))
from fixtures_export import build_qdq_model
for kind in ("student", "every"):
    firmware.export_model(build_qdq_model(kind, smoke / "onnx"), "qemu-m4", fw, name=f"smoke_{kind}")
for env in ("native", "qemu_m4", "qemu_m7"):
    pio.build(env, fw_dir=fw)
names = firmware.exported_models(fw / "generated")
crcs = {}  # one CRC per model: the int8 reference's where its source is at hand, else the host's
for name in names:
    with contextlib.suppress(FileNotFoundError):  # exported from a file that is gone: compare the cores only
        [(_, onnx)] = firmware.resolve_exported(name, fw_dir=fw)
        graph = ir.load_qdq(onnx)
        t_in = graph.tensors[graph.input]
        crcs[name] = crc32(int8ref.run(graph, selftest_input(t_in.size).reshape(t_in.shape)).tobytes())
        print(f"reference: selftest {name} crc={crcs[name]:08x}")
passed = failed = 0
for env, machine in (("native", None), ("qemu_m4", "mps2-an386"), ("qemu_m7", "mps2-an500")):
    build = fw / ".pio" / "build" / env
    try:
        opener = (transport.open_native(build / "program", timeout=60) if machine is None
                  else transport.open_qemu(machine, build / "program.elf", timeout=60))
        with opener as link:
            dev = Device(link)
            dev.identify()
            for name in names:
                r = dev.selftest(name, timeout=300)
                same = crcs.setdefault(name, r["crc"]) == r["crc"]
                print(f"{env}: selftest {name} crc={r['crc']:08x} {r['ticks']} {r['unit']}"
                      + ("" if same else f" DIFFERS from {crcs[name]:08x}"))
                passed, failed = passed + same, failed + (not same)
    except Exception as exc:  # any failure is a failed smoke test, reported, not a crash of the stage
        print(f"{env}: selftest failed: {exc}")
        failed += 1
print(f"smoke: {passed} passed, {failed} failed")
sys.exit(1 if failed or not passed else 0)
PY
) | tee .pio/smoke.log; then :; fi
if grep -qE '^smoke: [0-9]+ passed' .pio/smoke.log; then
    stage_result smoke "$(sed -nE 's/^smoke: ([0-9]+) passed.*/\1/p' .pio/smoke.log)" \
        "$(sed -nE 's/^smoke: [0-9]+ passed, ([0-9]+) failed/\1/p' .pio/smoke.log)"
else
    stage_result smoke 0 1
fi

# 4. fuzz: libFuzzer when clang has it, else the bounded random-frame driver; both under ASan+UBSan
FUZZ_DIR=.pio/fuzz
mkdir -p "$FUZZ_DIR"
SRCS=(src/ee_harness.c src/ee_protocol.c src/port/port_native.c test/support/tiny_model.c
      test/support/tiny_pipeline.c src/app/tk_frame.c test/fuzz/fuzz_protocol.c)
INC=(-Isrc -Isrc/app -Ilib/tkengine/include)
SAN=(-g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
fuzz_log=$FUZZ_DIR/fuzz.log
if command -v clang >/dev/null && clang "${SAN[@]}" -fsanitize=fuzzer "${INC[@]}" "${SRCS[@]}" \
        -DTH_NATIVE_POOL_BYTES=65536 -o "$FUZZ_DIR/fuzz_protocol" 2>"$FUZZ_DIR/build.log"; then
    echo "fuzz: libFuzzer (clang), ${FUZZ_SECONDS}s"
    rm -rf "$FUZZ_DIR/corpus" && cp -r test/fuzz/corpus "$FUZZ_DIR/corpus"
    "$FUZZ_DIR/fuzz_protocol" -max_total_time="$FUZZ_SECONDS" -max_len=4096 -dict=test/fuzz/protocol.dict \
        -print_final_stats=1 "$FUZZ_DIR/corpus" >"$fuzz_log" 2>&1
    rc=$?
else
    echo "fuzz: clang/libFuzzer unavailable; gcc random-frame driver, ${FUZZ_SECONDS}s"
    gcc "${SAN[@]}" -DTK_FUZZ_STANDALONE "${INC[@]}" "${SRCS[@]}" -DTH_NATIVE_POOL_BYTES=65536 \
        -o "$FUZZ_DIR/fuzz_protocol_gcc" && "$FUZZ_DIR/fuzz_protocol_gcc" "$FUZZ_SECONDS" >"$fuzz_log" 2>&1
    rc=$?
fi
grep -E '^fuzz: [0-9]+ frames|^Done [0-9]+ runs|stat::number_of_executed_units' "$fuzz_log"
if [[ $rc -eq 0 ]] && grep -qE '^fuzz: [0-9]+ frames' "$fuzz_log"; then
    stage_result fuzz 1 0
else
    tail -40 "$fuzz_log"; stage_result fuzz 0 1
fi

echo "firmware tests: ${total_pass} passed, ${total_fail} failed"
echo "${total_pass} passed, ${total_fail} failed"
[[ $total_fail -eq 0 ]]
