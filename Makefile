# `make test` works from a fresh clone: it creates .venv when missing, installs the project with its
# test extras, checks the code and runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint install run bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy domain store workflows activities worker stack web cli

test: lint
	$(BIN)/pytest

# The embedded stack in the foreground: Temporal dev server, SMTP sink, worker. Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/python -m stack

# Figures for docs/performance.md (not part of make test): about 11 minutes here.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
