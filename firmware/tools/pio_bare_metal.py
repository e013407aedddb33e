"""PlatformIO extra script for the bare-metal real-board envs (nucleo_h743zi): our own startup code
(src/port/cortexm_common.c) and linker script, so no crt0 and the ld/ folder on the library path
(the linker scripts INCLUDE ld/sections.ld.inc)."""

Import("env")  # noqa: F821  (SCons injects it)

env.Append(  # noqa: F821
    LINKFLAGS=["-nostartfiles"],  # ststm32 itself adds nano/nosys specs and --gc-sections
    LIBPATH=[env.subst("$PROJECT_DIR/ld")],  # noqa: F821
)
