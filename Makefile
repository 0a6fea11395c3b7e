# Two set-up commands (README quick start). Each installs what is missing into .venv first.
#   make run    -> cosmos run (built-in phantom, tiny profile, the whole COSMOS pipeline through kfp.local)
#   make test   -> ruff (lint + format check), mypy on src/, then the fast tier of the suite (not the `slow`
#                  end-to-end tests: a few minutes on 2 cores)
#   make test-all -> the same, then every test, the end-to-end ones included (what CI runs: .ci/run)
# CPU install path: constraints/cpu.txt keeps torch on the CPU wheel. GPU users: pip install -e . (no constraints).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.cosmos-installed
OUT ?= cosmos-out
ARGS ?=
PYTEST_ARGS ?=
# test files run on this many pytest-xdist workers (a file's tests stay on one worker: module fixtures run once)
TEST_WORKERS ?= 2

.PHONY: install run test test-all lint clean

$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints/cpu.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/cosmos run --out $(OUT) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

test-all: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(OUT) .pytest_cache
