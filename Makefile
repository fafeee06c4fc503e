# The two commands of the README. Both create .venv and install on first use.
PY := .venv/bin/python

.PHONY: demo test install bench mutants
demo: .venv/installed
	.venv/bin/facetrain demo

test: .venv/installed
	$(PY) -m pytest -q

install: .venv/installed

# torch==2.13.0 first: on this kind of machine it is a local CPU wheel; elsewhere pip picks the
# default build for the platform (CUDA on Linux x86_64). The project itself accepts torch>=2.6,
# so a torch you installed into .venv beforehand is kept.
.venv/installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Mutation testing of the core modules with their fast unit tests (not CI: ~1 h on 2 cores).
# Configuration: [tool.mutmut] in pyproject.toml; equivalent survivors: mutants-equivalent.md.
# MUTANT_JOBS=N runs N mutants at a time. Then the deliberate errors of issue 15, one by one.
MUTANT_JOBS ?= 2
mutants: .venv/installed
	rm -rf mutants
	nice $(PY) -m mutmut run --max-children $(MUTANT_JOBS)
	$(PY) scripts/mutation_scores.py
	$(PY) scripts/check_known_mutations.py
