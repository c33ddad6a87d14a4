# Quick start: `make run` starts a server on 127.0.0.1:2525 with examples/backupmx.cf;
# `make test` installs what the tests need and runs the whole suite.

# The virtualenv's interpreter: the distribution's python3 when it is new enough and can
# make one (Debian's is an optimised, statically linked build: about a tenth less CPU per
# message than a default source build, docs/performance.md), else the first python3 on PATH.
SYSTEM_PYTHON := /usr/bin/python3
PYTHON ?= $(shell $(SYSTEM_PYTHON) -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' \
	2>/dev/null && echo $(SYSTEM_PYTHON) || echo python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench

# The stamps make a second run fast: pip runs again only when pyproject.toml changes.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,lint]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	mkdir -p var
	$(BIN)/backupmx -c examples/backupmx.cf serve

test: $(VENV)/.installed-dev
	./scripts/install-test-deps.sh
	$(BIN)/pytest -q

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check backupmx tests bench
	$(BIN)/mypy backupmx

# The benchmark beside a private Postfix (see docs/performance.md); about 20 minutes.
bench: $(VENV)/.installed-dev
	./scripts/install-test-deps.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)
