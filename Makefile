# Two commands for a new user: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck pytest bench bench-pipeline bench-bulk chaos emulator clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "sccm-refresh needs Python 3.11+ (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sccm-refresh demo

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  echo "NOTE: chromium is not installed: the Flower browser test will be skipped. Install it (root): apt-get install -y chromium"
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m bench.emulator_bench

bench-pipeline: $(STAMP)
	$(BIN)/python -m bench.pipeline_bench

# Bulk efficiency, fan-out, urgent request under load, overhead per refresh: JSON on stdout, a
# table on stderr, two rounds (about 8 minutes). BULK_BENCH_ARGS="--profile DIR" adds a py-spy profile.
bench-bulk: $(STAMP)
	$(BIN)/python -m bench.bulk_bench $(BULK_BENCH_ARGS)

# Every chaos scenario at 300 requests (docs/chaos.md); exits non-zero if any breaks its promise.
chaos: $(STAMP)
	$(BIN)/python -m chaos --requests 300

emulator: $(STAMP)
	$(BIN)/sccm-refresh emulator

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .sccm-refresh
