"""ResilientBackend against scripted in-process backends: queueing, timeouts, retries, cooldown.

Time never passes for real except in the timeout tests, which use limits of a few tens of
milliseconds against a backend blocked on an event; backoff and cooldown run on a FakeClock.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from inference.backends.base import Backend
from inference.catalogue import Cooldown, Limits, OpenAIModel, RetryPolicy, Timeouts
from inference.errors import (
    AuthenticationError,
    BackendOverloaded,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    InferenceError,
    ModelNotFound,
    QueueFull,
)
from inference.serving.clock import FakeClock, RealClock
from inference.serving.resilience import ResilientBackend
from inference.types import ChatMessage, GenerationParams, Tier
from tests.fakes.backends import ScriptedBackend

MESSAGES = [ChatMessage("user", "hello")]
PARAMS = GenerationParams(max_new_tokens=8)


#: One step of a scripted attempt: a text piece, an exception to raise, or an event to wait for.
def spec(**kw: Any) -> OpenAIModel:
    """A spec with quick policies; override any section with keyword arguments."""
    fields: dict[str, Any] = {
        "tier": Tier.SMALL,
        "base_url": "http://unused.invalid/v1",
        "model": "m",
        "timeouts": Timeouts(connect_s=1, first_token_s=5, total_s=10),
        "retry": RetryPolicy(max_attempts=3, backoff_base_s=0.5, backoff_cap_s=4, retry_after_cap_s=30),
        "cooldown": Cooldown(window_s=60, min_requests=3, failure_ratio=0.5, duration_s=30),
        "limits": Limits(max_concurrency=2, max_queue=3),
    }
    fields.update(kw)
    return OpenAIModel(**fields)


def make(backend: Backend, clock: FakeClock | None = None, **kw: Any) -> ResilientBackend:
    return ResilientBackend(backend, spec(**kw), clock=clock or FakeClock(), rng=random.Random(7))


async def answer(rb: ResilientBackend) -> str:
    return await rb.stream(MESSAGES, PARAMS).text()


# --- pass-through ------------------------------------------------------------------------------------


async def test_same_interface_as_backend() -> None:
    inner = ScriptedBackend.playing(["Hel", "lo"])
    rb = make(inner)
    assert (rb.name, rb.model, rb.provider, rb.context_window) == ("scripted", "scripted", "fake:scripted", 2048)
    assert rb.count_tokens("abcdefgh") == 2
    stream = rb.stream(MESSAGES, PARAMS)
    assert (stream.model, stream.provider) == ("scripted", "fake:scripted")
    assert await stream.text() == "Hello"
    assert stream.timings.tokens == 2
    assert rb.available and rb.cooldown_remaining == 0.0 and rb.in_flight == 0


async def test_real_clock() -> None:
    clock = RealClock()
    before = clock.monotonic()
    await clock.sleep(0)
    assert clock.monotonic() >= before


# --- bounded concurrency and queue -------------------------------------------------------------------


async def test_request_past_concurrency_plus_queue_is_refused_at_once() -> None:
    release = asyncio.Event()
    inner = ScriptedBackend.playing([release, "done"])
    rb = make(inner, limits=Limits(max_concurrency=2, max_queue=3))
    n = 2 + 3 + 1

    async def first_piece() -> str:
        stream = rb.stream(MESSAGES, PARAMS)
        try:
            return await stream.__anext__()
        finally:
            await stream.aclose()

    tasks = [asyncio.create_task(first_piece()) for _ in range(n)]
    for _ in range(5):  # let every task reach its wait; no time passes
        await asyncio.sleep(0)
    done = [t for t in tasks if t.done()]
    assert len(done) == 1
    with pytest.raises(QueueFull, match="busy"):
        done[0].result()
    assert len(inner.calls) == 2  # only max_concurrency reached the backend; three wait in the queue
    assert rb.in_flight == 5

    release.set()
    results = await asyncio.gather(*[t for t in tasks if t not in done])
    assert results == ["done"] * 5
    assert rb.in_flight == 0
    assert rb.available  # our own queue being full is not the backend's failure


async def test_queue_wait_is_bounded() -> None:
    release = asyncio.Event()
    rb = make(
        ScriptedBackend.playing(["a", release, "b"]),  # past its first token, the holder is bound by total_s only
        limits=Limits(max_concurrency=1, max_queue=1),
        timeouts=Timeouts(first_token_s=0.05, total_s=10),
    )
    holder = asyncio.create_task(answer(rb))
    for _ in range(3):
        await asyncio.sleep(0)
    with pytest.raises(QueueFull, match="queue wait"):
        await answer(rb)  # waits for the slot at most first_token_s
    release.set()
    assert await holder == "ab"
    assert rb.in_flight == 0


# --- timeouts ----------------------------------------------------------------------------------------


async def test_first_token_timeout_closes_stream_and_retries() -> None:
    never = asyncio.Event()
    inner = ScriptedBackend.playing([never, "late"])
    clock = FakeClock()
    rb = make(inner, clock, timeouts=Timeouts(first_token_s=0.05, total_s=10))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BackendTimeout, match="first-token"):
        await answer(rb)
    assert loop.time() - started >= 0.05 * 3
    assert len(inner.calls) == 3  # a timeout is retryable before the first token
    assert inner.finished == 3  # every stalled generation was cancelled
    assert len(clock.sleeps) == 2


async def test_total_timeout_after_first_token_is_not_retried() -> None:
    never = asyncio.Event()
    inner = ScriptedBackend.playing(["first ", never, "late"])
    rb = make(inner, timeouts=Timeouts(first_token_s=5, total_s=0.1))
    stream = rb.stream(MESSAGES, PARAMS)
    assert await stream.__anext__() == "first "
    with pytest.raises(BackendTimeout, match="total"):
        await stream.__anext__()
    assert len(inner.calls) == 1 and inner.finished == 1


# --- retries -----------------------------------------------------------------------------------------


async def test_retry_then_success_with_capped_jittered_backoff() -> None:
    inner = ScriptedBackend.playing(
        [BackendUnavailable("down")], [BackendUnavailable("down")], [BackendUnavailable("down")], ["ok"]
    )
    clock = FakeClock()
    rb = make(inner, clock, retry=RetryPolicy(max_attempts=4, backoff_base_s=1, backoff_cap_s=1.5))
    assert await answer(rb) == "ok"
    assert len(inner.calls) == 4
    # base 1, 2 -> capped 1.5, 4 -> capped 1.5; each shortened by at most 25%.
    for slept, nominal in zip(clock.sleeps, [1, 1.5, 1.5], strict=True):
        assert 0.75 * nominal <= slept <= nominal


async def test_jitter_comes_from_the_injected_rng() -> None:
    async def sleeps(seed: int) -> list[float]:
        clock = FakeClock()
        inner = ScriptedBackend.playing([BackendUnavailable("x")], ["ok"])
        await answer(ResilientBackend(inner, spec(), clock=clock, rng=random.Random(seed)))
        return clock.sleeps

    assert await sleeps(1) == await sleeps(1) != await sleeps(2)


@pytest.mark.parametrize("retry_after", [2.0, 0.25, 30.0])
async def test_retry_after_is_honoured(retry_after: float) -> None:
    inner = ScriptedBackend.playing([BackendOverloaded("429", retry_after=retry_after)], ["ok"])
    clock = FakeClock()
    rb = make(inner, clock, timeouts=Timeouts(first_token_s=5, total_s=100))
    assert await answer(rb) == "ok"
    assert clock.sleeps == [retry_after]


@pytest.mark.parametrize("retry_after", [31.0, float("inf")])
async def test_retry_after_beyond_cap_gives_up(retry_after: float) -> None:
    inner = ScriptedBackend.playing([BackendOverloaded("429", retry_after=retry_after)], ["ok"])
    clock = FakeClock()
    rb = make(inner, clock)
    with pytest.raises(BackendOverloaded):
        await answer(rb)
    assert len(inner.calls) == 1 and clock.sleeps == []


async def test_retries_stop_at_max_attempts() -> None:
    inner = ScriptedBackend.playing([BackendUnavailable("down")])
    clock = FakeClock()
    rb = make(inner, clock, retry=RetryPolicy(max_attempts=3))
    with pytest.raises(BackendUnavailable):
        await answer(rb)
    assert len(inner.calls) == 3 and len(clock.sleeps) == 2


async def test_no_retry_when_backoff_would_pass_total_deadline() -> None:
    inner = ScriptedBackend.playing([BackendUnavailable("down")], ["ok"])
    rb = make(
        inner,
        retry=RetryPolicy(max_attempts=3, backoff_base_s=20, backoff_cap_s=20),
        timeouts=Timeouts(first_token_s=5, total_s=10),
    )
    with pytest.raises(BackendUnavailable):
        await answer(rb)
    assert len(inner.calls) == 1


@pytest.mark.parametrize(
    "error",
    [
        BadRequest("400"),
        AuthenticationError("401"),
        ModelNotFound("404"),
        QueueFull("busy"),
        InferenceError("unknown"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_never_retried(error: InferenceError) -> None:
    inner = ScriptedBackend.playing([error], ["ok"])
    clock = FakeClock()
    rb = make(inner, clock)
    with pytest.raises(type(error)):
        await answer(rb)
    assert len(inner.calls) == 1 and clock.sleeps == []


async def test_no_retry_after_first_token() -> None:
    inner = ScriptedBackend.playing(["partial ", BackendUnavailable("stream broken")], ["full answer"])
    rb = make(inner)
    pieces: list[str] = []
    with pytest.raises(BackendUnavailable, match="stream broken"):
        async for piece in rb.stream(MESSAGES, PARAMS):
            pieces.append(piece)
    assert pieces == ["partial "]  # the user already saw these: a retry would duplicate them
    assert len(inner.calls) == 1


async def test_unexpected_exception_becomes_backend_unavailable() -> None:
    rb = make(ScriptedBackend.playing([RuntimeError("bug")]))
    with pytest.raises(BackendUnavailable, match="RuntimeError") as info:
        await answer(rb)
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_closing_early_cancels_generation_and_frees_the_slot() -> None:
    inner = ScriptedBackend.playing(["a", "b", "c"])
    rb = make(inner)
    stream = rb.stream(MESSAGES, PARAMS)
    assert await stream.__anext__() == "a"
    await stream.aclose()
    assert inner.finished == 1 and rb.in_flight == 0 and rb.available


async def test_cancelled_consumer_frees_the_slot() -> None:
    never = asyncio.Event()
    inner = ScriptedBackend.playing([never])
    rb = make(inner)
    task = asyncio.create_task(answer(rb))
    await asyncio.sleep(0)
    assert rb.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rb.in_flight == 0 and inner.finished == 1 and rb.available


# --- cooldown ----------------------------------------------------------------------------------------


async def fail_n(rb: ResilientBackend, n: int, exc: type[InferenceError] = InferenceError) -> None:
    for _ in range(n):
        with pytest.raises(exc):
            await answer(rb)


async def test_cooldown_opens_after_failure_ratio_and_closes_after_duration() -> None:
    inner = ScriptedBackend.playing([BackendUnavailable("down")])
    clock = FakeClock()
    rb = make(inner, clock, retry=RetryPolicy(max_attempts=1))
    await fail_n(rb, 2)
    assert rb.available  # below min_requests
    await fail_n(rb, 1)
    assert not rb.available
    assert rb.cooldown_remaining == pytest.approx(30)

    calls = len(inner.calls)
    with pytest.raises(BackendUnavailable, match="cooling down"):
        await answer(rb)
    assert len(inner.calls) == calls  # refused without touching the backend

    clock.advance(29.9)
    assert not rb.available
    clock.advance(0.2)
    assert rb.available and rb.cooldown_remaining == 0.0

    # Half-open: the probe request fails, so the backend cools down again.
    with pytest.raises(BackendUnavailable, match="down"):
        await answer(rb)
    assert len(inner.calls) == calls + 1 and not rb.available

    clock.advance(30)
    inner.scripts = [["recovered"]]
    assert await answer(rb) == "recovered"
    assert rb.available and rb.cooldown_remaining == 0.0
    assert await answer(rb) == "recovered"


async def test_half_open_lets_exactly_one_probe_through() -> None:
    release = asyncio.Event()
    inner = ScriptedBackend.playing([BackendUnavailable("down")])
    clock = FakeClock()
    rb = make(inner, clock, retry=RetryPolicy(max_attempts=3))
    await fail_n(rb, 3)
    assert not rb.available
    clock.advance(30)
    inner.scripts = [[release, "ok"]]
    calls = len(inner.calls)
    probe = asyncio.create_task(answer(rb))
    await asyncio.sleep(0)
    assert not rb.available  # the probe is in flight
    with pytest.raises(BackendUnavailable, match="probe in flight"):
        await answer(rb)
    release.set()
    assert await probe == "ok"
    assert len(inner.calls) == calls + 1 and rb.available


async def test_half_open_probe_is_not_retried() -> None:
    inner = ScriptedBackend.playing([BackendUnavailable("down")])
    clock = FakeClock()
    rb = make(inner, clock)
    await fail_n(rb, 3)
    clock.advance(30)
    calls = len(inner.calls)
    with pytest.raises(BackendUnavailable, match="down"):
        await answer(rb)
    assert len(inner.calls) == calls + 1


async def test_old_failures_leave_the_window() -> None:
    inner = ScriptedBackend.playing([BackendUnavailable("down")])
    clock = FakeClock()
    rb = make(inner, clock, retry=RetryPolicy(max_attempts=1))
    await fail_n(rb, 2)
    clock.advance(61)
    await fail_n(rb, 1)
    assert rb.available  # only one failure in the last 60 s


async def test_successes_keep_ratio_below_threshold() -> None:
    inner = ScriptedBackend.playing(["ok"])
    clock = FakeClock()
    rb = make(inner, clock, retry=RetryPolicy(max_attempts=1), cooldown=Cooldown(min_requests=3, failure_ratio=0.6))
    for _ in range(3):
        await answer(rb)
    inner.scripts = [[BackendUnavailable("down")]]
    await fail_n(rb, 3)  # 3 of 6 failed: 50% < 60%
    assert rb.available
    await fail_n(rb, 2)  # 5 of 8 failed: 62.5%
    assert not rb.available


async def test_authentication_error_cools_down_at_once() -> None:
    inner = ScriptedBackend.playing([AuthenticationError("401")])
    rb = make(inner)
    await fail_n(rb, 1, AuthenticationError)
    assert not rb.available
    with pytest.raises(BackendUnavailable, match="cooling down"):
        await answer(rb)
    assert len(inner.calls) == 1


@pytest.mark.parametrize("error", [BadRequest("400"), ModelNotFound("404")], ids=lambda e: type(e).__name__)
async def test_bad_requests_do_not_count_as_failures(error: InferenceError) -> None:
    inner = ScriptedBackend.playing([error])
    rb = make(inner)
    await fail_n(rb, 10, type(error))
    assert rb.available


async def test_probe_success_ends_cooldown_early() -> None:
    inner = ScriptedBackend.playing([AuthenticationError("401")])
    rb = make(inner)
    await fail_n(rb, 1, AuthenticationError)
    inner.probe_ok = False
    assert await rb.probe() is False
    assert not rb.available
    inner.probe_ok = True
    assert await rb.probe() is True
    assert rb.available


async def test_probe_exception_is_false() -> None:
    inner = ScriptedBackend.playing(["ok"])

    async def boom() -> bool:
        raise OSError("no")

    inner.probe = boom  # type: ignore[method-assign]
    assert await make(inner).probe() is False


async def test_lifecycle_passes_through() -> None:
    events: list[str] = []

    class Tracked(ScriptedBackend):
        async def start(self) -> None:
            events.append("start")

        async def aclose(self) -> None:
            events.append("close")

    rb = make(Tracked(scripts=[["ok"]]))
    await rb.start()
    await rb.aclose()
    assert events == ["start", "close"]
