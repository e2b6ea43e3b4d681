"""Blocking generation in a worker thread: backpressure, cancellation, errors, a free event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator

import pytest

from inference.backends.threaded import iterate_in_thread


async def test_closing_stops_a_fast_producer_within_max_ahead():
    produced: list[int] = []
    finished = threading.Event()

    def endless(stop: threading.Event) -> Generator[str, None, None]:
        try:
            i = 0
            while not stop.is_set():
                produced.append(i)
                yield str(i)
                i += 1
        finally:
            finished.set()

    pieces = iterate_in_thread(endless, max_ahead=4)
    assert await pieces.__anext__() == "0"
    await pieces.aclose()
    assert await asyncio.to_thread(finished.wait, 5)
    # One taken, four buffered, one waiting for a credit (plus the check that ended it).
    assert len(produced) <= 7


async def test_errors_reach_the_consumer():
    def broken(stop: threading.Event) -> Generator[str, None, None]:
        yield "a"
        raise RuntimeError("model crashed")

    got: list[str] = []
    with pytest.raises(RuntimeError, match="model crashed"):
        async for piece in iterate_in_thread(broken):
            got.append(piece)
    assert got == ["a"]


async def test_the_event_loop_keeps_ticking_while_the_worker_computes():
    release = threading.Event()
    ticks = 0

    def busy(stop: threading.Event) -> Generator[str, None, None]:
        # Blocks its thread (as a forward pass does) until the loop has proved it is free.
        release.wait(5)
        yield "done"

    async def heartbeat() -> None:
        nonlocal ticks
        while ticks < 20:
            ticks += 1
            await asyncio.sleep(0)
        release.set()

    beat = asyncio.create_task(heartbeat())
    assert [p async for p in iterate_in_thread(busy)] == ["done"]
    await beat
    assert ticks == 20
