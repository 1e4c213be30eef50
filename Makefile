# Two commands do all the set-up on a fresh machine: `make run` (the demo) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp

.PHONY: help venv node run playground test lint fmt e2e bench package clean

help:
	@echo "make run      start the demo: simulated Microsoft cloud + bot + Microsoft 365 Agents Playground"
	@echo "make playground DEMO_USER=patti   a second person next to a running demo (approvals)"
	@echo "make test     lint, format check, type check and the whole test suite (incl. browser end-to-end)"
	@echo "make e2e      only the browser end-to-end tests"
	@echo "make bench    benchmarks -> bench/REPORT.md"
	@echo "make package  Teams app package -> dist/"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node: $(NODE_STAMP)

run: $(STAMP) $(NODE_STAMP)
	$(PY) -m bot.demo

# A second Playground as another person (DEMO_USER=patti by default) next to a running `make run`.
playground: $(STAMP) $(NODE_STAMP)
	$(PY) -m bot.demo --second

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: $(STAMP) $(NODE_STAMP) lint
	$(PY) -m pytest -q

e2e: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest -q -m e2e tests/e2e

bench: $(STAMP)
	$(PY) -m bench

package: $(STAMP)
	$(PY) -m manifest build

clean:
	rm -rf $(VENV) node_modules dist .mypy_cache .ruff_cache .pytest_cache
