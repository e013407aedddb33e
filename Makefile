# The two commands of the README: `make demo` (set up, then run the whole chain on bundled photos)
# and `make test` (pytest + firmware unit tests on native and QEMU).
PYTHON ?= python3
DEMO_OUT ?= demo-out

.PHONY: setup demo test test-python test-firmware

setup:
	bash scripts/setup.sh

demo: setup
	toolkit demo --out $(DEMO_OUT)

test: test-python test-firmware

test-python:
	$(PYTHON) -m pytest -q -rs

test-firmware:
	bash firmware/test/run_all.sh
