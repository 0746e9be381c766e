# graphwire: the one entry point. `make run` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.graphwire-installed
TOOLS_STAMP := tools/node_modules/.graphwire-installed
OFFICIAL_SCHEMA := tools/node_modules/@asyncapi/specs/schemas/3.0.0-without-$$id.json
PORT ?= 8000
HOST ?= 127.0.0.1

.PHONY: setup gen gen-check run test lint fmt clean bench

setup: $(STAMP) $(TOOLS_STAMP)

$(STAMP): codegen/pyproject.toml server/pyproject.toml clients/python/pyproject.toml requirements-dev.txt bench/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -r bench/requirements.txt \
		-e 'codegen[test]' -e 'server[test]' -e 'clients/python[test]'
	touch $@

$(TOOLS_STAMP): tools/package.json tools/package-lock.json
	npm ci --prefix tools --no-audit --no-fund --loglevel=error
	touch $@

gen: $(STAMP)
	$(PY) -m graphwire_codegen generate

gen-check: $(STAMP)
	$(PY) -m graphwire_codegen check

run: $(STAMP)
	$(VENV)/bin/graphwire serve --host $(HOST) --port $(PORT)

test: setup gen-check
	$(PY) -m pytest

lint: setup
	$(PY) -m graphwire_codegen lint --official-schema '$(OFFICIAL_SCHEMA)'
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy

# Fan-out benchmark against a raw websockets.broadcast() server; writes bench/RESULTS.md.
bench: $(STAMP)
	$(PY) bench/run.py

fmt: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) tools/node_modules
