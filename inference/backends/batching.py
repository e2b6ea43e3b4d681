"""Continuous batching for the small tier: the requests waiting for the model are decoded together.

One worker thread per model runs a loop of two moves:

- *admit*: requests that arrived are prefilled together (right-padded, one model run for up to
  ``prefill_tokens`` prompt tokens) and join the running batch with their first token;
- *step*: one model run gives every row of the batch its next token; rows that are done (EOS, their length,
  cancelled) leave at once, so a short answer never waits for a long one and its place is free for the next
  request.

A request that arrives while a batch runs waits at most one step to start. Each request streams its own tokens
to its own consumer, chooses them its own way (greedy, sampled, or masked by a grammar) and ends on its own.
The model itself is a :class:`Decoder` (``inference.backends.ort_decoder`` on ONNX Runtime); the worker holds
the batch's KV cache between steps. The worker runs only while there is work, so an idle model holds no thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from inference.errors import BackendUnavailable

log = logging.getLogger(__name__)

#: Prompt tokens (padding included) prefilled in one model run: a burst of chat prompts goes in one run, while a
#: long document is prefilled alone and the running answers wait for one prefill, not for a whole queue of them.
PREFILL_TOKENS = 1024
#: How often a consumer waiting for its next token re-checks its stop flag (seconds).
_POLL_S = 0.05
_END = object()

State = TypeVar("State")


class Decoder(Protocol, Generic[State]):
    """A causal LM run a batch of rows at a time; ``State`` is the batch's KV cache."""

    def prefill(
        self, prompts: list[list[int]], ready: Callable[[int, np.ndarray], None] | None = None
    ) -> tuple[np.ndarray, State]:
        """The next-token logits of each prompt [rows, vocab], and their cache.

        ``ready(i, logits)`` is called for each prompt as soon as its own logits are known, before the others'.
        """
        ...

    def step(self, state: State, tokens: list[int]) -> tuple[np.ndarray, State]:
        """Append one token per row: the next logits [rows, vocab], and the grown cache."""
        ...

    def select(self, state: State, keep: list[int]) -> State | None:
        """The cache of rows ``keep`` only (None when empty)."""
        ...

    def join(self, first: State | None, second: State) -> State:
        """One cache holding ``first``'s rows, then ``second``'s."""
        ...

    def warm_up(self, rows: int) -> None:
        """Run a batch of ``rows`` once before the first request (from the batcher's worker, like every call)."""
        ...


class TokenChooser(Protocol):
    """Picks a request's next token from its logits row (and follows what was picked, for grammars)."""

    def choose(self, logits: np.ndarray) -> int: ...


class Greedy:
    def choose(self, logits: np.ndarray) -> int:
        return int(np.argmax(logits))


class Sampler:
    """Temperature, top-k and nucleus (top-p) sampling, as onnxruntime-genai and transformers do it."""

    def __init__(self, temperature: float, top_p: float = 1.0, top_k: int = 50, seed: int | None = None) -> None:
        if temperature <= 0:
            raise ValueError("temperature must be positive (greedy decoding is Greedy)")
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self._rng = np.random.default_rng(seed)

    def choose(self, logits: np.ndarray) -> int:
        k = min(self.top_k, logits.shape[-1]) if self.top_k > 0 else logits.shape[-1]
        top = np.argpartition(logits, -k)[-k:]
        top = top[np.argsort(logits[top])[::-1]]  # best first
        scaled = logits[top].astype(np.float64) / self.temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        if self.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), self.top_p)) + 1  # the smallest set reaching top_p
            probs = probs[:keep] / probs[:keep].sum()
            top = top[:keep]
        return int(top[self._rng.choice(len(top), p=probs)])


class Guided:
    """A grammar's mask over each step's logits (``GenaiGuide``), then another chooser on what is allowed."""

    def __init__(self, guide: Any, inner: TokenChooser) -> None:
        self.guide, self.inner = guide, inner

    def choose(self, logits: np.ndarray) -> int:
        token = self.inner.choose(self.guide.mask(np.array(logits, dtype=np.float32)))
        self.guide.consume(token)
        return token


