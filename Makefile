# The README's two commands. Each creates .venv and installs what it needs on first use:
# `make demo` the package and its base dependencies, `make test` the development extras as well.
PY := .venv/bin/python

.PHONY: demo test install install-dev mutants
demo: .venv/installed
	.venv/bin/facetrain demo

test: .venv/installed-dev
	$(PY) -m pytest -q

install: .venv/installed
install-dev: .venv/installed-dev

# torch==2.13.0 first: on a CPU-only machine with a local wheel it is that wheel; elsewhere pip picks
# the default build for the platform (CUDA on Linux x86_64). The project itself accepts torch>=2.6,
# so a torch you installed into .venv beforehand is kept.
.venv/installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $@

# tests, mutation testing, ONNX, W&B, Hugging Face Hub, wheel building: see docs/testing.md
.venv/installed-dev: .venv/installed
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Mutation testing of the core modules with their fast unit tests (not CI: ~1 h on 2 cores).
# Configuration: [tool.mutmut] in pyproject.toml; equivalent survivors: docs/testing.md.
# MUTANT_JOBS=N runs N mutants at a time. Then the known science errors, one by one.
MUTANT_JOBS ?= 2
mutants: .venv/installed-dev
	rm -rf mutants
	nice $(PY) -m mutmut run --max-children $(MUTANT_JOBS)
	$(PY) scripts/mutation_scores.py
	$(PY) scripts/check_known_mutations.py
