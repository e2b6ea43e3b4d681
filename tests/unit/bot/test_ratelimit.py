"""Token-bucket quotas (bot/ratelimit.py), driven by a fake clock."""

from __future__ import annotations

import math

import pytest

from bot.ratelimit import Decision, RateLimiter
from bot.storage import GuildConfig
from inference.serving.clock import FakeClock

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
