#!/usr/bin/env bash
# Makes `pio run -e native|qemu_m4|qemu_m7` work without the PlatformIO registry (idempotent).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python -m toolkit.bench.pio setup
