# Two commands for a new user: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lock upgrade lint typecheck pytest bench bench-pipeline bench-bulk bench-bulk-kill bench-burst bench-follow chaos emulator clean

# uv installs exactly uv.lock. Where no uv is on PATH, a pinned one is bootstrapped into .tools/
# with pip (no root). UV=... picks another.
UV_VERSION := 0.13.10
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
# The virtualenv is the project's own, wherever uv is; uv's own cache stays where uv keeps it.
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON := $(PYTHON)

$(UV):
	@echo "bootstrapping uv $(UV_VERSION) into .tools/ (pip, no root)"
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# The `kerberos` extra (pykerberos, gssapi) builds against MIT Kerberos: installed where its
# headers are (`krb5-config`, Debian's libkrb5-dev), else left out and the Kerberos tests skip.
# The stamp records which extras were synced, so installing libkrb5-dev later re-syncs.
KERBEROS_EXTRA := $(if $(shell command -v krb5-config 2>/dev/null),--extra kerberos,)
ifneq ($(shell cat $(STAMP) 2>/dev/null),synced $(KERBEROS_EXTRA))
.PHONY: $(STAMP)
endif

$(STAMP): pyproject.toml uv.lock | $(UV)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "sccm-refresh needs Python 3.11+ (set PYTHON=python3.11)")'
	$(UV) sync --locked --quiet --python $(PYTHON) $(KERBEROS_EXTRA)
	@echo "synced $(KERBEROS_EXTRA)" > $(STAMP)

# `make lock`: uv.lock follows a changed pyproject.toml, every other pin kept.
lock: | $(UV)
	$(UV) lock
	@echo "uv.lock updated for pyproject.toml: now run 'make test', then commit both."

# `make upgrade`: moves uv.lock to the newest versions pyproject.toml allows. Deliberate, never
# implicit: run the suite after it and commit uv.lock with what the upgrade needed.
upgrade: | $(UV)
	$(UV) lock --upgrade
	@echo "uv.lock upgraded: now run 'make test', then commit uv.lock (git diff uv.lock shows what moved)."

demo: $(STAMP)
	$(BIN)/sccm-refresh demo

test: lint typecheck pytest

lint: $(STAMP)
	$(UV) lock --check --quiet || { echo "uv.lock does not match pyproject.toml: run 'make lock' and commit uv.lock"; exit 1; }
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

# The suite's files run on PYTEST_WORKERS processes (pytest-xdist; a file stays on one process, so
# its module fixtures are shared): most integration time is spent waiting on servers and workers.
PYTEST_WORKERS ?= 3
pytest: $(STAMP)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  echo "NOTE: chromium is not installed: the Flower browser test will be skipped. Install it (root): apt-get install -y chromium"
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m bench.emulator_bench

bench-pipeline: $(STAMP)
	$(BIN)/python -m bench.pipeline_bench

# Bulk efficiency, fan-out, urgent request under load, overhead per refresh: JSON on stdout, a
# table on stderr, two rounds (about 8 minutes). BULK_BENCH_ARGS="--profile DIR" adds a py-spy profile.
bench-bulk: $(STAMP)
	$(BIN)/python -m bench.bulk_bench $(BULK_BENCH_ARGS)

# A bulk of 1,000 through the API with a worker SIGKILLed at 30 %, next to the same bulk without:
# JSON on stdout, a table on stderr (about 3 minutes).
bench-bulk-kill: $(STAMP)
	$(BIN)/python -m bench.bulk_kill_bench $(BULK_KILL_BENCH_ARGS)

# A burst of single requests through the API (500 at cap 3 and 20 ms, 1,000 at cap 8 and 100 ms),
# next to the provider's ideal pace: JSON on stdout, a table on stderr (docs/benchmarks.md).
bench-burst: $(STAMP)
	$(BIN)/python -m bench.burst_bench

# Following 10,000 packages x 10 DPs at one site: WS-Man operations per 100 packages per poll
# interval, batched per site next to per-request reads, and memory: JSON on stdout, a table on stderr (2-3 minutes).
bench-follow: $(STAMP)
	$(BIN)/python -m bench.follow_bench

# Every chaos scenario at 300 requests (docs/chaos.md); exits non-zero if any breaks its promise.
chaos: $(STAMP)
	$(BIN)/python -m chaos --requests 300

emulator: $(STAMP)
	$(BIN)/sccm-refresh emulator

clean:
	rm -rf $(VENV) .tools .mypy_cache .pytest_cache .ruff_cache .sccm-refresh
