"""`python -m bot serve` as other programs use it: a subprocess on a free port, spoken to by the `openai` client."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tests.e2e.test_cli import env, fake_endpoint_env
from tests.fakes.openai_server import FakeOpenAIServer, ok, openai_server, unused_port

__all__ = ["env", "openai_server"]  # fixtures, used below

ROOT = Path(__file__).resolve().parents[2]
#: Loading the classifier (and, for the real models, the small tier) on a busy 2-core machine.
START_TIMEOUT_S = 180
#: What it says on stderr once it listens, before the URL.
LISTENING = "serving the OpenAI-compatible API on "


class Served:
    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc = proc
        self.url = url


async def _serve(env: dict[str, str], *args: str) -> AsyncIterator[Served]:
    port = unused_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "serve",
        "--port",
        str(port),
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        # The one line that says it listens (read as it comes: no polling, no sleeping).
        while not any(LISTENING in line for line in seen):
            line = (await asyncio.wait_for(proc.stderr.readline(), START_TIMEOUT_S)).decode()
            assert line, f"serve exited before listening: {''.join(seen)}"
            seen.append(line)
        url = seen[-1].split(LISTENING, 1)[1].strip()
        assert url == f"http://127.0.0.1:{port}/v1"
        yield Served(proc, url)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest_asyncio.fixture
async def served(env: dict[str, str], openai_server: FakeOpenAIServer, tmp_path: Path) -> AsyncIterator[Served]:
    """The router on a free port, both tiers on the scripted fake server, the real task classifier."""
    async for server in _serve(fake_endpoint_env(env, openai_server, tmp_path)):
        yield server


async def test_a_chat_completion_through_the_openai_client(served: Served, openai_server: FakeOpenAIServer) -> None:
    openai = pytest.importorskip("openai")
    client = openai.AsyncOpenAI(base_url=served.url, api_key="unused-on-loopback", max_retries=0)
    try:
        models = await client.models.list()
        assert "auto" in [m.id for m in models.data]

        openai_server.script(ok("Hello! How can I help?"))
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": "hey how's it going? :)"}], max_tokens=16
        )
        route = json.loads(raw.headers["x-switchboard-route"])
        assert (route["task"], route["tier"], route["model"]) == ("chat", "small", "small-fake")
        completion = raw.parse()
        assert completion.choices[0].message.content == "Hello! How can I help?"
        assert openai_server.completions[-1].body["max_tokens"] == 16

        openai_server.script(ok("one two three"))
        stream = await client.chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "hey how's it going? :)"}], stream=True
        )
        chunks = [chunk async for chunk in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three"
        assert (chunks[-1].model_extra or {})["switchboard_route"]["model"] == "small-fake"

        with pytest.raises(openai.NotFoundError) as caught:
            await client.chat.completions.create(model="gpt-17", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.code == "model_not_found"
    finally:
        await client.close()


async def test_sigterm_stops_it_cleanly(served: Served) -> None:
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.stderr is not None
    _, err = await asyncio.wait_for(served.proc.communicate(), 60)
    assert served.proc.returncode == 0
    assert "stopped" in err.decode() and "Traceback" not in err.decode()


async def test_beyond_loopback_it_needs_a_key(env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "serve",
        "--host",
        "0.0.0.0",
        stderr=asyncio.subprocess.PIPE,
        env={k: v for k, v in env.items() if k != "SWITCHBOARD_SERVE_API_KEY"},
        cwd=ROOT,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "SWITCHBOARD_SERVE_API_KEY" in err.decode() and "Traceback" not in err.decode()


@pytest.mark.real_model
async def test_the_contract_on_the_real_small_tier(env: dict[str, str], prepared_models: Path) -> None:
    """What an external checker runs: `auto`, "hi", 16 tokens -> 200 with the route header."""
    async for served in _serve({**env, "SWITCHBOARD_CACHE_DIR": str(prepared_models)}, "--host", "127.0.0.1"):
        async with aiohttp.ClientSession() as session:
            body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
            async with session.post(f"{served.url}/chat/completions", json=body) as resp:
                assert resp.status == 200, await resp.text()
                route = json.loads(resp.headers["x-switchboard-route"])
                answer = await resp.json()
        assert route["tier"] == "small" and route["model"] == "smollm2-onnx"
        assert answer["choices"][0]["message"]["content"]
        assert answer["switchboard_route"]["tokens"] <= 16
