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

# One worker per core, 2 to 8: the tests spend much of their time starting ranks and waiting on them, and on a GPU
# box compiling kernels. Tests that time kernels have the GPU to themselves (tests/conftest.py, gpu_exclusive).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 2 ? 2 : n > 8 ? 8 : n )))
test: venv
	$(PYTHON) -m rocbench env --origins
	$(PYTHON) -m pytest -q -rfEs -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: venv
	$(PYTHON) -m rocbench env --origins
	$(PYTHON) scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
