"""Batched generation for the genai small tier: requests waiting for the model are served together.

onnxruntime-genai 0.13.2 has an ``Engine`` (``add_request`` / ``step`` / ``remove_request``) that decodes
the requests it holds as one batch, each with its own prompt length and no padding, so greedy answers stay
identical to one-at-a-time generation (padding a batched ``Generator`` instead changes them). On this export
(no paged attention) it schedules *statically*: it takes a batch of up to four and runs it until every
request in it is done. In this version configuring its batch size (``engine.static_batching`` in
genai_config.json) aborts the process, ``remove_request`` does not stop a running request, and ``step``
raises when the last running request has just reached EOS.

So one :class:`EngineBatcher` drives several engines ("lanes") from one worker thread, one ``step`` per
lane in turn: requests that arrive while a batch runs start at once in a fresh lane instead of waiting for
that batch to end (continuous admission at lane granularity), up to ``max_batch`` requests in all; a new
lane waits a few milliseconds (``gather_s``) for the rest of a burst before its first step. Each
request streams its own tokens to its own consumer and finishes on its own (EOS, its length, the
consumer's stop strings or cancel). A cancelled request's tokens are dropped; a lane whose requests are
all cancelled is thrown away, which is the only way to stop its compute. An engine serves one batch.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from inference.errors import BackendUnavailable

log = logging.getLogger(__name__)

#: How many requests one genai Engine batches together (fixed by onnxruntime-genai 0.13.2, see above).
LANE_SIZE = 4
#: How long a new lane waits for more requests before its first step: clients of a burst arrive a few
#: milliseconds apart (HTTP, Discord), and a lane that started with one request can take no more.
GATHER_S = 0.03
#: The same while other lanes are running: a burst is under way, its requests trickle in (each one classified and
#: routed first), and a lane of one would cost a forward pass per token for that one request alone.
GATHER_BUSY_S = 0.25
#: onnxruntime-genai holds the GIL through every ``step`` that runs the model (tens to hundreds of ms). After each
#: one the worker sleeps this long, so the event loop and the consumers' threads get to run: without it the first
#: tokens of a burst reach their clients only once every lane has been prefilled, and HTTP clients queue at accept.
YIELD_S = 0.004
#: A step shorter than this only handed out a token the last forward pass computed: no need to yield after it.
_FORWARD_S = 0.001
#: How often a consumer waiting for its next token re-checks its stop flag (seconds).
_POLL_S = 0.05
_END = object()


class EngineLike(Protocol):
    """What the batcher uses of ``onnxruntime_genai.Engine``."""

    def add_request(self, request: Any) -> None: ...
    def has_pending_requests(self) -> bool: ...
    def step(self) -> Any: ...
    def remove_request(self, request: Any) -> None: ...


@dataclass(eq=False)
class BatchJob:
    """One request in the batcher: its prompt, its limits, and the queue its tokens arrive on."""

    prompt: list[int]
    max_new_tokens: int
    #: Sampling options for the request's GeneratorParams (``do_sample``, ``temperature``...).
    options: dict[str, Any]
    #: The token ``tokens`` ends with when the model stopped by itself (the engine drops EOS).
    eos_id: int | None
    produced: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    _out: queue.SimpleQueue[object] = field(default_factory=queue.SimpleQueue)
    _ended_at_eos: bool = False

    def cancel(self) -> None:
        self.cancelled.set()

    # -- the worker's side ----------------------------------------------------------------------------
    def _push(self, token: int) -> None:
        self.produced += 1
        self._out.put(token)

    def _finish(self, error: BaseException | None = None) -> None:
        self._ended_at_eos = error is None and self.produced < self.max_new_tokens
        self._out.put(error if error is not None else _END)

    # -- the consumer's side --------------------------------------------------------------------------
    def tokens(self, stop: threading.Event) -> Generator[int, None, None]:
        """The generated ids as they come, then EOS if the model ended the answer; returns soon after ``stop``."""
        try:
            while True:
                try:
                    item = self._out.get(timeout=_POLL_S)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                if item is _END:
                    if self._ended_at_eos and self.eos_id is not None:
                        yield self.eos_id
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, int)
                yield item
        finally:
            self.cancel()  # the worker drops whatever else it computes for us


@dataclass(eq=False)
class _Lane:
    """One genai Engine and the requests in its current batch."""

    engine: EngineLike
    jobs: dict[int, BatchJob] = field(default_factory=dict)
    #: The genai Request of each job, by the same key.
    requests: dict[int, Any] = field(default_factory=dict)
    #: Still taking requests: nothing has been stepped yet.
    open: bool = True
    opened_at: float = field(default_factory=time.monotonic)


class EngineBatcher:
    """Serves :class:`BatchJob` s in batches on genai Engines, from one worker thread per batcher.

    ``new_engine()`` makes an Engine; ``new_request(job)`` makes the genai Request for a job (prompt
    appended, search options set). The worker thread runs only while there is work, so an idle batcher
    holds no thread.
    """

    def __init__(
        self,
        name: str,
        new_engine: Callable[[], EngineLike],
        new_request: Callable[[BatchJob], Any],
        *,
        max_batch: int,
        lane_size: int = LANE_SIZE,
        gather_s: float = GATHER_S,
        gather_busy_s: float = GATHER_BUSY_S,
    ) -> None:
        if max_batch < 1 or lane_size < 1:
            raise ValueError("max_batch and lane_size must be at least 1")
        self.name = name
        self.max_batch = max_batch
        self.lane_size = lane_size
        self.gather_s = gather_s
        self.gather_busy_s = max(gather_s, gather_busy_s)
        self._new_engine = new_engine
        self._new_request = new_request
        self._cond = threading.Condition()
        self._waiting: deque[BatchJob] = deque()
        self._lanes: list[_Lane] = []
        self._worker: threading.Thread | None = None
        self._closed = False
        self._next_id = 0
        #: The most requests that were ever decoding at once (benchmarks report it).
        self.peak_active = 0
        #: Why a batch failed, once one did: the backend then goes back to one request at a time (an engine that
        #: fails on this device, e.g. a provider the Engine does not support, must not take the tier down).
        self.broken: str | None = None

    @property
    def active(self) -> int:
        """Requests in a lane (cancelled ones included: their batch still computes them)."""
        return sum(len(lane.jobs) for lane in self._lanes)

    def submit(self, job: BatchJob) -> BatchJob:
        self.submit_many([job])
        return job

    def submit_many(self, jobs: list[BatchJob]) -> None:
        """Queue ``jobs`` together: the worker sees all of them at its next admission."""
        with self._cond:
            if self._closed:
                raise BackendUnavailable(f"{self.name} is closed", backend=self.name)
            self._waiting.extend(jobs)
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name=f"genai-batcher-{self.name}", daemon=True)
                self._worker.start()
            self._cond.notify()

    def close(self) -> None:
        """Fail what is waiting and stop the worker after its current step."""
        with self._cond:
            self._closed = True
            worker = self._worker
            self._cond.notify()
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=60)

    # -- the worker -----------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._cycle():
                pass
        except BaseException as exc:  # a bug here must not strand the consumers, nor the next requests
            log.exception("%s: batcher failed", self.name)
            with self._cond:
                self._fail_all(BackendUnavailable(f"{self.name}: batched generation failed: {exc}", backend=self.name))
                self._worker = None

    def _cycle(self) -> bool:
        """Admit what waits, then one step per busy lane. False once there is nothing left to do."""
        with self._cond:
            if self._closed:
                self._fail_all(BackendUnavailable(f"{self.name} is closed", backend=self.name))
                self._worker = None
                return False
            new: list[BatchJob] = []
            while self._waiting and self.active + len(new) < self.max_batch:
                job = self._waiting.popleft()
                if job.cancelled.is_set():
                    job._finish()
                else:
                    new.append(job)
            if not new and self.active == 0:
                self._worker = None  # idle: the thread ends; the next submit starts another
                return False
        for job in new:
            self._admit(job)
        self.peak_active = max(self.peak_active, self.active)
        now, stepped, gathering = time.monotonic(), False, []
        busy = any(not lane.open for lane in self._lanes)
        window = self.gather_busy_s if busy else self.gather_s
        for lane in list(self._lanes):
            if not lane.jobs:
                continue
            if lane.open and len(lane.jobs) < self.lane_size and now - lane.opened_at < window:
                gathering.append(lane.opened_at + window - now)
                continue
            self._step(lane)
            stepped = True
        if not stepped and gathering:
            with self._cond:  # nothing to compute yet: wait for more requests or the end of the window
                if not self._waiting and not self._closed:
                    self._cond.wait(min(gathering))
        return True

    def _admit(self, job: BatchJob) -> None:
        lane = next((x for x in self._lanes if x.open and len(x.jobs) < self.lane_size), None)
        if lane is None:
            lane = _Lane(self._new_engine())
            self._lanes.append(lane)
        try:
            request = self._new_request(job)
            key = self._next_id = self._next_id + 1
            request.set_opaque_data(key)
            lane.engine.add_request(request)
        except Exception as exc:  # a prompt the engine refuses fails that request, not the batch
            job._finish(BackendUnavailable(f"{self.name}: generation failed: {exc}", backend=self.name))
            if not lane.jobs:
                self._lanes.remove(lane)
            return
        lane.jobs[key] = job
        lane.requests[key] = request

    def _step(self, lane: _Lane) -> None:
        if all(job.cancelled.is_set() for job in lane.jobs.values()):
            # Nobody wants this batch any more, and the engine cannot stop a running request: drop it.
            for job in lane.jobs.values():
                job._finish()
            self._lanes.remove(lane)
            return
        lane.open = False
        try:
            try:
                began = time.perf_counter()
                ready = lane.engine.step()
                if time.perf_counter() - began > _FORWARD_S:
                    time.sleep(YIELD_S)  # hand the GIL over (see YIELD_S)
            except Exception:
                # A request that reached EOS on this step is done but not "ready": when it was the only one
                # left, step raises ("Expected at least one request to be ready"). Done requests are no error.
                if not any(request.is_done() for request in lane.requests.values()):
                    raise
                ready = None
            if ready is not None:
                self._collect(lane, ready.get_opaque_data())
            for key in [k for k, request in lane.requests.items() if request.is_done()]:
                self._collect(lane, key)
        except Exception as exc:  # ORT errors carry no useful type: every request of the batch fails
            log.warning(
                "%s: a batch of %d failed: %s; one request at a time from now on", self.name, len(lane.jobs), exc
            )
            self.broken = str(exc)
            error = BackendUnavailable(f"{self.name}: generation failed: {exc}", backend=self.name)
            for job in lane.jobs.values():
                job._finish(error)
            lane.jobs.clear()
        if not lane.jobs:
            # Batch over. An engine is not reused: its static batch keeps state from the last one.
            self._lanes.remove(lane)

    def _collect(self, lane: _Lane, key: int) -> None:
        """Hand a request's new tokens to its job; finish the job when the request is done."""
        request, job = lane.requests.get(key), lane.jobs.get(key)
        if request is None or job is None:
            return
        while request.has_unseen_tokens():
            token = int(request.get_unseen_token())
            if not job.cancelled.is_set() and job.produced < job.max_new_tokens:
                job._push(token)
        if request.is_done():
            lane.engine.remove_request(request)
            del lane.jobs[key], lane.requests[key]
            job._finish()

    def _fail_all(self, error: BaseException) -> None:
        for lane in self._lanes:
            for job in lane.jobs.values():
                job._finish(error)
        self._lanes.clear()
        while self._waiting:
            self._waiting.popleft()._finish(error)
