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
# The TypeScript SDK and its build outputs: the demo at GET / and the docs at GET /docs/asyncapi.
JS := clients/js
JS_STAMP := $(JS)/node_modules/.graphwire-installed
JS_SOURCES := $(shell find $(JS)/src $(JS)/demo -type f 2>/dev/null) $(wildcard $(JS)/tsconfig*.json)
STATIC := server/src/graphwire/static
DOCS_PAGE := $(STATIC)/docs/asyncapi.html
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: setup gen gen-check run test lint fmt clean bench docs chromium redis-server nginx fuzz

setup: $(STAMP) $(TOOLS_STAMP) $(JS_STAMP) $(JS)/dist/index.js $(STATIC)/demo/index.html $(DOCS_PAGE) chromium

$(STAMP): codegen/pyproject.toml server/pyproject.toml clients/python/pyproject.toml requirements-dev.txt bench/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -r bench/requirements.txt \
		-e 'codegen[test]' -e 'server[test]' -e 'clients/python[test]'
	touch $@

$(TOOLS_STAMP): tools/package.json tools/package-lock.json
	npm ci --prefix tools --no-audit --no-fund --loglevel=error
	touch $@

# Before gen-check: the TypeScript target runs json-schema-to-typescript and prettier from here.
$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	npm ci --prefix $(JS) --no-audit --no-fund --loglevel=error
	touch $@

# @graphwire/client: ESM + .d.ts in clients/js/dist.
$(JS)/dist/index.js: $(JS_STAMP) $(JS_SOURCES)
	npm run --prefix $(JS) --silent build

# The browser demo, bundled with esbuild into the server's static folder.
$(STATIC)/demo/index.html: $(JS_STAMP) $(JS_SOURCES) $(JS)/scripts/build-demo.mjs
	npm run --prefix $(JS) --silent demo

# spec/asyncapi.yaml rendered into one static HTML page: AsyncAPI's React component (standalone
# bundle) runs once, here, in Debian's chromium driven by the venv's Playwright; the page ships
# its markup, not the bundle. GET /docs/asyncapi serves it gzip-compressed (graphwire.docs_page).
docs: $(DOCS_PAGE)
$(DOCS_PAGE): $(JS_STAMP) $(STAMP) spec/asyncapi.yaml $(JS)/scripts/build-docs.mjs $(JS)/scripts/prerender-docs.py | chromium
	GRAPHWIRE_PYTHON=$(abspath $(PY)) npm run --prefix $(JS) --silent docs

# Debian's chromium for the browser tests (Playwright drives it; no browser download).
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		echo "installing Debian's chromium for the browser tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

# Debian's redis-server for the cluster tests: each test session starts its own on a free
# loopback port (tests/redis_proc.py); the package's system service is not used.
redis-server:
	@command -v redis-server >/dev/null || { \
		echo "installing Debian's redis-server for the cluster tests"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq redis-server; }

# Debian's nginx for the TLS test (tests/test_nginx_tls.py): it runs deploy/nginx.conf as a
# non-daemon on a free loopback port with its files in the test's tmp folder; the
# package's system service is not used, and not started while installing (a policy-rc.d
# that says no, unless one is there already): on a host whose port 80 is taken, the
# package's own start would fail and with it the install.
nginx:
	@test -x /usr/sbin/nginx || command -v nginx >/dev/null || { \
		echo "installing Debian's nginx for the TLS test"; \
		ours=; if [ ! -e /usr/sbin/policy-rc.d ]; then ours=1; \
			printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
			$(SUDO) chmod +x /usr/sbin/policy-rc.d; fi; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nginx; \
		rc=$$?; if [ -n "$$ours" ]; then $(SUDO) rm -f /usr/sbin/policy-rc.d; fi; exit $$rc; }

gen: $(STAMP) $(JS_STAMP)
	$(PY) -m graphwire_codegen generate

gen-check: $(STAMP) $(JS_STAMP)
	$(PY) -m graphwire_codegen check

run: $(STAMP)
	$(VENV)/bin/graphwire serve --host $(HOST) --port $(PORT)

test: setup gen-check redis-server nginx
	$(PY) -m pytest

lint: setup
	$(PY) -m graphwire_codegen lint --official-schema '$(OFFICIAL_SCHEMA)'
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy
	npm run --prefix $(JS) --silent lint  # tsc --noEmit --strict (SDK, demo, tests), prettier --check

# Fan-out benchmark against a raw websockets.broadcast() server; writes bench/RESULTS.md.
bench: $(STAMP) redis-server
	$(PY) bench/run.py

# Long contract fuzzing of a real gateway (tests/contract, hypothesis profile `fuzz`); ends
# with how many frames were sent and checked. FUZZ_EXAMPLES=N sets the examples per property.
fuzz: $(STAMP)
	GRAPHWIRE_CONTRACT_PROFILE=fuzz GRAPHWIRE_CONTRACT_EXAMPLES=$(FUZZ_EXAMPLES) \
		$(PY) -m pytest tests/contract -q --timeout=7200

fmt: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf $(VENV) tools/node_modules $(JS)/node_modules $(JS)/dist $(JS)/build-test $(JS)/.cache $(STATIC)/demo $(STATIC)/docs
