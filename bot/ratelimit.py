"""Per-user (and per-server) request quotas as token buckets.

A bucket holds up to ``burst`` tokens and refills at ``rate_per_minute``; each request takes one. The
rate and burst are passed on every check rather than stored, so an admin's change to the server's
settings applies to the very next request. Time comes from an injectable clock so tests need no sleeping.

Keys are any hashable; the bot uses ``(guild_id, user_id)`` for a user on a server and may use
``(guild_id, None)`` for a whole server's quota.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

__all__ = ["Decision", "RateLimiter"]


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


class RateLimiter:
    """Token buckets with bounded memory. Not thread-safe: use it from the event loop only."""

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
            elapsed = max(0.0, now - bucket.updated)  # a clock stepping back must not mint tokens
            # Refill at the new rate; a lowered burst caps saved-up tokens at once.
            bucket.tokens = min(capacity, bucket.tokens + elapsed * per_second)
            bucket.updated = now
            bucket.per_second, bucket.burst = per_second, capacity

        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return Decision(True, 0.0)
        if cost > capacity or per_second == 0.0:
            return Decision(False, math.inf)
        return Decision(False, (cost - bucket.tokens) / per_second)

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
