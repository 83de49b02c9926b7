# Two entry points: `make run` (serve the shipped models) and `make test` (the whole suite).
# Both create .venv when it is missing and install from this project's own files only.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint typecheck models bench-distributions clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-run the install whenever pyproject.toml changes.
$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[serve]'
	touch $@

$(VENV)/.all: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[serve,train,dev]'
	touch $@ $(VENV)/.serve

run: $(VENV)/.serve
	$(BIN)/python -m service --host $(HOST) --port $(PORT)

lint: $(VENV)/.all
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.all
	$(BIN)/mypy service

test: lint typecheck
	$(BIN)/python -m pytest

models: $(VENV)/.all
	$(BIN)/python -m model_export build-all

bench-distributions: $(VENV)/.all
	$(BIN)/python loadtest/bench_distributions.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
