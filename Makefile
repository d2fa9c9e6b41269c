# ccmon developer entry points. `make test` is exactly what CI runs (.ci/run).
# Everything runs in the project's virtual environment (VENV, made by PYTHON on first use:
# deploy/local/install.sh), never in the system's Python.
PYTHON ?= python3
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
export CCMON_VENV := $(VENV)

.PHONY: help install demo test test-unit services-up services-down run lint bench docs

help:
	@echo "make demo        install ccmon, live wallboard on simulated traffic (no services)"
	@echo "make test        install, lint, start real Kafka + Redis, run every test (what CI runs)"
	@echo "make test-unit   the fast unit tests: tests/unit without the realdata and slow ones, no services"
	@echo "make run         start Kafka + Redis, a worker and an exporter on :9108"
	@echo "make services-up / services-down"
	@echo "make lint        ruff check, ruff format --check, mypy"
	@echo "make bench       benchmarks -> docs/BENCHMARKS.md (earlier runs: BENCHMARKS_HISTORY.md; not part of the tests)"
	@echo "make docs        docs/METRICS.md's KPI tables from the KPI catalog (kpi_core/catalog.py)"

install:
	PYTHON=$(PYTHON) bash deploy/local/install.sh test

demo:
	PYTHON=$(PYTHON) bash deploy/local/install.sh
	$(PY) -m streams.cli demo

test:
	PYTHON=$(PYTHON) bash deploy/local/test.sh

# tests/unit without the real-data regressions and the tests marked slow (`make test` runs them all, and the
# engine's properties with 60 examples each instead of 20), a process per core (pytest-xdist, tests spread one by one)
test-unit: install
	PATH="$(VENV)/bin:$$PATH" CCMON_PROPERTY_EXAMPLES=$${CCMON_PROPERTY_EXAMPLES:-20} $(PY) -m pytest tests/unit -q -n auto --dist load -m "not realdata and not slow"

services-up:
	bash deploy/local/services.sh up

services-down:
	bash deploy/local/services.sh down

run:
	PYTHON=$(PYTHON) bash deploy/local/run.sh

lint:
	PYTHON=$(PYTHON) bash deploy/local/install.sh dev
	$(PY) -m ruff check kpi_core streams tests bench
	$(PY) -m ruff format --check kpi_core streams tests bench
	$(PY) -m mypy

# make bench BENCH_ARGS=--quick: small sizes, a few minutes (bench/run_all.py --help)
bench:
	PYTHON=$(PYTHON) bash deploy/local/install.sh bench
	$(PY) bench/run_all.py $(BENCH_ARGS)

# docs/METRICS.md's KPI tables, generated from kpi_core/catalog.py (tests/unit/kpi_core/test_catalog.py fails while stale)
docs:
	PYTHON=$(PYTHON) bash deploy/local/install.sh
	$(PY) -m streams.cli.docs
