"""The cooldown circuit of one backend: closed, open (cooling down) or half-open (one probe request).

A backend failing most requests in a sliding window, or once with an authentication error, opens the
circuit for ``cooldown.duration_s``; then one request goes through as a probe, and its outcome closes or
reopens it. Bad requests (the caller's fault) and our own queue refusals never count.
"""

from __future__ import annotations

import logging
from collections import deque

from inference.catalogue import Cooldown
from inference.errors import AuthenticationError, BackendUnavailable, BadRequest, QueueFull
from inference.serving.clock import Clock

log = logging.getLogger(__name__)


def counts_as_failure(exc: BaseException) -> bool:
    """Whether an outcome says the backend is unhealthy (bad requests are the caller's fault)."""
    if isinstance(exc, QueueFull):
        return False  # our own queue, not the backend
    if isinstance(exc, AuthenticationError):
        return True
    if isinstance(exc, BadRequest):
        return False
    return True


class Circuit:
    def __init__(self, name: str, policy: Cooldown, clock: Clock) -> None:
        self.name = name
        self.policy = policy
        self._clock = clock
        #: (time, failed) per finished request, oldest first.
        self._outcomes: deque[tuple[float, bool]] = deque()
        self._open_until: float | None = None
        self._probe_in_flight = False

    @property
    def is_open(self) -> bool:
        """Tripped: cooling down or half-open (retries stop once it trips)."""
        return self._open_until is not None

    @property
    def available(self) -> bool:
        """False while cooling down, and while the half-open probe request is in flight."""
        if self._open_until is None:
            return True
        return self._clock.monotonic() >= self._open_until and not self._probe_in_flight

    @property
    def remaining(self) -> float:
        if self._open_until is None:
            return 0.0
        return max(0.0, self._open_until - self._clock.monotonic())

    def enter(self) -> bool:
        """Raise while cooling down; returns True when this request is the half-open probe."""
        if self._open_until is None:
            return False
        remaining = self._open_until - self._clock.monotonic()
        if remaining > 0:
            raise BackendUnavailable(f"cooling down ({remaining:.0f}s left)", backend=self.name)
        if self._probe_in_flight:
            raise BackendUnavailable("cooling down (probe in flight)", backend=self.name)
        self._probe_in_flight = True
        return True

    def cancel_probe(self) -> None:
        """The probe request never ran (refused by our own queue): the next request probes."""
        self._probe_in_flight = False

    def healthy_probe(self) -> None:
        """An out-of-band probe (the start-up or admin check) found the backend healthy."""
        if self._open_until is not None and not self._probe_in_flight:
            self._close()

    def record(self, exc: BaseException | None, *, probe: bool, neutral: bool) -> None:
        now = self._clock.monotonic()
        failed = exc is not None and counts_as_failure(exc)
        if probe:
            self._probe_in_flight = False
            if neutral:
                return  # stays half-open: the next request probes
            if failed:
                self._open(now, exc)
            else:
                self._close()
            return
        if neutral or (exc is not None and not failed) or self._open_until is not None:
            return  # bad requests are the caller's fault; late outcomes of a tripped window don't count
        self._outcomes.append((now, failed))
        while self._outcomes and self._outcomes[0][0] <= now - self.policy.window_s:
            self._outcomes.popleft()
        if isinstance(exc, AuthenticationError):
            self._open(now, exc)
            return
        failures = sum(1 for _, f in self._outcomes if f)
        total = len(self._outcomes)
        if total >= self.policy.min_requests and failures / total >= self.policy.failure_ratio:
            self._open(now, exc)

    def _open(self, now: float, exc: BaseException | None) -> None:
        self._open_until = now + self.policy.duration_s
        self._outcomes.clear()
        log.warning("%s cooling down for %.0fs after %s", self.name, self.policy.duration_s, type(exc).__name__)

    def _close(self) -> None:
        self._open_until = None
        self._outcomes.clear()
        log.info("%s is available again", self.name)
