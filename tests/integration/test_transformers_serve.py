"""OpenAIBackend against a real OpenAI-compatible server: ``transformers serve`` with packaged SmolLM2.

Starts the server once per module on 127.0.0.1 and a free port, offline. Answers are checked for being
non-empty text only: the model's exact words are not this test's business.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.backends.openai import OpenAIBackend
from inference.catalogue import RetryPolicy, Timeouts
from inference.errors import ConfigError
from inference.serving.resilience import ResilientBackend
from inference.types import ChatMessage, GenerationParams
from tests.fakes.openai_server import spec_for, unused_port

pytestmark = pytest.mark.real_model

#: Loading torch and the model takes ~10 s here; allow for a slow, shared machine.
START_DEADLINE_S = 180.0
MESSAGES = [ChatMessage("user", "What is the capital of France?")]
PARAMS = GenerationParams(max_new_tokens=8, temperature=0.0)


def _command(model_dir: str, port: int) -> list[str]:
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
    base = [exe] if exe else [sys.executable, "-m", "transformers.commands.transformers_cli"]
    return [*base, "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--force_model", model_dir]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # a 127.0.0.1 URL we built
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def serve_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``.../v1``) of a running ``transformers serve``; skips if it cannot start."""
    missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"transformers serve needs {', '.join(missing)} (pip install fastapi uvicorn openai)")
    from inference.build.sources import hf_dir

    try:
        model_dir = hf_dir("packaged:smollm2")
    except (ConfigError, ImportError, OSError) as exc:
        pytest.skip(f"packaged SmolLM2 not available: {exc}")

    port = unused_port()
    log_path = tmp_path_factory.mktemp("serve") / "transformers-serve.log"
    # Offline: the hub is unreachable here, and the model comes from a local directory anyway.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(_command(model_dir, port), stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while not _healthy(f"http://127.0.0.1:{port}/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-1500:]
                why = f"exited with {proc.returncode}" if proc.poll() is not None else "did not answer in time"
                pytest.skip(f"transformers serve {why}:\n{tail}")
            time.sleep(0.25)  # polling a subprocess's readiness, bounded by the deadline above
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _backend(url: str, *, stream: bool) -> OpenAIBackend:
    # A generous first-token limit: the first request also loads the model into the server.
    spec = spec_for(url, model="smollm2", timeouts=Timeouts(connect_s=5, first_token_s=120, total_s=240))
    return OpenAIBackend("smollm2-serve", spec, stream=stream)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
async def test_answers(serve_url: str, stream: bool) -> None:
    backend = _backend(serve_url, stream=stream)
    try:
        await backend.start()
        token_stream = backend.stream(MESSAGES, PARAMS)
        pieces = [piece async for piece in token_stream]
    finally:
        await backend.aclose()
    text = "".join(pieces)
    assert text.strip()
    assert token_stream.timings.first_token_s is not None
    if stream:
        assert len(pieces) > 1  # really streamed, not one blob


async def test_through_resilience_layer_and_probe(serve_url: str) -> None:
    backend = _backend(serve_url, stream=True)
    rb = ResilientBackend(backend, backend.spec.model_copy(update={"retry": RetryPolicy(max_attempts=2)}))
    try:
        await rb.start()
        assert await rb.probe()  # its /v1/models needs the hub and fails: the 1-token completion answers
        assert (await rb.stream(MESSAGES, PARAMS).text()).strip()
        assert rb.available
        assert rb.provider == "openai:127.0.0.1"
    finally:
        await rb.aclose()
