# Two commands a newcomer needs: `make demo` and `make test`.
# Each creates (or refreshes, when pyproject.toml changed) the virtualenv in
# .venv, installs missing system tools, then does its job.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-s3 bench-volume bench-ebs system-tools boot-kernel clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

system-tools:
	@scripts/ensure-system-tools.sh

# Debian's cloud kernel for the boot tests, downloaded here so tests never do.
boot-kernel:
	@scripts/fetch-boot-kernel.sh

demo: $(STAMP) system-tools
	$(BIN)/python scripts/demo.py

lint: $(STAMP)
	$(BIN)/ruff check amibundle tests scripts benchmarks
	$(BIN)/ruff format --check amibundle
	$(BIN)/mypy

# Under make test the boot tests must run: a missing kernel, qemu or firmware fails them.
test: $(STAMP) system-tools boot-kernel lint
	AMIBUNDLE_BOOT_TESTS=required $(BIN)/python -m pytest -p no:cacheprovider

bench: $(STAMP) system-tools
	$(BIN)/python benchmarks/run.py

bench-s3: $(STAMP)
	$(BIN)/python benchmarks/s3.py

bench-volume: $(STAMP) system-tools
	$(BIN)/python benchmarks/volume.py

bench-ebs: $(STAMP) system-tools
	$(BIN)/python benchmarks/ebs.py

clean:
	rm -rf $(VENV) demo-output benchmarks/work .pytest_cache .mypy_cache .ruff_cache .cache
