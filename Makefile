# Two commands do all the set-up on a fresh machine: `make run` (the demo) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp

.PHONY: help venv node run playground doctor-demo test lint fmt e2e bench package lock clean

help:
	@echo "make run      start the demo: simulated Microsoft cloud + bot + Microsoft 365 Agents Playground"
	@echo "make playground DEMO_USER=patti   a second person next to a running demo (approvals)"
	@echo "make test     lint, format check, type check and the whole test suite (incl. browser end-to-end)"
	@echo "make e2e      only the browser end-to-end tests"
	@echo "make bench    benchmarks -> bench/results.json, bench/RESULTS.md (tables; bench/REPORT.md is written by hand)"
	@echo "make package  Teams app package -> dist/"
	@echo "make doctor-demo   python app.py doctor against the simulator of a running \`make run\`"
	@echo "make lock     regenerate requirements.txt / requirements-dev.txt (pinned, hashed) from pyproject.toml"

# Installs exactly the pinned, hashed versions in requirements-dev.txt (runtime + demo + package + test), then the
# project itself without letting pip resolve anything else.
$(STAMP): pyproject.toml requirements.txt requirements-dev.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

venv: $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node: $(NODE_STAMP)

run: $(STAMP) $(NODE_STAMP)
	$(PY) -m simulator.demo

# A second Playground as another person (DEMO_USER=patti by default) next to a running `make run`.
playground: $(STAMP) $(NODE_STAMP)
	$(PY) -m simulator.demo --second

# `python app.py doctor` against the simulator and database of a running `make run` (it writes data/demo.env).
doctor-demo: $(STAMP)
	@test -f data/demo.env || { echo "No demo is running: start \`make run\` in another terminal first."; exit 1; }
	ENV_FILE=data/demo.env $(PY) app.py doctor

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

# Needs the real bot id and host (MICROSOFT_APP_ID / BOT_DOMAIN, or in .env); PACKAGE_ARGS=--allow-placeholders
# builds a test package without them.
PACKAGE_ARGS ?=
package: $(STAMP)
	$(PY) -m manifest build $(PACKAGE_ARGS)

# The lock files: every version pinned with its hashes, resolved once for all platforms (Linux x86_64 and aarch64,
# macOS, Windows) and Python 3.11+. Existing pins are kept unless pyproject.toml needs another version;
# `make lock LOCK_FLAGS=--upgrade` moves everything to the newest allowed versions. uv is pinned and lives in
# its own venv, never in .venv.
UV_VERSION := 0.13.9
LOCK_VENV ?= .lock-venv
LOCK_FLAGS ?=
UV_COMPILE = $(LOCK_VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock" --quiet $(LOCK_FLAGS)

lock:
	@test -x $(LOCK_VENV)/bin/uv || ($(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install -q uv==$(UV_VERSION))
	$(UV_COMPILE) --extra test -o requirements-dev.txt
	$(UV_COMPILE) --constraint requirements-dev.txt -o requirements.txt

clean:
	rm -rf $(VENV) $(LOCK_VENV) node_modules dist .mypy_cache .ruff_cache .pytest_cache
