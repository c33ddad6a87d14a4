# Quick start: `make run` starts a server on 127.0.0.1:2525 with examples/backupmx.cf;
# `make test` installs what the tests need and runs the whole suite.

PYTHON ?= python3
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
