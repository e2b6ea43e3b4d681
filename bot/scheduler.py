"""Timed work kept in the database: reminders, recurring agent goals (``scheduled_jobs``, :class:`bot.storage.Job`).

A cog that owns a kind of job registers its handler (``bot.scheduler.register("reminder", handler)``) and adds
jobs with :meth:`bot.storage.Store.add_job`. The scheduler claims due jobs through the store
(:meth:`~bot.storage.Store.claim_due_jobs`: one conditional UPDATE per job, so of several bot processes on one
database exactly one fires each) and runs their handlers, each in its own task (a few at once). A handler's failure
is logged and never stops the loop; a job is fired at most once per slot, so a restart or a second process never
repeats a reminder. A process running some shards claims only its servers' jobs.

Tests never sleep: they move the clock they passed and call ``await bot.scheduler.run_due()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime

from bot.storage import Job, Store

log = logging.getLogger(__name__)

#: An async handler of one kind of job; what it raises is logged, never propagated.
Handler = Callable[[Job], Awaitable[None]]
WallClock = Callable[[], datetime]
#: Awaited before the first pass (e.g. ``bot.wait_until_ready``).
Ready = Callable[[], Awaitable[object]]


def utc_now() -> datetime:
    return datetime.now(UTC)


def default_owner() -> str:
    """This process's name in ``claimed_by``: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Scheduler:
    """Runs the due jobs of the registered kinds: on demand (:meth:`run_due`) or every ``poll_s`` (:meth:`start`).

    Each handler runs in its own task, at most ``concurrency`` at once; only as many jobs are claimed as there
    are free slots, so a job waiting for a slot stays in the database for this or another process.
    ``ready``: awaited before the background loop's first pass (the bot connected: a job fired earlier
    would find no channel and be lost). ``shards``: ``(shard_count, shard_ids)`` when this process runs only
    some shards: it claims only the jobs of their servers.
    """

    def __init__(
        self,
        store: Store,
        clock: WallClock = utc_now,
        owner: str = "switchboard",
        *,
        poll_s: float = 15.0,
        batch: int = 20,
        concurrency: int = 4,
        handler_timeout_s: float = 300.0,
        ready: Ready | None = None,
        shards: tuple[int, Collection[int]] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        #: Who claims (written to ``claimed_by``): a process's name, e.g. host and shards.
        self.owner = owner
        self.poll_s = poll_s
        self.batch = batch
        self.concurrency = max(1, concurrency)
        self.handler_timeout_s = handler_timeout_s
        self.ready = ready
        self.shards = shards
        self._handlers: dict[str, Handler] = {}
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    @property
    def kinds(self) -> list[str]:
        return list(self._handlers)

    @property
    def busy(self) -> int:
        """Handlers running now."""
        return len(self._running)

    def register(self, kind: str, handler: Handler) -> None:
        """Run ``handler`` for jobs of ``kind`` (a later registration of the same kind replaces it)."""
        self._handlers[kind] = handler

    def unregister(self, kind: str) -> None:
        self._handlers.pop(kind, None)

    def now(self) -> datetime:
        return self.clock().astimezone(UTC)

    async def run_due(self) -> list[Job]:
        """Claim the jobs due now (only kinds with a handler here), run them and wait for them; returns the jobs.

        Claims as slots free up until nothing is due. Never raises for a handler's failure or a database hiccup.
        """
        ran: list[Job] = []
        started: list[asyncio.Task[None]] = []
        try:
            while True:
                if self.busy >= self.concurrency:  # every slot taken: wait for one before claiming more
                    await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)
                    continue
                jobs, tasks, full = await self._claim()
                ran += jobs
                started += tasks
                if not full:
                    return ran
        finally:
            if started:
                await asyncio.wait(started)

    async def _claim(self) -> tuple[list[Job], list[asyncio.Task[None]], bool]:
        """Claim up to the free slots and start their handlers; ``full``: as many were claimed as asked for."""
        wanted = min(self.batch, self.concurrency - self.busy)
        if wanted <= 0:
            return [], [], False
        try:
            jobs = await self.store.claim_due_jobs(self.now(), self.owner, wanted, kinds=self.kinds, shards=self.shards)
        except Exception:
            log.exception("scheduler: claiming due jobs failed")
            return [], [], False
        tasks = [self._spawn(job) for job in jobs]
        return jobs, tasks, len(jobs) == wanted

    def _spawn(self, job: Job) -> asyncio.Task[None]:
        task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def _run(self, job: Job) -> None:
        handler = self._handlers.get(job.kind)
        if handler is None:  # unregistered between the claim and now
            log.warning("scheduler: no handler for job #%s of kind %r; skipped", job.id, job.kind)
            return
        try:
            async with asyncio.timeout(self.handler_timeout_s):
                await handler(job)
        except Exception:
            log.exception("scheduler: job #%s (%s) failed", job.id, job.kind)

    # the background loop

    def start(self) -> None:
        """Poll every ``poll_s`` seconds in the background (idempotent), once ``ready`` is done."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self, grace_s: float = 0.0) -> None:
        """Stop polling; give running handlers ``grace_s`` seconds to finish, then cancel them."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        running = set(self._running)
        if not running:
            return
        if grace_s > 0:
            log.info("scheduler: waiting up to %.0fs for %d running jobs", grace_s, len(running))
            _done, pending = await asyncio.wait(running, timeout=grace_s)
        else:
            pending = running
        for left in pending:
            left.cancel()
        if pending:
            log.warning("scheduler: %d jobs cut off by shutdown", len(pending))
            await asyncio.wait(pending)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _loop(self) -> None:
        if self.ready is not None:
            await self.ready()
        while True:
            try:
                # Fill the free slots without waiting for the handlers: a long one doesn't hold up the others.
                while (await self._claim())[2]:
                    pass
            except Exception:  # _claim already guards; this keeps the loop alive whatever happens
                log.exception("scheduler: run failed")
            await asyncio.sleep(self.poll_s)
