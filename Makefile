# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test lint demo mock contracts bench soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check perso_sync mock_server tests bench examples
	$(BIN)/ruff format --check perso_sync mock_server tests bench examples
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/python examples/sync_script.py --embedded-mock

mock: $(STAMP)
	$(BIN)/python -m mock_server

contracts: $(STAMP)
	$(BIN)/python -m pytest -q tests/contracts

bench: $(STAMP)
	$(BIN)/python -m bench

# Not in CI: 20 sessions chatting against the mock with faults sprinkled in (MINUTES=10).
soak: $(STAMP)
	$(BIN)/python -m bench._soak --minutes $(or $(MINUTES),10)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
