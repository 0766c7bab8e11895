# The Northwind pipeline. A newcomer needs two commands: `make run` and `make test`; both install
# what they need (uv, the locked Python environment, Meltano's plugins, an embedded PostgreSQL).
# Cluster targets (up, down, ui, trigger, backfill, logs, cluster-status, image, e2e,
# e2e-containers): mk/cluster.mk.

.PHONY: help install run test test-fast lint check bench bench-scaling status clean

include dags/northwind/cluster.env
include mk/cluster.mk
# Last: it checks the variables of the requested goals (DATE, PORT, ...) before anything runs.
include mk/user-vars.mk

# Pinned tool versions; uv installs the rest from uv.lock.
UV_VERSION := 0.13.9
# uv from PATH, else as a module (a fresh `pip install uv` may not be on PATH until a shell rehash).
UV ?= $(shell command -v uv 2>/dev/null || echo python3 -m uv)
DATE ?= $(shell date -u +%Y-%m-%d)
MELTANO_DIR := images/meltano
# The plugins are installed once; a change of meltano.yml or of the plugin package reinstalls them.
MELTANO_STAMP := $(MELTANO_DIR)/.meltano/.installed
# Our own Python sources (plugins, DAG folder, scripts): their bytecode is refreshed when one changes.
OUR_SOURCES := $(shell find $(MELTANO_DIR)/northwind-elt/src dags scripts -name '*.py' 2>/dev/null)
SOURCES_STAMP := $(MELTANO_DIR)/.meltano/.compiled
PYTEST_ARGS ?=

help:  ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

install: $(MELTANO_STAMP) $(SOURCES_STAMP)  ## Install uv, the Python environment and the Meltano plugins

# Bytecode is written once, at install: where PYTHONDONTWRITEBYTECODE is set (CI, many shells and
# containers) Python would otherwise compile every module it imports at every start, in each of a
# step's three processes (what it saves: docs/benchmark.md, "Figures behind the code").
.venv/.synced: pyproject.toml uv.lock Makefile
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	UV_COMPILE_BYTECODE=1 $(UV) sync --frozen
	@touch $@

# Our plugins run from .venv (meltano.yml: no pip_url); `meltano install` makes the stock tap's venv
# (tests and `make bench`), which gets its bytecode here; our own sources (editable) below.
$(MELTANO_STAMP): .venv/.synced $(MELTANO_DIR)/meltano.yml $(MELTANO_DIR)/northwind-elt/pyproject.toml
	cd $(MELTANO_DIR) && $(UV) run --frozen $(MELTANO_INSTALL)
	$(UV) run --frozen python -m compileall -q -j 0 $(MELTANO_DIR)/.meltano >/dev/null
	@touch $@

$(SOURCES_STAMP): $(MELTANO_STAMP) $(OUR_SOURCES)
	$(UV) run --frozen python -m compileall -q -j 0 $(MELTANO_DIR)/northwind-elt/src dags scripts >/dev/null
	@touch $@

run: install  ## Run the daily DAG locally for DATE=YYYY-MM-DD (default: today, UTC; REEXTRACT=1 reads the sources again)
	$(UV) run --frozen python scripts/run_local.py --date='$(DATE)' $(if $(filter 1 true yes,$(REEXTRACT)),--reextract)

.PHONY: airflow
airflow: install  ## Airflow 3 and its UI on this machine, no cluster (prints URL and login; Ctrl-C stops)
	$(UV) run --frozen python scripts/airflow_local.py $(if $(PORT),--port $(PORT))

status: install  ## Which steps succeeded for which days (local data tree); HTML=path also draws them
	NORTHWIND_DATA_ROOT=$(CURDIR)/data $(UV) run --frozen northwind status $(if $(HTML),--html '$(HTML)')

test: install  ## The whole test suite (what CI runs)
	$(UV) run --frozen pytest $(PYTEST_ARGS)

test-fast: install  ## The tests not marked slow: no Airflow run of the DAG, few Meltano runs
	$(UV) run --frozen pytest -m "not slow" $(PYTEST_ARGS)

lint: .venv/.synced  ## Ruff over every Python file
	$(UV) run --frozen ruff check .

check: lint test  ## Lint, then test

bench: install  ## Benchmark each step against raw COPY on a scaled source (SCALE=1000; BACKEND=s3 adds the S3 data tree)
	$(UV) run --frozen python -m scripts.bench $(if $(SCALE),--scale $(SCALE)) $(if $(filter s3,$(BACKEND)),--backend s3)

bench-scaling: install  ## Scaling table: extract-postgres and load-warehouse on 1, 2, 4 connections at scale 1000 and 10000 (~25 min, a few GB in /tmp)
	$(UV) run --frozen python -m scripts.bench --scaling

clean:  ## Stop the local PostgreSQL; remove data/, .local/ and the installed plugins (images/meltano/.meltano)
	-$(UV) run --frozen python -c "from pathlib import Path; from northwind_elt.localdb import stop_server; stop_server(Path('.local'))"
	rm -rf data .local $(MELTANO_DIR)/.meltano