@dataclass(eq=False)
class BatchJob:
    """One request in the batcher: its prompt, its limits, and the queue its tokens arrive on.

    The tokens end with the EOS id when the model ended the answer itself.
    """

    prompt: list[int]
    max_new_tokens: int
    eos_ids: frozenset[int]
    chooser: TokenChooser = field(default_factory=Greedy)
    produced: int = 0
    #: The token the model reads next (the last one handed out).
    last_token: int = -1
    cancelled: threading.Event = field(default_factory=threading.Event)
    _out: queue.SimpleQueue[object] = field(default_factory=queue.SimpleQueue)
    _done: bool = False

    def cancel(self) -> None:
        self.cancelled.set()

    # -- the worker's side ----------------------------------------------------------------------------
    def _take(self, logits: np.ndarray) -> bool:
        """Choose and hand out the next token; True while the job goes on."""
        try:
            token = self.chooser.choose(logits)
        except Exception as exc:  # a grammar that lost track fails this request only
            self._finish(BackendUnavailable(f"generation failed: {exc}"))
            return False
        self.produced += 1
        self.last_token = token
        self._out.put(token)
        if token in self.eos_ids or self.produced >= self.max_new_tokens or self.cancelled.is_set():
            self._finish()
            return False
        return True

    def _finish(self, error: BaseException | None = None) -> None:
        if not self._done:
            self._done = True
            self._out.put(error if error is not None else _END)

    # -- the consumer's side --------------------------------------------------------------------------
    def tokens(self, stop: threading.Event) -> Generator[int, None, None]:
        """The generated ids as they come; returns soon after ``stop``."""
        try:
            while True:
                try:
                    item = self._out.get(timeout=_POLL_S)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, int)
                yield item
        finally:
            self.cancel()  # the worker drops the row at its next step


