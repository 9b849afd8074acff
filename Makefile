# Spidi: `make run` and `make test` are the two commands; everything else is for developers.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
PYX    := $(wildcard spidi_core/*.pyx spidi_core/*.pxd)

.PHONY: all install build run test test-pure test-js bench loadtest lint clean fuzz docs-check hardening-docs

all: build

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Reinstall only when the packaging changes.
$(VENV)/.installed: $(PY) pyproject.toml setup.py
	$(PIP) install -q -e '.[dev,load]'
	@touch $@

install: $(VENV)/.installed

# Rebuild the extensions in place whenever a .pyx/.pxd changes.
$(VENV)/.built: $(VENV)/.installed $(PYX)
	$(PY) setup.py -q build_ext --inplace
	@touch $@

build: $(VENV)/.built

# Browser tests: Debian's chromium and Playwright's Python package (never `playwright install`:
# it downloads a browser of its own, which this machine cannot), and Debian's firefox-esr, driven
# over WebDriver BiDi (tests/dashboard/bidi.py). Installs only what is missing, with one update;
# checked again when this Makefile changes.
$(VENV)/.browser: $(VENV)/.installed Makefile
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v firefox-esr >/dev/null 2>&1 || missing="$$missing firefox-esr"; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

# The JavaScript SDK (clients/js): Node.js and npm from Debian when missing; `npm ci` (from the
# committed lockfile) when node_modules is missing or older than package.json/package-lock.json.
JS := clients/js
$(JS)/node_modules/.installed: $(JS)/package.json $(JS)/package-lock.json
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Its tests start real `spidi serve` nodes with this venv's Python; its test files run side by side
# (each node has its own port and data directory), as they mostly wait on them. Node.js 18 has no
# --test-concurrency (read when the recipe runs: after node is installed).
JS_CONCURRENCY = $(shell node --help 2>/dev/null | grep -q -- --test-concurrency && echo --test-concurrency=3)
test-js: build $(JS)/node_modules/.installed
	SPIDI_PYTHON=$(abspath $(PY)) timeout 300 node --test $(JS_CONCURRENCY) $(JS)/test/

run: build
	$(VENV)/bin/spidi serve --dev

# `timeout` is a backstop: a hung teardown must fail the run, not stall CI (tests/watchdog.py then
# stops the servers the killed pytest started). The main run is parallel (pytest-xdist): the suite
# mostly waits on sockets and child processes, so TEST_WORKERS processes share the 2 cores; each
# worker has its own embedded Redis and PostgreSQL (tests/conftest.py), and a test module stays
# on one worker (--dist loadfile: its module fixtures start once). TEST_WORKERS=0 runs serially.
TEST_WORKERS ?= 3
test: build $(VENV)/.browser $(JS)/node_modules/.installed
	timeout 1500 $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --durations=30 tests
	SPIDI_NO_EXTENSIONS=1 timeout 300 $(PY) -m pytest -q -p no:cacheprovider tests/test_server_e2e.py tests/test_extensions.py -k "heartbeat or roster or extensions"
	SPIDI_TEST_UVLOOP=1 timeout 300 $(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) tests/test_server_e2e.py tests/test_ws_conformance.py tests/test_handshake.py tests/test_tls.py -k "native or not (websockets or picows)"
	$(MAKE) --no-print-directory test-js

# The hardening table of docs/operations.md against the last full run's (test-artifacts/hardening.md,
# written by `make test` or `pytest -m hardening`): exit 1 when they differ. Tests never edit docs/;
# `make hardening-docs` copies the full run's table in, deliberately.
docs-check:
	$(PY) -m tests.hardening_report --check test-artifacts/hardening.md

hardening-docs:
	$(PY) -m tests.hardening_report --write test-artifacts/hardening.md

bench: build
	$(PY) -m pytest -q benchmarks --benchmark-only --benchmark-columns=min,median,mean,ops,rounds

loadtest: build $(VENV)/.browser
	$(PY) -m loadtests.run

# Differential fuzzing, bounded: FUZZ_SECONDS=600 make fuzz, split evenly between the STOMP codec
# (Cython vs reference, fuzzing/fuzz_codec.py), the WebSocket frame decoder (Cython vs reference
# vs the websockets library, fuzzing/fuzz_ws.py) and the heartbeat lane (Cython vs reference,
# fuzzing/fuzz_lane.py). atheris (coverage-guided) when its wheel installs,
# else hypothesis.
FUZZ_SECONDS ?= 60
fuzz: build
	@$(PY) -c "import atheris" 2>/dev/null || $(PIP) install -q 'atheris>=2.3,<4' || echo "atheris unavailable: hypothesis engine"
	$(PY) -m fuzzing.fuzz_codec --seconds $$(( ($(FUZZ_SECONDS) + 2) / 3 ))
	$(PY) -m fuzzing.fuzz_ws --seconds $$(( ($(FUZZ_SECONDS) + 1) / 3 ))
	$(PY) -m fuzzing.fuzz_lane --seconds $$(( $(FUZZ_SECONDS) / 3 ))

lint: install
	$(VENV)/bin/ruff check spidi_core spidi_server tests benchmarks loadtests fuzzing clients/python
	$(VENV)/bin/ruff format --check spidi_core spidi_server tests benchmarks loadtests fuzzing clients/python

clean:
	rm -rf build *.egg-info spidi_core/*.c spidi_core/*.so spidi_core/*.html $(VENV)/.built
