# `make test` works from a fresh clone: it creates .venv when missing, installs the project with its
# test extras, checks the code and runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint install lock run bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy domain store workflows activities worker stack web cli desk

test: lint
	$(BIN)/pytest

# requirements.lock, which the image installs with --require-hashes: the main dependencies of
# pyproject.toml and everything they need, pinned with their hashes, for the image's Python 3.11 on
# Linux x86_64. Run it after changing the dependencies; tests/test_deployment.py fails while the
# lock is stale. Existing pins are kept where they still fit: `make lock LOCK_ARGS=--upgrade` moves
# everything to the newest allowed versions.
LOCK_ARGS ?=
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" \
		$(LOCK_ARGS) -o requirements.lock
	$(BIN)/python -c 'from tests.test_deployment import stamp_lock; stamp_lock()'

# The embedded stack in the foreground: Temporal dev server, SMTP sink, worker. Ctrl-C stops it.
run: $(STAMP)
	$(BIN)/python -m stack

# Figures for docs/performance.md (not part of make test): about 30 minutes here (the report
# part seeds 10,000 cases: about 17 of them; `python -m benchmarks.run --only PART` runs one part).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
