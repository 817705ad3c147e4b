# The two commands a newcomer needs: `make test` and `make bench`. Both build the venv first.
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test bench clean

venv: $(STAMP)

# torch is pinned exactly: 2.13.0 is the CPU wheel on this workplace's disk; a looser pin pulls a CUDA build.
# Byte-compiled on all cores afterwards (pip compiles one file at a time); compiled ahead because the
# environment may forbid writing .pyc at import (PYTHONDONTWRITEBYTECODE), which makes every import slow.
# Files this Python cannot parse (torch ships 3.12-only test helpers) are skipped, as pip's own compile skips them.
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --no-compile torch==2.13.0
	$(PYTHON) -m pip install -q --no-compile -e '.[test,triton]'
	$(PYTHON) -m compileall -q -j 0 $$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') > /dev/null 2>&1 || true
	touch $(STAMP)

# Two workers: the tests spend much of their time starting ranks and waiting on them.
test: venv
	$(PYTHON) -m pytest -q -rs -n 2

bench: venv
	$(PYTHON) scripts/bench.py

clean:
	rm -rf $(VENV) .pytest_cache
