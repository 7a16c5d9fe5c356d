# Two commands a newcomer needs: `make demo` and `make test`.
# Each creates (or refreshes, when pyproject.toml changed) the virtualenv in
# .venv, installs missing system tools, then does its job.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint fuzz bench bench-s3 bench-volume bench-ebs system-tools boot-kernel clean

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
# Two worker processes (pytest-xdist), each test file on one of them so that its
# module fixtures are made once; TEST_WORKERS= runs the suite in one process.
TEST_WORKERS ?= -n 2 --dist loadfile
test: $(STAMP) system-tools boot-kernel lint
	AMIBUNDLE_BOOT_TESTS=required $(BIN)/python -m pytest -p no:cacheprovider $(TEST_WORKERS)

# Longer fuzzing than the suite's 14 s a target: FUZZ_SECONDS per target (one
# after the other), new inputs collected in FUZZ_WORK, then merged into
# tests/fuzz/corpus/<target> (only those that add coverage); crashes are saved
# there as crash-*/timeout-*/oom-* and fail the suite's replay until fixed.
# Then the extreme memory cases of test_hostile.py (two million sparse extents).
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?= manifest tar unbundle
FUZZ_WORK ?= /tmp/amibundle-fuzz
FUZZ_LIMITS := -rss_limit_mb=512 -timeout=10 -max_len=16384

fuzz: $(STAMP) system-tools
	@status=0; for target in $(FUZZ_TARGETS); do \
	  corpus=tests/fuzz/corpus/$$target; mkdir -p $(FUZZ_WORK)/$$target; \
	  echo "fuzzing $$target for $(FUZZ_SECONDS) s"; \
	  $(BIN)/python -m tests.fuzz.run $$target -max_total_time=$(FUZZ_SECONDS) $(FUZZ_LIMITS) \
	    -print_final_stats=1 -artifact_prefix=$$corpus/ $(FUZZ_WORK)/$$target $$corpus \
	    || status=1; \
	  $(BIN)/python -m tests.fuzz.run $$target -merge=1 $(FUZZ_LIMITS) $$corpus $(FUZZ_WORK)/$$target \
	    || status=1; \
	done; \
	AMIBUNDLE_EXTREME=1 $(BIN)/python -m pytest -p no:cacheprovider -s \
	  tests/end_to_end/test_hostile.py -k millions || status=1; \
	exit $$status

bench: $(STAMP) system-tools
	$(BIN)/python benchmarks/run.py

bench-s3: $(STAMP) system-tools
	$(BIN)/python benchmarks/s3.py
	$(BIN)/python benchmarks/s3_streaming.py

bench-volume: $(STAMP) system-tools
	$(BIN)/python benchmarks/volume.py

bench-ebs: $(STAMP) system-tools
	$(BIN)/python benchmarks/ebs.py

clean:
	rm -rf $(VENV) demo-output benchmarks/work .pytest_cache .mypy_cache .ruff_cache .cache
