# The two commands of the README: `make run` (the main job on the embedded default) and `make test` (what CI runs).
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
# tcmalloc makes CPU training 1.3-4x faster and far less noisy than glibc malloc.
TCMALLOC := $(firstword $(wildcard /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4))
export LD_PRELOAD := $(TCMALLOC)

.PHONY: setup run test check
setup: $(VENV)/.installed
$(VENV)/.installed: settings.ini setup.py pyproject.toml
	bash .ci/system-packages.sh
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# The main job: KD-i on the embedded default (Fashion-MNIST, CPU); the default teacher is trained first if not cached.
run: setup
	$(BIN)/papermill nbs/run_kd.ipynb runs/run_kd-isotonic.ipynb -p calibration isotonic

test: setup check
check:
	PATH="$(abspath $(BIN)):$$PATH" bash .ci/check
