"""One error hierarchy for every backend, with what to tell people about each.

Retry, fallback and cooldown decisions read the class of an error, never its message. Each class also
carries its words: ``short`` for a route note ("the small tier failed (timed out)") and ``user_text`` for
the reply a user sees. HTTP statuses and ``Retry-After`` headers become typed errors here too
(:func:`error_from_status`, :func:`parse_retry_after`), like text-generation-inference's client.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping


class InferenceError(Exception):
    """Base class of every error a backend raises."""

    #: Worth trying the same backend again after a pause.
    retryable: bool = False
    #: Worth sending the request to the other tier.
    fallback: bool = True
    #: A few words for a route note: "the small tier failed (timed out)".
    short: str = "error"
    #: What the user is told (the details go to the log with a request id).
    user_text: str = "The model is unavailable right now."

    def __init__(self, message: str, *, backend: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        self.status = status


class BackendTimeout(InferenceError):
    """Connect, first-token or total time limit exceeded."""

    retryable = True
    short = "timed out"
    user_text = "The model took too long to answer."


class BackendOverloaded(InferenceError):
    """The backend (or our own queue in front of it) refuses more work right now."""

    retryable = True
    short = "overloaded"
    user_text = "The model is overloaded right now; try again in a minute."

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class QueueFull(BackendOverloaded):
    """Our own bounded queue is full: answer 'busy' at once, never retry in place."""

    retryable = False
    short = "busy"
    user_text = "The model is busy right now; try again in a minute."


class BackendUnavailable(InferenceError):
    """Connection refused/reset, DNS failure, 5xx, broken stream, model not loaded."""

    retryable = True
    short = "unavailable"


class ResponseTooLarge(BackendUnavailable):
    """The endpoint sent more than a bound allows (an endless line, event or body): it is broken or hostile.

    Not retried in place (the same endpoint would do it again); the other tier may still answer.
    """

    retryable = False


class EndpointRejected(BackendUnavailable):
    """The endpoint cannot be used as configured (unsafe address, redirect): retrying will not help."""

    retryable = False


class BadRequest(InferenceError):
    """The request itself is wrong (4xx other than 408/409/429): never retried, never escalated."""

    fallback = False
    user_text = "The model refused this request."


class AuthenticationError(BadRequest):
    """401/403: the key is wrong. The backend cools down at once."""

    fallback = True
    short = "refused our key"


class ModelNotFound(BadRequest):
    """404 / unknown model id."""

    fallback = True
    short = "model not found"


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message names the field."""


def error_from_status(
    status: int, body: str, *, backend: str | None = None, retry_after: float | None = None
) -> InferenceError:
    """Turn an HTTP status and body into the matching typed error (TGI-client style)."""
    text = f"HTTP {status}: {body[:300]}".strip()
    if status == 429:
        return BackendOverloaded(text, backend=backend, status=status, retry_after=retry_after)
    if status in (408,):
        return BackendTimeout(text, backend=backend, status=status)
    if status == 409 or status >= 500:
        err = BackendUnavailable(text, backend=backend, status=status)
        if status == 503 and retry_after is not None:
            return BackendOverloaded(text, backend=backend, status=status, retry_after=retry_after)
        return err
    if status in (401, 403):
        return AuthenticationError(text, backend=backend, status=status)
    if status == 404:
        return ModelNotFound(text, backend=backend, status=status)
    return BadRequest(text, backend=backend, status=status)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds, an HTTP date or "inf".

    ``None`` for a missing, empty or unparsable value (the caller then uses its own backoff); a date in
    the past gives 0.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isnan(seconds) or seconds < 0:
            return None
        return seconds  # may be inf: the retry layer compares it with its cap and gives up
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive result came from a malformed zone
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


def retry_after_from(headers: Mapping[str, str]) -> float | None:
    """Seconds a response asks us to wait (``retry-after-ms`` first, then ``Retry-After``); None if none."""
    # retry-after-ms (OpenAI, Azure) is more precise when present.
    ms = parse_retry_after(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    return parse_retry_after(headers.get("Retry-After"))
