"""SCons build script of the offline dev-platform.

Boards with `build.cpu` are bare-metal Cortex-M (arm-none-eabi-gcc from PATH, the board's linker script
from the project's `ld/` folder); an env without a board is the host (gcc from PATH). `pio run -t exec`
runs the result: the host program directly, a QEMU board under `qemu-system-arm -icount`.
"""

import json
import os
import shutil

from SCons.Script import AlwaysBuild, Default, DefaultEnvironment

env = DefaultEnvironment()
project_dir = env.subst("$PROJECT_DIR")
board = env.BoardConfig() if env.get("BOARD") else None
platform_dir = env.PioPlatform().get_dir()
with open(os.path.join(platform_dir, "build_flags.json")) as f:
    flags = json.load(f)  # shared with the export tests and the engine benchmarks
common_flags = flags["ccflags"]

if board is None:
    # Host build: the PlatformIO `native` idea, without the registry's `native` platform.
    env.Replace(CC="gcc", CXX="g++", AR="ar", RANLIB="ranlib", LINK="gcc", PROGSUFFIX="")
    env.Append(CCFLAGS=common_flags, CFLAGS=flags["cflags"], LINKFLAGS=["-Wl,--gc-sections"], LIBS=["m"])
else:
    prefix = "arm-none-eabi-"
    if not shutil.which(prefix + "gcc"):
        raise SystemExit(
            "arm-none-eabi-gcc is not on PATH (Debian: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi)"
        )
    cpu = board.get("build.cpu")
    fpu = board.get("build.fpu", "")
    machine = ["-mcpu=%s" % cpu, "-mthumb"]
    machine += ["-mfpu=%s" % fpu, "-mfloat-abi=hard"] if fpu else ["-mfloat-abi=soft"]
    env.Replace(
        CC=prefix + "gcc", CXX=prefix + "g++", AS=prefix + "gcc", AR=prefix + "gcc-ar",
        RANLIB=prefix + "gcc-ranlib", LINK=prefix + "gcc", OBJCOPY=prefix + "objcopy",
        SIZETOOL=prefix + "size", PROGSUFFIX=".elf",
        SIZEPROGREGEXP=r"^(?:\.text|\.data|\.rodata|\.ARM\.exidx)\s+(\d+).*",
        SIZEDATAREGEXP=r"^(?:\.data|\.bss)\s+(\d+).*",
        SIZECHECKCMD="$SIZETOOL -A -d $SOURCES",
        SIZEPRINTCMD="$SIZETOOL -B -d $SOURCES",
    )
    env.Append(
        ASFLAGS=machine,
        CCFLAGS=machine + common_flags,
        CFLAGS=flags["cflags"],
        CPPDEFINES=[("F_CPU", board.get("build.f_cpu", "0"))],
        LINKFLAGS=machine + [
            "-nostartfiles", "--specs=nano.specs", "--specs=nosys.specs", "-Wl,--gc-sections",
            "-L" + os.path.join(project_dir, "ld"), "-Wl,-Map," + os.path.join("$BUILD_DIR", "firmware.map"),
        ],
        LIBS=["m"],
    )
    env.Replace(LDSCRIPT_PATH=os.path.join(project_dir, "ld", board.get("build.ldscript")))

program = env.BuildProgram()
Default([program])

# `pio run -e ENV -t exec`: run the program (stdin/stdout = its serial port).
if board is None:
    run_cmd = "$SOURCE"
else:
    run_cmd = (
        "qemu-system-arm -M %s -display none -monitor none -serial stdio "
        "-icount shift=0,align=off,sleep=off -semihosting-config enable=on,target=native -kernel $SOURCE"
        % board.get("build.qemu_machine")
    )
AlwaysBuild(env.Alias("exec", program, env.VerboseAction(run_cmd, "Running $SOURCE")))
