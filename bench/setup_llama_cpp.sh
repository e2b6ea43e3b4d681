#!/usr/bin/env bash
# llama-cpp-python's OpenAI-compatible server, for the benchmarks that need a real local endpoint
# (bench/tool_calls.py, bench/small_tier.py). Not needed by the bot or its tests.
#
#   bash bench/setup_llama_cpp.sh            # into .venv (or the python given as $PYTHON)
#
# Built from source (pinned): PyPI has no prebuilt wheel for this version, and a from-source build compiles
# llama.cpp for this machine's CPU. It needs a C/C++ compiler and cmake (pip fetches cmake/ninja itself when
# missing) and takes about 8-20 minutes on 2 cores; pip caches the built wheel, so later runs take seconds.
# For a GPU build set CMAKE_ARGS first, e.g. CMAKE_ARGS="-DGGML_CUDA=on" (see llama-cpp-python's docs).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
exec "$PYTHON" -m pip install "llama-cpp-python[server]==0.3.36" --no-binary llama-cpp-python
