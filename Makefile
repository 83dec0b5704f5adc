# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DOCS_STAMP    := $(VENV)/.docs-stamp
RELEASE_STAMP := $(VENV)/.release-stamp

.PHONY: install test lint demo mock contracts bench soak docs dist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check perso_sync mock_server tests bench examples docs/_build
	$(BIN)/ruff format --check perso_sync mock_server tests bench examples docs/_build
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

# The API reference site in site/ (MkDocs, strict): fails on a broken link or cross-reference,
# a public name without a docstring or on no reference page (docs/_build/hooks.py).
$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,docs]'
	touch $@

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# sdist + wheel in dist/, their metadata checked, and the wheel installed into a fresh venv and
# used from outside this tree (tests/packaging).
$(RELEASE_STAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,release]'
	touch $@

dist: $(RELEASE_STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*
	PERSO_WHEEL="$$(ls dist/*.whl)" $(BIN)/python -m pytest -q tests/packaging

clean:
	rm -rf $(VENV) build dist site *.egg-info .pytest_cache .mypy_cache .ruff_cache
