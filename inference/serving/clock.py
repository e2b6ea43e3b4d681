"""Injectable time for the serving layer: retry backoff and cooldowns run on a :class:`Clock`.

Tests use :class:`FakeClock` and never sleep; production uses :class:`RealClock`.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """Time that moves only when told: :meth:`sleep` records the delay and jumps ahead at once.

    Callable like ``time.monotonic`` too, so the same clock drives the bot's streaming edits and rate limits.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)  # still a suspension point, like a real sleep

    def advance(self, seconds: float) -> None:
        self.now += seconds
