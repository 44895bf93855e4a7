# Two commands, each sets itself up on a fresh machine:
#   make demo   the main job on the embedded corpus
#   make test   the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA_DIR ?= $(CURDIR)/data

.PHONY: demo test lint setup clean

setup: $(STAMP)

$(STAMP): setup.py
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required, found " + sys.version.split()[0]'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m experiments.demo --data_dir=$(DATA_DIR)

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n 2 --dist worksteal --durations=12 tests

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
