# The two commands a newcomer needs: `make test` and `make bench`. Both build the venv first
# (scripts/setup_env.py): over the torch and AITER of the Python that runs make when it has a torch (GPU and ROCm
# boxes, offline too; never installing another torch), else with the pinned CPU torch (CI).
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Narrow a run by hand: make test PYTEST_ARGS=tests/test_layers.py; make bench BENCH_ARGS=--dry-run
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: venv test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_env.py
	$(PY) scripts/setup_env.py $(VENV)
	touch $(STAMP)

# Two workers: the tests spend much of their time starting ranks and waiting on them. Tests that use a GPU
# share one worker (xdist group "gpu"), so no two of them time kernels on it at once.
test: venv
	$(PYTHON) -m rocbench env --origins
	$(PYTHON) -m pytest -q -rs -n 2 --dist loadgroup $(PYTEST_ARGS)

bench: venv
	$(PYTHON) -m rocbench env --origins
	$(PYTHON) scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
