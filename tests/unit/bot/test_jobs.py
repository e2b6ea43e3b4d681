"""Scheduled jobs: stored, listed, cancelled, and claimed exactly once per slot however many processes ask.

Each test runs on SQLite and on a real PostgreSQL (the ``url`` fixture of test_storage.py).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest

from bot.scheduler import Scheduler
from bot.storage import Job, NotFound, Store
from tests.unit.bot import test_storage
from tests.unit.bot.test_storage import T0, Clock

# test_storage's fixtures: every test here runs on SQLite and on PostgreSQL too.
url, clock, store = test_storage.url, test_storage.clock, test_storage.store

GUILD, OTHER_GUILD, ALICE, BOB, CHANNEL = 111, 222, 1, 2, 50


async def add(store: Store, *, at: timedelta, every: int | None = None, user: int = ALICE, **kw: Any) -> Job:
    values: dict[str, object] = dict(guild_id=GUILD, channel_id=CHANNEL, user_id=user, kind="reminder")
    values |= dict(payload={"text": "tea"}, run_at=T0 + at, interval_s=every) | kw
    return await store.add_job(**values)  # type: ignore[arg-type]


async def test_add_list_and_filters(store: Store):
    later = await add(store, at=timedelta(hours=2))
    sooner = await add(store, at=timedelta(minutes=5), user=BOB, kind="agent_goal", every=3600)
    dm = await add(store, at=timedelta(minutes=1), guild_id=None)
    assert later.payload == {"text": "tea"} and later.next_run_at == T0 + timedelta(hours=2)
    assert later.interval_s is None and not later.recurring and sooner.recurring
    assert [j.id for j in await store.jobs(GUILD)] == [sooner.id, later.id]  # soonest first
    assert [j.id for j in await store.jobs(GUILD, kind="reminder")] == [later.id]
    assert [j.id for j in await store.jobs(GUILD, user_id=BOB)] == [sooner.id]
    assert [j.id for j in await store.jobs(None)] == [dm.id]
    assert await store.jobs(OTHER_GUILD) == []
    assert (await store.get_job(later.id)) == later


@pytest.mark.parametrize(
    "bad",
    [dict(kind=""), dict(kind="x" * 33), dict(interval_s=0)],
)
async def test_invalid_jobs_are_refused(store: Store, bad: dict[str, Any]):
    with pytest.raises(ValueError):
        await add(store, at=timedelta(0), **bad)
    with pytest.raises(ValueError, match="aware"):
        await store.add_job(
            guild_id=GUILD,
            channel_id=1,
            user_id=1,
            kind="k",
            payload={},
            run_at=T0.replace(tzinfo=None),
            interval_s=None,
        )
    assert await store.jobs(GUILD) == []


async def test_cancel_only_own_pending_job_and_audited(store: Store):
    job = await add(store, at=timedelta(minutes=5))
    with pytest.raises(NotFound):
        await store.cancel_job(GUILD, BOB, job.id)  # not Bob's
    with pytest.raises(NotFound):
        await store.cancel_job(OTHER_GUILD, ALICE, job.id)  # not on that server
    cancelled = await store.cancel_job(GUILD, ALICE, job.id)
    assert cancelled.cancelled and cancelled.id == job.id
    assert await store.jobs(GUILD) == []
    with pytest.raises(NotFound):
        await store.cancel_job(GUILD, ALICE, job.id)  # once
    other = await add(store, at=timedelta(minutes=5))
    assert (await store.cancel_job(GUILD, BOB, other.id, any_user=True)).cancelled  # an admin may
    actions = [(e.action, e.actor_id, e.details["id"]) for e in await store.audit(GUILD)]
    assert actions == [("job.cancel", BOB, other.id), ("job.cancel", ALICE, job.id)]


async def test_claim_takes_due_jobs_once_and_marks_one_shots_done(store: Store):
    due = await add(store, at=timedelta(minutes=1))
    later = await add(store, at=timedelta(hours=1))
    cancelled = await add(store, at=timedelta(0))
    await store.cancel_job(GUILD, ALICE, cancelled.id)
    assert await store.claim_due_jobs(T0, "a") == []  # nothing due yet
    (claimed,) = await store.claim_due_jobs(T0 + timedelta(minutes=2), "a")
    assert claimed.id == due.id and claimed.done and claimed.claimed_by == "a" and claimed.runs == 1
    assert claimed.due_at == T0 + timedelta(minutes=1)
    assert await store.claim_due_jobs(T0 + timedelta(minutes=3), "b") == []
    assert [j.id for j in await store.jobs(GUILD)] == [later.id]  # done jobs are no longer pending


async def test_claim_only_the_kinds_asked_for(store: Store):
    reminder = await add(store, at=timedelta(0))
    goal = await add(store, at=timedelta(0), kind="agent_goal")
    assert await store.claim_due_jobs(T0, "a", kinds=()) == []
    assert [j.id for j in await store.claim_due_jobs(T0, "a", kinds=["agent_goal"])] == [goal.id]
    assert [j.id for j in await store.claim_due_jobs(T0, "a", kinds=None)] == [reminder.id]


async def test_recurring_job_advances_to_the_next_future_slot(store: Store):
    job = await add(store, at=timedelta(0), every=3600)
    (first,) = await store.claim_due_jobs(T0 + timedelta(seconds=10), "a")
    assert not first.done and first.next_run_at == T0 + timedelta(hours=1) and first.due_at == T0
    assert await store.claim_due_jobs(T0 + timedelta(minutes=59), "a") == []
    # Down for five hours: one run now, then the next slot on the same grid (missed runs are not replayed).
    (second,) = await store.claim_due_jobs(T0 + timedelta(hours=5, minutes=30), "a")
    assert second.next_run_at == T0 + timedelta(hours=6) and second.runs == 2
    assert [j.next_run_at for j in await store.jobs(GUILD)] == [T0 + timedelta(hours=6)]
    assert (await store.get_job(job.id)) is not None


async def test_two_processes_claim_disjoint_jobs(url: str, clock: Clock):
    a, b = await Store.open(url, clock=clock), await Store.open(url, clock=clock)
    try:
        jobs = [await add(a, at=timedelta(seconds=i)) for i in range(12)]
        jobs.append(await add(a, at=timedelta(0), every=60))
        now = T0 + timedelta(minutes=1)
        got_a, got_b = await asyncio.gather(a.claim_due_jobs(now, "a", limit=50), b.claim_due_jobs(now, "b", limit=50))
        ids_a, ids_b = {j.id for j in got_a}, {j.id for j in got_b}
        assert not ids_a & ids_b
        assert ids_a | ids_b == {j.id for j in jobs}
        again = await asyncio.gather(a.claim_due_jobs(now, "a"), b.claim_due_jobs(now, "b"))
        assert again == [[], []]
    finally:
        await a.close()
        await b.close()


async def test_claimed_one_shot_never_claimed_again_after_restart(url: str, clock: Clock):
    async with await Store.open(url, clock=clock) as first:
        job = await add(first, at=timedelta(0))
        assert [j.id for j in await first.claim_due_jobs(T0, "old")] == [job.id]
    async with await Store.open(url, clock=clock) as second:
        assert await second.claim_due_jobs(T0 + timedelta(days=1), "new") == []
        pending = await add(second, at=timedelta(hours=1))
    async with await Store.open(url, clock=clock) as third:  # a pending job survives a restart
        assert [j.id for j in await third.claim_due_jobs(T0 + timedelta(hours=2), "new")] == [pending.id]


async def test_scheduler_runs_handlers_and_survives_their_failures(
    store: Store,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
):
    ran: list[int] = []

    async def ok(job: Job) -> None:
        ran.append(job.id)

    async def boom(job: Job) -> None:
        raise RuntimeError("handler bug")

    scheduler = Scheduler(store, clock, "test", batch=2)
    scheduler.register("reminder", ok)
    scheduler.register("broken", boom)
    jobs = [await add(store, at=timedelta(0)) for _ in range(3)]
    failing = await add(store, at=timedelta(0), kind="broken")
    unknown = await add(store, at=timedelta(0), kind="nobody_handles_this")
    with caplog.at_level(logging.ERROR, logger="bot.scheduler"):
        done = await scheduler.run_due()  # batches of two until nothing is due
    assert sorted(ran) == [j.id for j in jobs]
    assert {j.id for j in done} == {*ran, failing.id}
    assert f"job #{failing.id} (broken) failed" in caplog.text
    assert await scheduler.run_due() == []  # once
    # A kind no handler here takes stays pending for a process that has one.
    assert [j.id for j in await store.jobs(GUILD)] == [unknown.id]


async def test_scheduler_loop_starts_and_stops(store: Store, clock: Clock):
    fired = asyncio.Event()

    async def handler(job: Job) -> None:
        fired.set()

    scheduler = Scheduler(store, clock, "test", poll_s=3600)
    scheduler.register("reminder", handler)
    await add(store, at=timedelta(0))
    scheduler.start()
    assert scheduler.running
    await asyncio.wait_for(fired.wait(), 5)  # the first pass runs at once
    await scheduler.stop()
    assert not scheduler.running


async def test_cancel_filters_by_kind_and_lets_the_one_reminded_cancel(store: Store):
    goal = await add(store, at=timedelta(minutes=5), kind="agent_goal")
    with pytest.raises(NotFound):
        await store.cancel_job(GUILD, ALICE, goal.id, kind="reminder")  # not a reminder
    for_bob = await add(store, at=timedelta(minutes=5), payload={"text": "tea", "target_user_id": BOB})
    with pytest.raises(NotFound):
        await store.cancel_job(GUILD, BOB, for_bob.id, kind="reminder")  # Bob didn't set it
    assert [j.id for j in await store.jobs(GUILD, user_id=BOB, or_target=True)] == [for_bob.id]
    assert await store.jobs(GUILD, user_id=BOB) == []
    assert (await store.cancel_job(GUILD, BOB, for_bob.id, kind="reminder", or_target=True)).cancelled
    assert [j.id for j in await store.jobs(GUILD)] == [goal.id]


def _guild_on(shard: int, count: int, n: int = 1) -> int:
    """A server id Discord puts on ``shard`` of ``count``."""
    return ((count * n + shard) << 22) | 12345


async def test_a_process_claims_only_its_shards_jobs(store: Store):
    on0, on1 = _guild_on(0, 2), _guild_on(1, 2, n=7)
    first = await add(store, at=timedelta(0), guild_id=on0)
    second = await add(store, at=timedelta(0), guild_id=on1)
    dm = await add(store, at=timedelta(0), guild_id=None)  # direct messages: shard 0
    assert [j.id for j in await store.claim_due_jobs(T0, "b", shards=(2, (1,)))] == [second.id]
    assert {j.id for j in await store.claim_due_jobs(T0, "a", shards=(2, [0]))} == {first.id, dm.id}
    other = await add(store, at=timedelta(0), guild_id=on1)
    assert [j.id for j in await store.claim_due_jobs(T0, "all", shards=None)] == [other.id]


async def test_a_database_error_mid_claim_returns_what_was_claimed(store: Store, caplog: pytest.LogCaptureFixture):
    from sqlalchemy import text

    jobs = [await add(store, at=timedelta(seconds=i)) for i in range(3)]
    broken = jobs[1].id
    async with store.engine.begin() as conn:  # the database refuses to update the second job
        if conn.dialect.name == "sqlite":
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE UPDATE ON scheduled_jobs WHEN NEW.id = "
                    f"{broken} BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN IF NEW.id = "
                    f"{broken} THEN RAISE EXCEPTION 'disk on fire'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                text("CREATE TRIGGER refuse BEFORE UPDATE ON scheduled_jobs FOR EACH ROW EXECUTE FUNCTION refuse()")
            )
    with caplog.at_level(logging.ERROR, logger="bot.storage.store"):
        claimed = await store.claim_due_jobs(T0 + timedelta(minutes=1), "a")
    assert [j.id for j in claimed] == [jobs[0].id]  # the first one is not lost
    assert f"claiming job #{broken} failed" in caplog.text
    assert [j.id for j in await store.jobs(GUILD)] == [broken, jobs[2].id]  # the rest wait for the next pass


async def test_handlers_run_concurrently_in_bounded_slots(store: Store, clock: Clock):
    release, four = asyncio.Event(), asyncio.Event()
    started: list[int] = []

    async def slow(job: Job) -> None:
        started.append(job.id)
        if len(started) == 4:
            four.set()
        await release.wait()

    scheduler = Scheduler(store, clock, "test", concurrency=4)
    scheduler.register("reminder", slow)
    jobs = [await add(store, at=timedelta(0)) for _ in range(6)]
    run = asyncio.ensure_future(scheduler.run_due())
    await asyncio.wait_for(four.wait(), 5)  # four at once, not one after the other
    assert scheduler.busy == 4 and len(started) == 4
    assert len(await store.jobs(GUILD)) == 2  # only as many claimed as there are slots
    release.set()
    done = await asyncio.wait_for(run, 5)
    assert sorted(j.id for j in done) == sorted(started) == [j.id for j in jobs]
    assert await store.jobs(GUILD) == [] and scheduler.busy == 0


async def test_the_loop_waits_until_ready(store: Store, clock: Clock):
    gate, asked = asyncio.Event(), asyncio.Event()
    fired = asyncio.Event()

    async def ready() -> None:
        asked.set()
        await gate.wait()

    async def handler(job: Job) -> None:
        fired.set()

    scheduler = Scheduler(store, clock, "test", poll_s=3600, ready=ready)
    scheduler.register("reminder", handler)
    job = await add(store, at=timedelta(0))
    scheduler.start()
    await asyncio.wait_for(asked.wait(), 5)
    assert [j.id for j in await store.jobs(GUILD)] == [job.id]  # not claimed while the bot isn't connected
    gate.set()
    await asyncio.wait_for(fired.wait(), 5)
    await scheduler.stop()


async def test_stop_lets_running_handlers_finish_within_the_grace_then_cancels(store: Store, clock: Clock):
    release, entered = asyncio.Event(), asyncio.Event()
    finished: list[int] = []
    cut_off: list[int] = []

    async def handler(job: Job) -> None:
        entered.set()
        try:
            await release.wait()
            finished.append(job.id)
        except asyncio.CancelledError:
            cut_off.append(job.id)
            raise

    scheduler = Scheduler(store, clock, "test", poll_s=3600)
    scheduler.register("reminder", handler)
    first = await add(store, at=timedelta(0))
    scheduler.start()
    await asyncio.wait_for(entered.wait(), 5)
    stopping = asyncio.ensure_future(scheduler.stop(grace_s=30))
    await asyncio.sleep(0)
    release.set()  # it finishes within the grace period: not cut off
    await asyncio.wait_for(stopping, 5)
    assert finished == [first.id] and cut_off == []

    release.clear()
    entered.clear()
    second = await add(store, at=timedelta(0))
    scheduler.start()
    await asyncio.wait_for(entered.wait(), 5)
    await asyncio.wait_for(scheduler.stop(grace_s=0), 5)  # no grace: cancelled
    assert cut_off == [second.id] and scheduler.busy == 0
