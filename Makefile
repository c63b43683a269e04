# ktape — two commands from a fresh clone: `make demo` and `make test`.
# Everything either needs is installed here (never by hand): Python deps into .venv,
# the pinned QuestDB jar and buf into .tools/, generated stubs into the package tree.

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install deps questdb buf openapiv2 stripe-mock postgres helm gen docs console chromium lint fmt test test-unit demo up bench clean help

help:
	@echo "make demo   install everything and run the whole stack on the simulator"
	@echo "make test   install everything and run lint + the full test suite"
	@echo "make bench  run the benchmarks (bench/), results in bench/results/"

install: deps questdb buf openapiv2 stripe-mock postgres helm gen console

deps: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ktape needs Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

questdb:
	bash infra/install_questdb.sh

buf:
	bash infra/install_buf.sh >/dev/null

openapiv2:
	bash infra/install_openapiv2.sh >/dev/null

stripe-mock:
	bash infra/install_stripe_mock.sh >/dev/null

postgres:
	bash infra/install_postgres.sh >/dev/null

# helm for the deploy/ checks (infra/check_deploy.py); minutes the first time, then stamped.
helm:
	bash infra/install_helm.sh >/dev/null

console:
	bash infra/build_console.sh

# Debian's Chromium, for the console's browser tests (Playwright drives it).
chromium:
	bash infra/install_chromium.sh >/dev/null

gen: deps
	$(PY) infra/gen_protos.py
	$(PY) infra/gen_docs.py

docs: gen
	$(PY) infra/gen_docs.py --write-docs
	$(PY) infra/gen_client_docs.py

lint: install
	$(VENV)/bin/ruff check .
	bash infra/buf.sh lint
	bash infra/buf.sh breaking
	$(PY) infra/gen_docs.py --check
	$(PY) infra/gen_client_docs.py --check
	$(PY) infra/check_deploy.py

fmt: deps
	$(VENV)/bin/ruff check --fix .

test: install chromium lint
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

test-unit: install
	$(VENV)/bin/pytest -q tests/unit $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/ktape up --simulator

up: install
	$(VENV)/bin/ktape up

BENCHES := bench/sim/throughput.py bench/ingest/pipeline.py bench/ingest/live_lag.py \
	bench/ingest/two_processes.py \
	bench/query/orderbook_latency.py bench/query/history_latency.py bench/query/stream_fanout.py \
	bench/query/analytics.py bench/query/audit.py bench/billing/interceptor_overhead.py \
	bench/billing/ledger.py bench/datasets/export.py bench/datasets/download.py \
	bench/client/client_overhead.py bench/storage/bytes_per_change.py bench/load/rest_mix.py

bench: install
	@mkdir -p bench/results
	@for b in $(BENCHES); do echo "== $$b"; KTAPE_LOG_LEVEL=WARNING $(PY) "$$b" || exit 1; done

clean:
	rm -rf build .pytest_cache .ruff_cache ktape/marketdata ktape/billing
