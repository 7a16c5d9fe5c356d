# Two commands a newcomer needs: `make demo` and `make test`.
# Each creates (or refreshes, when pyproject.toml changed) the virtualenv in
# .venv, installs missing system tools, then does its job.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-s3 bench-volume system-tools clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

system-tools:
	@scripts/ensure-system-tools.sh

demo: $(STAMP) system-tools
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check amibundle tests scripts benchmarks
	$(BIN)/ruff format --check amibundle
	$(BIN)/mypy

test: $(STAMP) system-tools lint
	$(BIN)/python -m pytest -p no:cacheprovider

bench: $(STAMP) system-tools
	$(BIN)/python benchmarks/run.py

bench-s3: $(STAMP) system-tools
	$(BIN)/python benchmarks/s3.py
	$(BIN)/python benchmarks/s3_streaming.py

bench-volume: $(STAMP) system-tools
	$(BIN)/python benchmarks/volume.py

clean:
	rm -rf $(VENV) demo-output benchmarks/work .pytest_cache .mypy_cache .ruff_cache
