# The two commands of the README: `make run` (the main job on the embedded default) and `make test` (what CI runs).
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
# tcmalloc makes CPU training 1.3-4x faster and far less noisy than glibc malloc.
TCMALLOC := $(firstword $(wildcard /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4))
export LD_PRELOAD := $(TCMALLOC)

.PHONY: setup run study test slurm chromium check docs lab
setup: $(VENV)/.installed
$(VENV)/.installed: settings.ini setup.py pyproject.toml
	bash .ci/system-packages.sh
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/python tools/install_kernel.py
	touch $@

# The main job: the README's fourteen student configurations for seed 0 at the cpu scale, into runs/local/cpu/ (not in git),
# distilled from the committed study's teacher (shipped with its weights), ending with its report and a comparison of
# its seed 0 with the committed study in runs/cpu/. TRAIN_TEACHER=1 trains the teacher again and compares it too.
TEACHER := $(if $(TRAIN_TEACHER),,--teacher runs/cpu/teacher/seed0)
run: setup
	$(BIN)/python -m isokd.study --scale cpu --seeds 1 --configs readme --root runs/local --compare-with runs/cpu $(TEACHER)

# The committed study: the scale's design (cpu: two CPU cores; paper: GPUs, or --executor slurm); SEEDS=N for
# seeds 0..N-1 of every configuration of the design instead.
SCALE ?= cpu
study: setup
	$(BIN)/python -m isokd.study --scale $(SCALE) $(if $(SEEDS),--seeds $(SEEDS))

# what CI runs: a single-node Slurm for tests/test_slurm.py where one can start (it records why when it cannot, and those
# tests skip with that reason), Chromium for tests/test_site.py, then the checks
test: setup slurm chromium check
slurm:
	bash .ci/slurm-setup.sh
chromium:
	bash .ci/chromium.sh
check:
	PATH="$(abspath $(BIN)):$$PATH" bash .ci/check

# JupyterLab on nbs/ with the project's kernel (the environment's Python, with tcmalloc): read and run the notebooks.
# LAB_ARGS passes options through (--no-browser --port 8899, say).
lab: setup
	$(BIN)/jupyter lab --notebook-dir=nbs $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# The documentation site in _docs/ (mkdocs, Material theme: navigation and search): the README, docs/, the committed
# studies' pages, an API page and the executed library notebooks nbs/00_core ... nbs/14_slurm; NBS="01_data 05_kd" builds only
# those. Open _docs/index.html, or serve it: python -m http.server -d _docs
docs: setup
	$(BIN)/python tools/build_docs.py $(NBS)
