# The two commands of the README: `make run` (the main job on the embedded default) and `make test` (what CI runs).
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
# tcmalloc makes CPU training 1.3-4x faster and far less noisy than glibc malloc.
TCMALLOC := $(firstword $(wildcard /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4))
export LD_PRELOAD := $(TCMALLOC)

.PHONY: setup run study test check docs
setup: $(VENV)/.installed
$(VENV)/.installed: settings.ini setup.py pyproject.toml
	bash .ci/system-packages.sh
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python tools/install_kernel.py
	touch $@

# The main job: the cpu study with one seed (the teacher and 15 runs), into runs/local/cpu/ (not in git), ending with
# its report and a comparison of its seed 0 with the committed three-seed study in runs/cpu/.
run: setup
	$(BIN)/python -m isokd.study --scale cpu --seeds 1 --root runs/local --compare-with runs/cpu

# The committed study: every configuration, three seeds, at SCALE (cpu: two CPU cores; paper: GPUs, or --executor slurm).
SCALE ?= cpu
SEEDS ?= 3
study: setup
	$(BIN)/python -m isokd.study --scale $(SCALE) --seeds $(SEEDS)

test: setup check
check:
	PATH="$(abspath $(BIN)):$$PATH" bash .ci/check

# Executed HTML copies of the numbered notebooks (nbs/00_core ... nbs/13_slurm) and an index, in _docs/
# (1-2 minutes on 2 shared cores); NBS="01_data 10_report" builds only those.
docs: setup
	$(BIN)/python tools/build_docs.py $(NBS)
