"""Token-bucket quotas (bot/ratelimit.py), driven by a fake clock: in memory, and in the database shared by
several processes (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.ratelimit import Decision, RateLimiter, StoreRateLimiter, bucket_name, limiter_for
from bot.settings import Settings
from bot.storage import GuildConfig, Store, rate_buckets
from inference.serving.clock import FakeClock
from tests.unit.bot.test_storage import fresh_postgres_database

USER = (1, 10)


@pytest.fixture
def limiter(clock: FakeClock) -> RateLimiter:
    return RateLimiter(clock=clock)


def test_burst_then_refused_with_retry_after(limiter: RateLimiter) -> None:
    # 6 per minute = one token every 10 s.
    assert [limiter.check(USER, 6, 3).allowed for _ in range(3)] == [True, True, True]
    decision = limiter.check(USER, 6, 3)
    assert decision == Decision(False, decision.retry_after) and decision.retry_after == pytest.approx(10.0)


def test_retry_after_counts_down_and_is_exact(limiter: RateLimiter, clock: FakeClock) -> None:
    for _ in range(3):
        limiter.check(USER, 6, 3)
    clock.advance(4)
    assert limiter.check(USER, 6, 3).retry_after == pytest.approx(6.0)
    clock.advance(5.9)
    assert not limiter.check(USER, 6, 3).allowed
    clock.advance(0.1)
    assert limiter.check(USER, 6, 3).allowed
    assert limiter.check(USER, 6, 3).retry_after == pytest.approx(10.0)


def test_refills_over_time_up_to_the_burst(limiter: RateLimiter, clock: FakeClock) -> None:
    for _ in range(3):
        limiter.check(USER, 6, 3)
    clock.advance(20)  # two tokens back
    assert [limiter.check(USER, 6, 3).allowed for _ in range(3)] == [True, True, False]
    clock.advance(3600)  # an hour idle still only saves up the burst
    assert [limiter.check(USER, 6, 3).allowed for _ in range(4)] == [True, True, True, False]


def test_keys_are_isolated(limiter: RateLimiter) -> None:
    for _ in range(3):
        limiter.check(USER, 6, 3)
    assert not limiter.check(USER, 6, 3).allowed
    assert limiter.check((1, 11), 6, 3).allowed  # another user on the same server
    assert limiter.check((2, 10), 6, 3).allowed  # the same user on another server
    assert limiter.check((1, None), 6, 3).allowed  # a server-wide bucket is its own key


def test_raising_the_rate_takes_effect(limiter: RateLimiter, clock: FakeClock) -> None:
    for _ in range(3):
        limiter.check(USER, 6, 3)
    assert limiter.check(USER, 6, 3).retry_after == pytest.approx(10.0)
    clock.advance(1)
    assert limiter.check(USER, 60, 3).allowed  # at 1 token/s the second waited is enough
    assert limiter.check(USER, 60, 3).retry_after == pytest.approx(1.0)


def test_lowering_the_burst_caps_saved_tokens(limiter: RateLimiter) -> None:
    assert limiter.check(USER, 6, 10).allowed  # 9 left
    assert [limiter.check(USER, 6, 2).allowed for _ in range(3)] == [True, True, False]


def test_raising_the_burst_grants_no_free_tokens(limiter: RateLimiter, clock: FakeClock) -> None:
    for _ in range(2):
        limiter.check(USER, 6, 2)
    assert not limiter.check(USER, 6, 5).allowed
    clock.advance(30)
    assert [limiter.check(USER, 6, 5).allowed for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize(("rate", "burst"), [(0, 3), (6, 0)])
def test_never_allowed_says_inf(limiter: RateLimiter, rate: float, burst: int) -> None:
    for _ in range(burst):
        assert limiter.check(USER, rate, burst).allowed
    decision = limiter.check(USER, rate, burst)
    assert not decision.allowed and decision.retry_after == math.inf


def test_cost_takes_several_tokens(limiter: RateLimiter) -> None:
    assert limiter.check(USER, 6, 3, cost=2).allowed
    assert limiter.check(USER, 6, 3, cost=2).retry_after == pytest.approx(10.0)
    assert limiter.check(USER, 6, 3, cost=4).retry_after == math.inf


def test_clock_going_back_mints_nothing(limiter: RateLimiter, clock: FakeClock) -> None:
    for _ in range(3):
        limiter.check(USER, 6, 3)
    clock.advance(-100)
    assert not limiter.check(USER, 6, 3).allowed


def test_prune_forgets_only_full_buckets(limiter: RateLimiter, clock: FakeClock) -> None:
    limiter.check((1, 1), 6, 3)  # 2 left: full again after 10 s
    for _ in range(3):
        limiter.check((1, 2), 6, 3)  # empty: full again after 30 s
    clock.advance(10)
    assert limiter.prune() == 1 and len(limiter) == 1
    assert not limiter.check((1, 2), 6, 3, cost=2).allowed  # its state was kept
    clock.advance(30)
    assert limiter.prune() == 1 and len(limiter) == 0


def test_memory_is_bounded(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock, max_keys=100)
    for user in range(1000):
        limiter.check((1, user), 6, 3)  # every bucket is mid-burst: none is free to forget
        assert len(limiter) <= 100
    # The most recent users keep their state.
    for _ in range(2):
        limiter.check((1, 999), 6, 3)
    assert not limiter.check((1, 999), 6, 3).allowed


def test_idle_full_buckets_are_evicted_before_busy_ones(clock: FakeClock) -> None:
    limiter = RateLimiter(clock=clock, max_keys=10)
    for _ in range(3):
        limiter.check("busy", 6, 3)  # oldest, but empty
    for user in range(8):
        limiter.check(user, 6, 3)
    clock.advance(10)  # the 8 idle users are full again; "busy" has 1 of 3 tokens
    limiter.check("new-1", 6, 3)
    limiter.check("new-2", 6, 3)  # the 11th key triggers the sweep
    assert len(limiter) <= 10
    assert limiter.check("busy", 6, 3).allowed
    assert not limiter.check("busy", 6, 3).allowed


def test_the_default_server_limits_allow_a_normal_back_and_forth(limiter: RateLimiter, clock: FakeClock) -> None:
    """Eight quick messages in a row pass (the old 6/min, burst 3 refused the fourth); a flood does not,
    and a conversation at a reading pace (one message every 5 s) never runs dry."""
    config = GuildConfig()

    def check() -> bool:
        return limiter.check(USER, config.rate_limit_per_minute, config.rate_limit_burst).allowed

    assert [check() for _ in range(9)] == [True] * 8 + [False]
    clock.advance(60)
    assert all(check() for _ in range(8))
    for _ in range(30):
        clock.advance(5)
        assert check()


# --- buckets in the database, shared by several processes (StoreRateLimiter) -----------------------------------

_DATABASES = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test runs on SQLite and on the suite's real PostgreSQL (see test_storage.py's ``url``)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'switchboard.db'}"
    return await fresh_postgres_database(request.getfixturevalue("postgres_url"), f"ratelimit_{next(_DATABASES)}")


@pytest.fixture
async def stores(db_url: str) -> AsyncIterator[list[Store]]:
    """Two stores on one database, each with its own engine and connections, as two bot processes have."""
    opened = [await Store.open(db_url), await Store.open(db_url)]
    try:
        yield opened
    finally:
        for store in opened:
            await store.close()


async def test_shared_buckets_refuse_after_the_burst_and_refill(stores: list[Store], clock: FakeClock) -> None:
    limiter = StoreRateLimiter(stores[0], clock=clock)
    assert [(await limiter.acquire(USER, 6, 3)).allowed for _ in range(3)] == [True, True, True]
    assert await limiter.acquire(USER, 6, 3) == Decision(False, pytest.approx(10.0))  # type: ignore[arg-type]
    clock.advance(4)
    assert (await limiter.acquire(USER, 6, 3)).retry_after == pytest.approx(6.0)
    clock.advance(6)
    assert (await limiter.acquire(USER, 6, 3)).allowed
    clock.advance(3600)  # an hour idle still only saves up the burst
    assert [(await limiter.acquire(USER, 6, 3)).allowed for _ in range(4)] == [True, True, True, False]
    # Other keys are other buckets; a rate of 0 or a cost above the burst never passes.
    assert (await limiter.acquire((1, 11), 6, 3)).allowed and (await limiter.acquire((1, None), 6, 3)).allowed
    assert (await limiter.acquire((2, 10), 6, 3, cost=4)).retry_after == math.inf
    assert (await limiter.acquire((3, 10), 0, 1)).allowed and (
        await limiter.acquire((3, 10), 0, 1)
    ).retry_after == math.inf


async def test_two_processes_share_one_bucket(stores: list[Store], clock: FakeClock) -> None:
    first, second = (StoreRateLimiter(store, clock=clock) for store in stores)
    assert (await first.acquire(USER, 6, 3)).allowed
    assert (await second.acquire(USER, 6, 3)).allowed
    assert (await first.acquire(USER, 6, 3)).allowed
    refused = await second.acquire(USER, 6, 3)  # the user's third request went to the other process
    assert not refused.allowed and refused.retry_after == pytest.approx(10.0)
    clock.advance(10)
    assert (await second.acquire(USER, 6, 3)).allowed
    assert not (await first.acquire(USER, 6, 3)).allowed


async def test_concurrent_requests_through_two_processes_never_overspend(stores: list[Store], clock: FakeClock) -> None:
    # Each check is one transaction on a locked row: of 20 requests at once, exactly the burst passes.
    first, second = (StoreRateLimiter(store, clock=clock) for store in stores)
    decisions = await asyncio.gather(*(lim.acquire(USER, 6, 8) for lim in (first, second) * 10))
    assert sum(d.allowed for d in decisions) == 8


async def test_a_process_whose_clock_is_behind_mints_nothing(stores: list[Store]) -> None:
    ahead, behind = FakeClock(1000.0), FakeClock(900.0)
    first, second = StoreRateLimiter(stores[0], clock=ahead), StoreRateLimiter(stores[1], clock=behind)
    for _ in range(3):
        assert (await first.acquire(USER, 6, 3)).allowed
    assert not (await second.acquire(USER, 6, 3)).allowed
    behind.advance(10)  # still behind the last update: no time has passed for the bucket
    assert not (await second.acquire(USER, 6, 3)).allowed
    ahead.advance(10)
    assert (await first.acquire(USER, 6, 3)).allowed


async def test_prune_forgets_only_full_shared_buckets(stores: list[Store], clock: FakeClock) -> None:
    limiter = StoreRateLimiter(stores[0], clock=clock)
    await limiter.acquire((1, 1), 6, 3)  # full again after 10 s
    for _ in range(3):
        await limiter.acquire((1, 2), 6, 3)  # full again after 30 s
    clock.advance(10)
    assert await limiter.prune() == 1
    assert not (await limiter.acquire((1, 2), 6, 3, cost=2)).allowed  # its state was kept
    clock.advance(30)
    assert await limiter.prune() == 1
    async with stores[1].engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(rate_buckets))).scalar_one() == 0


async def test_shared_buckets_are_pruned_every_so_many_requests(stores: list[Store], clock: FakeClock) -> None:
    limiter = StoreRateLimiter(stores[0], clock=clock, prune_every=3)
    await limiter.acquire((1, 1), 6, 3)
    await limiter.acquire((1, 2), 6, 3)
    clock.advance(10)  # both full again
    await limiter.acquire((1, 3), 6, 3)  # the third request sweeps: only its own, not yet full, bucket stays
    async with stores[1].engine.connect() as conn:
        assert (await conn.execute(select(rate_buckets.c.key))).scalars().all() == ["1:3"]


async def test_in_memory_limiter_has_the_same_async_interface(limiter: RateLimiter) -> None:
    assert [(await limiter.acquire(USER, 6, 1)).allowed for _ in range(2)] == [True, False]


def test_bucket_names() -> None:
    assert (bucket_name((1, 10)), bucket_name((1, None)), bucket_name("busy")) == ("1:10", "1:-", "busy")


async def test_settings_choose_the_limiter(tmp_path: Path) -> None:
    sqlite = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    async with await Store.open(sqlite) as store:
        plain = Settings(_env_file=None, database_url=sqlite)  # type: ignore[call-arg]
        shared = Settings(_env_file=None, database_url=sqlite, shared_rate_limits=True)  # type: ignore[call-arg]
        assert isinstance(limiter_for(plain, store), RateLimiter)  # one process on SQLite: in memory
        assert isinstance(limiter_for(shared, store), StoreRateLimiter)
        postgres = Settings(_env_file=None, database_url="postgresql+asyncpg://bot@db/sb")  # type: ignore[call-arg]
        assert isinstance(limiter_for(postgres, store), StoreRateLimiter)  # PostgreSQL: always shared
