"""A hostile OpenAI-compatible endpoint costs bounded time and memory.

Each case is a fake server on 127.0.0.1 that never stops talking (an endless SSE line, data lines with no
blank line, an endless JSON body, valid chunks past max_tokens, an endless probe body). The client must end
each call with a typed error (or, for an ignored max_tokens, a clean truncated answer) within a time bound,
and the test process must not grow: Python allocations are traced (tracemalloc peak) and the RSS is read
from /proc before and after, each against a generous margin. Today's unbounded reads grew the bot by more
than a gigabyte in five seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from inference.backends.base import CHARS_PER_TOKEN, ProbeResult
from inference.backends.openai import OpenAIBackend
from inference.catalogue import Catalogue, RetryPolicy, RoutingPolicy, Timeouts, load_routing
from inference.errors import BackendUnavailable, ResponseTooLarge
from inference.router import Router
from inference.serving.clock import FakeClock
from inference.serving.resilience import ResilientBackend
from inference.serving.service import Switchboard
from inference.types import ChatMessage, Classification, GenerationParams, Request, Tier
from tests.fakes.openai_server import FakeOpenAIServer, flood, ok, openai_server, spec_for, status, unused_port

__all__ = ["openai_server"]  # pytest fixture, imported for the tests below

MESSAGES = [ChatMessage("user", "Say hi")]
PARAMS = GenerationParams(max_new_tokens=16)
#: Generous: the bounds themselves are 1-8 MiB; the bug they replace grew the process by over 1 GB.
MAX_GROWTH_MB = 100
#: Wall-clock bound on each hostile call (the flood itself would go on for ever).
MAX_SECONDS = 10.0


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


@contextlib.contextmanager
def bounded(max_mb: float = MAX_GROWTH_MB) -> Iterator[None]:
    """Assert the block's peak Python allocations and the process's RSS growth stay under ``max_mb``."""
    rss_before = _rss_mb()
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    growth = _rss_mb() - rss_before
    assert peak / 2**20 < max_mb, f"peak Python allocations {peak / 2**20:.0f} MB"
    assert growth < max_mb, f"RSS grew by {growth:.0f} MB"


@pytest.fixture
async def backend(openai_server: FakeOpenAIServer) -> AsyncIterator[Any]:
    made: list[OpenAIBackend] = []

    def factory(*, stream: bool = True, **overrides: Any) -> OpenAIBackend:
        made.append(OpenAIBackend("hostile", spec_for(openai_server, **overrides), stream=stream))
        return made[-1]

    yield factory
    for b in made:
        await b.aclose()


async def timed(coro: Any) -> tuple[Any, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(MAX_SECONDS):  # a limit, not a wait: the call must end well before it
        result = await coro
    return result, loop.time() - started


# --- every read is bounded ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "stream", "said"),
    [
        ("line", True, "line over"),  # one SSE line that never ends
        ("event", True, "event over"),  # data lines that never end in a blank line
        ("json", False, "too large"),  # a 200 JSON body that never ends
        ("json", True, "too large"),  # ... also when we asked for a stream and got JSON
    ],
)
async def test_endless_response_is_a_typed_error_in_bounded_time_and_memory(
    openai_server: FakeOpenAIServer, backend: Any, kind: str, stream: bool, said: str
) -> None:
    openai_server.script(flood(kind))  # type: ignore[arg-type]
    with bounded(), pytest.raises(ResponseTooLarge, match=said) as info:
        await timed(backend(stream=stream).stream(MESSAGES, PARAMS).text())
    assert isinstance(info.value, BackendUnavailable) and info.value.retryable is False
    assert info.value.backend == "hostile"


async def test_response_too_large_is_not_retried(openai_server: FakeOpenAIServer, backend: Any) -> None:
    openai_server.script(flood("event"), ok("never asked"))
    raw = backend()
    spec = raw.spec.model_copy(update={"retry": RetryPolicy(max_attempts=3)})
    clock = FakeClock()
    with pytest.raises(ResponseTooLarge):
        await ResilientBackend(raw, spec, clock=clock).stream(MESSAGES, PARAMS).text()
    assert len(openai_server.completions) == 1 and clock.sleeps == []


# --- the client enforces max_tokens itself ------------------------------------------------------------


async def test_server_ignoring_max_tokens_is_cut_at_the_limit(openai_server: FakeOpenAIServer, backend: Any) -> None:
    openai_server.script(flood("tokens"))
    stream = backend().stream(MESSAGES, PARAMS)
    with bounded():
        text, _ = await timed(stream.text())
    assert text == "more " * PARAMS.max_new_tokens  # one piece per token, then the stream ends cleanly
    assert stream.truncated and stream.timings.tokens == PARAMS.max_new_tokens
    assert openai_server.completions[0].body["max_tokens"] == PARAMS.max_new_tokens


async def test_spec_limit_caps_a_larger_request(openai_server: FakeOpenAIServer, backend: Any) -> None:
    openai_server.script(flood("tokens"))
    stream = backend(max_new_tokens=5).stream(MESSAGES, GenerationParams(max_new_tokens=500))
    assert await stream.text() == "more " * 5 and stream.truncated


@pytest.mark.parametrize("stream", [True, False], ids=["sse", "json"])
async def test_one_enormous_piece_is_cut_to_the_character_cap(
    openai_server: FakeOpenAIServer, backend: Any, stream: bool
) -> None:
    openai_server.script(ok(pieces=("x" * 200_000,), text="x" * 200_000))
    tokens = 4
    answer = backend(stream=stream).stream(MESSAGES, GenerationParams(max_new_tokens=tokens))
    assert await answer.text() == "x" * (tokens * CHARS_PER_TOKEN)
    assert answer.truncated


async def test_well_behaved_answer_is_not_truncated(openai_server: FakeOpenAIServer, backend: Any) -> None:
    openai_server.script(ok("Hello there friend"))
    stream = backend().stream(MESSAGES, PARAMS)
    assert await stream.text() == "Hello there friend"
    assert not stream.truncated


class _Fixed:
    def classify(self, request: Request) -> Classification:
        return Classification(task="chat", confidence=0.9, difficulty=0.1, prompt_tokens=5)


async def test_truncation_reaches_the_answer_through_every_layer(openai_server: FakeOpenAIServer) -> None:
    openai_server.script(flood("tokens"))
    catalogue = Catalogue.model_validate(
        {
            "models": {
                "small": {"kind": "openai", "base_url": openai_server.base_url, "model": "m", "tier": "small"},
                "large": {"kind": "openai", "base_url": openai_server.base_url, "model": "m", "tier": "large"},
            }
        }
    )
    base = load_routing()
    policy = RoutingPolicy(tiers=base.tiers, models={Tier.SMALL: "small", Tier.LARGE: "large"})
    board = Switchboard(Router(_Fixed(), policy, catalogue), cache_dir=None)  # type: ignore[arg-type]
    try:
        answer = board.answer(board.route(Request("hi")), MESSAGES, params=GenerationParams(max_new_tokens=8))
        text = "".join([piece async for piece in answer])
    finally:
        await board.aclose()
    assert text == "more " * 8
    assert answer.truncated and answer.notes == ["the answer was cut off at small's output limit"]


# --- the probe: bounded, and it tells unreachable, refused and healthy apart --------------------------


async def test_probe_never_reads_an_endless_models_body(openai_server: FakeOpenAIServer, backend: Any) -> None:
    openai_server.models_flood = True
    with bounded():
        result, _ = await timed(backend().probe_status())
    assert result is ProbeResult.HEALTHY


async def test_probe_reads_a_bounded_completion_body(openai_server: FakeOpenAIServer, backend: Any) -> None:
    openai_server.models_status = 500  # like transformers serve: the probe falls back to a completion
    openai_server.script(flood("json"))
    with bounded():
        result, _ = await timed(backend().probe_status())
    assert result is ProbeResult.UNREACHABLE  # a body past the bound is not a healthy answer


@pytest.mark.parametrize(
    ("models_status", "completion", "expected"),
    [
        (200, None, ProbeResult.HEALTHY),
        (401, None, ProbeResult.REFUSED),
        (403, None, ProbeResult.REFUSED),
        (404, ok("hi"), ProbeResult.HEALTHY),
        (404, status(401), ProbeResult.REFUSED),
        (500, status(503), ProbeResult.UNREACHABLE),
    ],
)
async def test_probe_status(
    openai_server: FakeOpenAIServer, backend: Any, models_status: int, completion: Any, expected: ProbeResult
) -> None:
    openai_server.models_status = models_status
    if completion is not None:
        openai_server.script(completion, completion)  # one for each call below
    b = backend()
    assert await b.probe_status() is expected
    assert await b.probe() is (expected is ProbeResult.HEALTHY)


async def test_probe_status_unreachable_when_nothing_listens() -> None:
    b = OpenAIBackend("gone", spec_for(f"http://127.0.0.1:{unused_port()}/v1"))
    try:
        assert await b.probe_status() is ProbeResult.UNREACHABLE
    finally:
        await b.aclose()


async def test_resilient_probe_status_is_time_bounded(openai_server: FakeOpenAIServer, backend: Any) -> None:
    release = asyncio.Event()  # never set: closing the server releases the handler
    openai_server.models_status = 500
    openai_server.script(ok(stall=release))
    raw = backend()
    spec = raw.spec.model_copy(update={"timeouts": Timeouts(connect_s=1, first_token_s=0.2, total_s=5)})
    result, elapsed = await timed(ResilientBackend(raw, spec).probe_status())
    assert result is ProbeResult.UNREACHABLE and elapsed < 5
