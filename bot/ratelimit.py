"""Per-user (and per-server) request quotas as token buckets.

A bucket holds up to ``burst`` tokens and refills at ``rate_per_minute``; each request takes one. The
rate and burst are passed on every check rather than stored, so an admin's change to the server's
settings applies to the very next request. Time comes from an injectable clock so tests need no sleeping.

Keys are any hashable; the bot uses ``(guild_id, user_id)`` for a user on a server and may use
``(guild_id, None)`` for a whole server's quota.

Two implementations of one async interface (:class:`Limiter`): :class:`RateLimiter` keeps the buckets in
memory (one process, the default with SQLite); :class:`StoreRateLimiter` keeps them in the database so several
bot processes (shards) share each user's bucket, updated atomically in one transaction per request.
:func:`limiter_for` picks one from the settings.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from bot.storage.engine import writer
from bot.storage.schema import rate_buckets

if TYPE_CHECKING:
    from bot.settings import Settings
    from bot.storage import Store

__all__ = ["Decision", "Limiter", "RateLimiter", "StoreRateLimiter", "limiter_for"]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    #: Seconds until the request would be allowed; 0.0 when allowed, ``math.inf`` when it never will be.
    retry_after: float


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float
    # The settings last used, so an idle bucket can be judged full without being asked again.
    per_second: float
    burst: float


class Limiter(Protocol):
    """What the bot needs from a rate limiter."""

    async def acquire(self, key: Hashable, rate_per_minute: float, burst: int, *, cost: float = 1.0) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it has them."""
        ...


def _refill(
    tokens: float, updated: float, now: float, per_second: float, capacity: float, cost: float
) -> tuple[float, Decision]:
    """The bucket's tokens after refilling until ``now`` and taking ``cost`` if there is enough, and the verdict."""
    elapsed = max(0.0, now - updated)  # a clock stepping back must not mint tokens
    # Refill at the current rate; a lowered burst caps saved-up tokens at once.
    tokens = min(capacity, tokens + elapsed * per_second)
    if tokens >= cost:
        return tokens - cost, Decision(True, 0.0)
    if cost > capacity or per_second == 0.0:
        return tokens, Decision(False, math.inf)
    return tokens, Decision(False, (cost - tokens) / per_second)


class RateLimiter:
    """Token buckets in memory, with bounded memory. Not thread-safe: use it from the event loop only."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self._clock = clock
        self._max_keys = max_keys
        # Least recently used first, so eviction can stop early.
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: Hashable, rate_per_minute: float, burst: int, *, cost: float = 1.0) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket if it has them."""
        now = self._clock()
        per_second = max(0.0, rate_per_minute) / 60.0
        capacity = float(max(0, burst))
        bucket = self._buckets.get(key)
        if bucket is None:
            self._make_room()
            bucket = _Bucket(capacity, now, per_second, capacity)  # newcomers start with a full burst
            self._buckets[key] = bucket
        else:
            self._buckets.move_to_end(key)
        bucket.tokens, decision = _refill(bucket.tokens, bucket.updated, now, per_second, capacity, cost)
        bucket.updated = now
        bucket.per_second, bucket.burst = per_second, capacity
        return decision

    async def acquire(self, key: Hashable, rate_per_minute: float, burst: int, *, cost: float = 1.0) -> Decision:
        return self.check(key, rate_per_minute, burst, cost=cost)

    def prune(self) -> int:
        """Forget buckets that have refilled completely: they behave exactly like new ones."""
        now = self._clock()
        full = [key for key, b in self._buckets.items() if self._is_full(b, now)]
        for key in full:
            del self._buckets[key]
        return len(full)

    def _is_full(self, bucket: _Bucket, now: float) -> bool:
        return bucket.tokens + max(0.0, now - bucket.updated) * bucket.per_second >= bucket.burst

    def _make_room(self) -> None:
        if len(self._buckets) < self._max_keys:
            return
        # First drop what costs nothing to forget; if everyone is mid-burst, drop the least recently
        # used down to 90 % so the O(n) sweep is not repeated on every new key.
        self.prune()
        while len(self._buckets) >= self._max_keys * 9 // 10 and self._buckets:
            self._buckets.popitem(last=False)


class StoreRateLimiter:
    """Token buckets in the store's database, shared by every process that uses it.

    Each request is one write transaction: the bucket's row is created full if missing, then read with
    ``SELECT ... FOR UPDATE`` (PostgreSQL locks the row until commit; SQLite's ``BEGIN IMMEDIATE`` already
    serialises writers), refilled, charged and written back. Time is wall-clock seconds (``time.time``), which
    processes on different hosts agree on, unlike a monotonic clock.
    """

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time, prune_every: int = 1000) -> None:
        if prune_every < 1:
            raise ValueError("prune_every must be at least 1")
        self._engine = writer(store.engine)
        self._clock = clock
        # One row per user and server ever seen: every so many requests, forget the ones that have refilled.
        self._prune_every = prune_every
        self._since_prune = 0

    async def acquire(self, key: Hashable, rate_per_minute: float, burst: int, *, cost: float = 1.0) -> Decision:
        now = self._clock()
        per_second = max(0.0, rate_per_minute) / 60.0
        capacity = float(max(0, burst))
        name = bucket_name(key)
        t = rate_buckets.c
        async with self._engine.begin() as conn:
            make = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
            fresh = {"key": name, "tokens": capacity, "updated": now, "per_second": per_second, "burst": capacity}
            # Newcomers start with a full burst; a row another process just created is left alone.
            await conn.execute(make(rate_buckets).values(**fresh).on_conflict_do_nothing(index_elements=["key"]))
            row = (await conn.execute(select(t.tokens, t.updated).where(t.key == name).with_for_update())).one()
            tokens, decision = _refill(row.tokens, row.updated, now, per_second, capacity, cost)
            # Never move `updated` back: a process whose clock is behind must not let the next one refill twice.
            values = {"tokens": tokens, "updated": max(row.updated, now), "per_second": per_second, "burst": capacity}
            await conn.execute(update(rate_buckets).where(t.key == name).values(**values))
        self._since_prune += 1
        if self._since_prune >= self._prune_every:
            self._since_prune = 0
            await self.prune()
        return decision

    async def prune(self) -> int:
        """Forget buckets that have refilled completely: they behave exactly like new ones."""
        t = rate_buckets.c
        now = self._clock()
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(rate_buckets).where(t.tokens + (now - t.updated) * t.per_second >= t.burst)
            )
        return int(result.rowcount or 0)


def bucket_name(key: Hashable) -> str:
    """A key as the database stores it: ``(1, 10)`` -> ``"1:10"``, ``(1, None)`` -> ``"1:-"``."""
    parts = key if isinstance(key, tuple) else (key,)
    return ":".join("-" if part is None else str(part) for part in parts)


def limiter_for(settings: Settings, store: Store) -> RateLimiter | StoreRateLimiter:
    """The database's buckets when settings ask for them or the database is PostgreSQL (several processes
    share it); else buckets in memory, as suits one process on SQLite."""
    return StoreRateLimiter(store) if settings.uses_shared_rate_limits else RateLimiter()
