"""The one place where timeouts, retries, cooldown and queueing happen, for every backend.

:class:`ResilientBackend` wraps any :class:`~inference.backends.base.Backend` and applies the model
spec's :class:`~inference.catalogue.Timeouts`, :class:`~inference.catalogue.RetryPolicy`,
:class:`~inference.catalogue.Cooldown` and :class:`~inference.catalogue.Limits`. Backends themselves
never retry, so a request is attempted at most ``retry.max_attempts`` times in total.

Time: retry backoff and the cooldown window run on an injectable :class:`Clock` (tests use
:class:`FakeClock` and never sleep). First-token and total timeouts are event-loop deadlines
(``asyncio.timeout_at``): they must interrupt a stalled await, which only the loop can do; tests use
small real limits against a backend that blocks on an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Protocol

from inference.backends.base import Backend, ProbeResult, TokenStream
from inference.catalogue import Cooldown, Limits, RetryPolicy, Timeouts
from inference.errors import (
    BackendOverloaded,
    BackendTimeout,
    BackendUnavailable,
    InferenceError,
    QueueFull,
)
from inference.serving.circuit import Circuit
from inference.serving.clock import Clock, RealClock
from inference.types import ChatMessage, GenerationParams

log = logging.getLogger(__name__)


class _Spec(Protocol):
    """What this layer reads from a catalogue model spec (every kind has these)."""

    @property
    def timeouts(self) -> Timeouts: ...
    @property
    def retry(self) -> RetryPolicy: ...
    @property
    def cooldown(self) -> Cooldown: ...
    @property
    def limits(self) -> Limits: ...


class ResilientBackend:
    """Same interface as :class:`Backend` (``stream`` returns a :class:`TokenStream`), with policies.

    - at most ``limits.max_concurrency`` requests run and ``limits.max_queue`` wait; one more gets
      :class:`QueueFull` at once;
    - ``timeouts.first_token_s`` per attempt and ``timeouts.total_s`` per request raise
      :class:`BackendTimeout` and close the underlying stream;
    - retryable errors are retried only before the first token was yielded, with capped exponential
      backoff and jitter, honouring Retry-After up to ``retry.retry_after_cap_s``;
    - a failing backend (failure ratio over a sliding window, or one auth error) cools down for
      ``cooldown.duration_s``, then one request goes through as a probe (half-open);
    - the backend is started lazily by its first request, inside that request's first-token budget;
      concurrent first requests share one start (no lock), and a start that failed is tried afresh.
    """

    def __init__(
        self,
        backend: Backend,
        spec: _Spec,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.backend = backend
        self.spec = spec
        self._clock: Clock = clock or RealClock()
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(spec.limits.max_concurrency)
        #: Requests admitted (running or waiting for a slot).
        self._admitted = 0
        self.circuit = Circuit(self.name, spec.cooldown, self._clock)
        self._started = False
        #: Set while a start runs; resolves to its outcome (None, the error, or _GAVE_UP) for those sharing it.
        self._starting: asyncio.Future[object] | None = None

    def __repr__(self) -> str:
        return f"ResilientBackend({self.backend!r})"

    # --- the Backend surface -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def model(self) -> str:
        return self.backend.model

    @property
    def kind(self) -> str:
        return self.backend.kind

    @property
    def provider(self) -> str:
        return self.backend.provider

    @property
    def context_window(self) -> int:
        return self.backend.context_window

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    @property
    def started(self) -> bool:
        return self._started

    async def start(self) -> None:
        """Start the backend once. Callers that arrive while a start runs share its outcome (one DNS
        lookup for all of them, success or failure); nobody holds a lock across an await.

        The caller that runs the start may give up (its timeout cancels it); those waiting then start
        afresh. A start that failed is tried again by the next caller.
        """
        while not self._started:
            pending = self._starting
            if pending is None:
                await self._start_now()
                return
            outcome = await asyncio.shield(pending)  # our own timeout leaves the shared start alone
            if isinstance(outcome, BaseException):
                raise outcome

    async def _start_now(self) -> None:
        self._starting = pending = asyncio.get_running_loop().create_future()
        outcome: object = _GAVE_UP
        try:
            await self.backend.start()
            self._started = True
            outcome = None
        except Exception as exc:
            outcome = exc
            raise
        finally:
            self._starting = None
            pending.set_result(outcome)

    async def aclose(self) -> None:
        self._started = False
        await self.backend.aclose()

    async def probe(self) -> bool:
        """The backend's health check, bounded by the first-token timeout; success ends a cooldown."""
        return await self.probe_status() is ProbeResult.HEALTHY

    async def probe_status(self) -> ProbeResult:
        """:meth:`probe`, telling apart unreachable and credentials refused."""
        try:
            async with asyncio.timeout(self.spec.timeouts.first_token_s):
                result = await self.backend.probe_status()
        except Exception as exc:  # a probe gives a verdict, whatever went wrong
            log.info("probe of %s failed: %s", self.name, type(exc).__name__)
            result = ProbeResult.UNREACHABLE
        if result is ProbeResult.HEALTHY:
            self.circuit.healthy_probe()
        return result

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> TokenStream:
        return TokenStream.wrapping(
            lambda outer: self._run(list(messages), params, outer), model=self.model, provider=self.provider
        )

    # --- state ---------------------------------------------------------------------------------------
    @property
    def available(self) -> bool:
        """False while cooling down, and while the half-open probe request is in flight."""
        return self.circuit.available

    @property
    def cooldown_remaining(self) -> float:
        return self.circuit.remaining

    @property
    def in_flight(self) -> int:
        """Requests running or queued."""
        return self._admitted

    # --- the request ---------------------------------------------------------------------------------
    async def _run(
        self, messages: list[ChatMessage], params: GenerationParams, outer: TokenStream
    ) -> AsyncIterator[str]:
        is_probe = self.circuit.enter()  # raises at once while cooling down
        try:
            slot = self._slot()  # raises QueueFull at once when the queue is full
        except QueueFull:
            if is_probe:
                self.circuit.cancel_probe()
            raise
        error: BaseException | None = None
        # Neutral = says nothing about the backend's health (cancelled before any token, our own queue).
        neutral = True
        try:
            if not self._started:
                # Admitted, but before a concurrency slot: every request waiting for the start shares it.
                try:
                    await self._start_before(asyncio.get_running_loop().time() + self.spec.timeouts.first_token_s)
                except BaseException:
                    slot.abandon()
                    raise
            attempts = self._attempts(messages, params, outer, max_attempts=1 if is_probe else None)
            # aclosing: leaving the loop early (caller closed us) must close the attempt, and with it
            # the backend's generation, now rather than whenever the garbage collector gets to it.
            async with slot, contextlib.aclosing(attempts):
                async for piece in attempts:
                    neutral = False
                    yield piece
            neutral = False
        except QueueFull as exc:  # the wait for a slot timed out
            error = exc
            raise
        except InferenceError as exc:
            error, neutral = exc, False
            raise
        except Exception as exc:
            # A backend bug must not escape as a random type: callers handle InferenceError.
            error, neutral = BackendUnavailable(f"backend failed: {type(exc).__name__}", backend=self.name), False
            raise error from exc
        finally:
            self.circuit.record(error, probe=is_probe, neutral=neutral)

    def _slot(self) -> _Slot:
        limits = self.spec.limits
        if self._admitted >= limits.max_concurrency + limits.max_queue:
            raise QueueFull("busy, try again", backend=self.name)
        return _Slot(self)

    async def _attempts(
        self, messages: list[ChatMessage], params: GenerationParams, outer: TokenStream, *, max_attempts: int | None
    ) -> AsyncGenerator[str, None]:
        timeouts, retry = self.spec.timeouts, self.spec.retry
        max_attempts = max_attempts or retry.max_attempts
        loop = asyncio.get_running_loop()
        total_deadline = loop.time() + timeouts.total_s
        attempt = 0
        while True:
            attempt += 1
            yielded = False
            delay: float | None = None
            stream: TokenStream | None = None
            try:
                first_deadline = min(loop.time() + timeouts.first_token_s, total_deadline)
                stream = self.backend.stream(messages, params)
                while True:
                    deadline = total_deadline if yielded else first_deadline
                    try:
                        async with asyncio.timeout_at(deadline):
                            piece = await stream.__anext__()
                    except StopAsyncIteration:
                        outer.truncated = outer.truncated or stream.truncated  # cut at the output limit
                        outer.logprobs = stream.logprobs
                        outer.tool_calls = stream.tool_calls
                        return
                    except TimeoutError:
                        which = "total" if yielded or deadline == total_deadline else "first-token"
                        limit = timeouts.total_s if which == "total" else timeouts.first_token_s
                        raise BackendTimeout(f"{which} timeout ({limit:g}s)", backend=self.name) from None
                    yielded = True
                    yield piece
            except InferenceError as exc:
                if yielded or not exc.retryable or attempt >= max_attempts:
                    raise
                delay = self._backoff(exc, attempt)
                if delay is None or loop.time() + delay >= total_deadline or self.circuit.is_open:
                    raise  # Retry-After beyond the cap, no time left, or the circuit opened meanwhile
                log.info(
                    "%s: attempt %d failed (%s), retrying in %.2fs",
                    self.name,
                    attempt,
                    type(exc).__name__,
                    delay,
                )
            finally:
                if stream is not None:
                    await stream.aclose()  # cancels the generation on timeout, error or early exit
            await self._clock.sleep(delay or 0.0)

    async def _start_before(self, deadline: float) -> None:
        """Start the backend (DNS, session, weights) within a first-token budget of the request's own."""
        try:
            async with asyncio.timeout_at(deadline):
                await self.start()
        except TimeoutError:
            limit = self.spec.timeouts.first_token_s
            raise BackendTimeout(f"first-token timeout ({limit:g}s) while starting", backend=self.name) from None
        except InferenceError:
            raise
        except Exception as exc:  # a load error must reach the caller as an InferenceError, with its reason
            raise BackendUnavailable(f"could not start: {type(exc).__name__}: {exc}", backend=self.name) from exc

    def _backoff(self, exc: InferenceError, attempt: int) -> float | None:
        """Seconds before the next attempt; None when the server asks for longer than the cap."""
        retry = self.spec.retry
        retry_after = exc.retry_after if isinstance(exc, BackendOverloaded) else None
        if retry_after is not None and retry_after > 0:
            return retry_after if retry_after <= retry.retry_after_cap_s else None
        # Capped exponential backoff, shortened by up to 25% at random so clients don't retry in step.
        base = min(retry.backoff_cap_s, retry.backoff_base_s * 2 ** (attempt - 1))
        return base * (1 - 0.25 * self._rng.random())


#: Outcome of a start whose runner was cancelled: those waiting on it try a start of their own.
_GAVE_UP = object()


class _Slot:
    """Admission (counted at once, so the queue bound is exact) and a concurrency slot."""

    def __init__(self, owner: ResilientBackend) -> None:
        self._owner = owner
        owner._admitted += 1

    def abandon(self) -> None:
        """Give the admission back without ever entering (the request failed before it needed a slot)."""
        self._owner._admitted -= 1

    async def __aenter__(self) -> None:
        owner = self._owner
        try:
            # Waiting in the queue is bounded too: nobody waits longer than a first token would take.
            async with asyncio.timeout(owner.spec.timeouts.first_token_s):
                await owner._slots.acquire()
        except TimeoutError:
            owner._admitted -= 1
            raise QueueFull("busy, try again (queue wait timed out)", backend=owner.name) from None
        except BaseException:
            owner._admitted -= 1
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._owner._slots.release()
        self._owner._admitted -= 1