class ContinuousBatcher(Generic[State]):
    """Serves :class:`BatchJob` s on a :class:`Decoder`, up to ``max_batch`` rows at once, from one worker thread."""

    def __init__(
        self, name: str, decoder: Decoder[State], *, max_batch: int, prefill_tokens: int = PREFILL_TOKENS
    ) -> None:
        if max_batch < 1 or prefill_tokens < 1:
            raise ValueError("max_batch and prefill_tokens must be at least 1")
        self.name = name
        self.decoder = decoder
        self.max_batch = max_batch
        self.prefill_tokens = prefill_tokens
        self._cond = threading.Condition()
        self._waiting: deque[BatchJob] = deque()
        self._rows: list[BatchJob] = []
        self._state: State | None = None
        self._worker: threading.Thread | None = None
        self._closed = False
        self._warm = False
        #: The most requests that were ever decoding at once (benchmarks report it).
        self.peak_active = 0
        #: Why a batch step failed, once one did: the backend then generates one request at a time.
        self.broken: str | None = None

    @property
    def active(self) -> int:
        """Requests in the running batch."""
        return len(self._rows)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, job: BatchJob) -> BatchJob:
        self.submit_many([job])
        return job

    def submit_many(self, jobs: list[BatchJob]) -> None:
        """Queue ``jobs`` together: the worker sees all of them at its next admission."""
        with self._cond:
            if self._closed:
                raise BackendUnavailable(f"{self.name} is closed", backend=self.name)
            self._waiting.extend(jobs)
            self._start_worker()

    def warm_up(self) -> None:
        """Have the worker run the decoder's warm-up (a full batch, once) now, before any request waits for it."""
        with self._cond:
            if not self._closed:
                self._warm = True
                self._start_worker()

    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name=f"switchboard-batcher-{self.name}", daemon=True)
            self._worker.start()

    def close(self) -> None:
        """Fail what is waiting and stop the worker after its current model run."""
        with self._cond:
            self._closed = True
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout=60)

    # -- the worker -----------------------------------------------------------------------------------
    def _run(self) -> None:
        if self._warm:
            self._warm = False
            try:
                # Here, not in the caller: loading does not wait for it, and only this thread uses the decoder.
                self.decoder.warm_up(self.max_batch)
            except Exception as exc:  # only a warm-up: the requests will say what is wrong
                log.warning("%s: warm-up failed: %s", self.name, exc)
        try:
            while self._cycle():
                pass
        except BaseException as exc:  # a bug here must not strand the consumers, nor the next requests
            log.exception("%s: batcher failed", self.name)
            with self._cond:
                self._fail_all(BackendUnavailable(f"{self.name}: batched generation failed: {exc}", backend=self.name))
                self._worker = None

    def _cycle(self) -> bool:
        """Admit what waits (one prefill), then one step for the batch. False once there is nothing left to do."""
        with self._cond:
            if self._closed:
                self._fail_all(BackendUnavailable(f"{self.name} is closed", backend=self.name))
                self._worker = None
                return False
            new = self._next_group()
            if not new and not self._rows:
                self._worker = None  # idle: the thread ends; the next submit starts another
                return False
        if new:
            self._admit(new)
        self._leave()
        if self._rows:
            self._step()
            self._leave()
        return True

    def _next_group(self) -> list[BatchJob]:
        """The waiting jobs to prefill now: as many as the batch has room for and one prefill holds."""
        group: list[BatchJob] = []
        width = 0
        while self._waiting and len(self._rows) + len(group) < self.max_batch:
            job = self._waiting[0]
            if job.cancelled.is_set():
                self._waiting.popleft()._finish()
                continue
            wider = max(width, len(job.prompt))
            if group and wider * (len(group) + 1) > self.prefill_tokens:
                break
            group.append(self._waiting.popleft())
            width = wider
        return group

    def _admit(self, group: list[BatchJob]) -> None:
        taken: dict[int, bool] = {}

        def ready(i: int, logits: np.ndarray) -> None:
            # Each first token goes out as soon as its own prompt has run: a group's prompts can run in several
            # model runs (those without a stored beginning, then those continuing each beginning), and the
            # first runs' requests need not wait for the last.
            if i not in taken:
                taken[i] = group[i]._take(logits)

        try:
            logits, state = self.decoder.prefill([job.prompt for job in group], ready)
        except Exception as exc:  # e.g. a prompt the model cannot take: those requests fail, the batch goes on
            log.warning("%s: prefill of %d failed: %s", self.name, len(group), exc)
            for job in group:
                job._finish(BackendUnavailable(f"{self.name}: generation failed: {exc}", backend=self.name))
            return
        for i in range(len(group)):
            ready(i, logits[i])
        going = [i for i in range(len(group)) if taken[i]]
        if going:
            kept = state if len(going) == len(group) else self.decoder.select(state, going)
            assert kept is not None
            self._state = self.decoder.join(self._state, kept)
            self._rows.extend(group[i] for i in going)
        self.peak_active = max(self.peak_active, len(self._rows))

    def _step(self) -> None:
        assert self._state is not None
        try:
            logits, self._state = self.decoder.step(self._state, [job.last_token for job in self._rows])
        except Exception as exc:  # ORT errors carry no useful type: every request of the batch fails
            log.warning("%s: a batch of %d failed: %s; one request at a time from now on", self.name, self.active, exc)
            self.broken = str(exc)
            error = BackendUnavailable(f"{self.name}: generation failed: {exc}", backend=self.name)
            for job in self._rows:
                job._finish(error)
            self._rows, self._state = [], None
            return
        for job, row in zip(self._rows, logits, strict=True):
            job._take(row)

    def _leave(self) -> None:
        """Drop the rows that are done or that nobody reads any more."""
        keep = [i for i, job in enumerate(self._rows) if not job._done and not job.cancelled.is_set()]
        if len(keep) == len(self._rows):
            return
        for i, job in enumerate(self._rows):
            if i not in keep:
                job._finish()
        self._state = self.decoder.select(self._state, keep) if self._state is not None else None
        self._rows = [self._rows[i] for i in keep]

    def _fail_all(self, error: BaseException) -> None:
        for job in self._rows:
            job._finish(error)
        self._rows, self._state = [], None
        while self._waiting:
            self._waiting.popleft()._finish(error)
