# The two commands a newcomer needs: `make test` and `make bench`. Both build the venv first.
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test bench clean

venv: $(STAMP)

# torch is pinned exactly: 2.13.0 is the CPU wheel on this workplace's disk; a looser pin pulls a CUDA build.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e '.[test,triton]'
	touch $(STAMP)

test: venv
	$(PYTHON) -m pytest -q

bench: venv
	$(PYTHON) scripts/bench.py

clean:
	rm -rf $(VENV) .pytest_cache
