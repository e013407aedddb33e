"""Offline dev-platform: the compilers come from PATH (host gcc, arm-none-eabi-gcc) and no package is
declared, so PlatformIO never asks its registry for anything."""

from platformio.public import PlatformBase


class TinymllocalPlatform(PlatformBase):
    pass
