"""One error hierarchy for every backend.

Retry, fallback and cooldown decisions read the class of an error, never its message.
"""

from __future__ import annotations


class InferenceError(Exception):
    """Base class of every error a backend raises."""

    #: Worth trying the same backend again after a pause.
    retryable: bool = False
    #: Worth sending the request to the other tier.
    fallback: bool = True

    def __init__(self, message: str, *, backend: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        self.status = status


class BackendTimeout(InferenceError):
    """Connect, first-token or total time limit exceeded."""

    retryable = True


class BackendOverloaded(InferenceError):
    """The backend (or our own queue in front of it) refuses more work right now."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class QueueFull(BackendOverloaded):
    """Our own bounded queue is full: answer 'busy' at once, never retry in place."""

    retryable = False


class BackendUnavailable(InferenceError):
    """Connection refused/reset, DNS failure, 5xx, broken stream, model not loaded."""

    retryable = True


class ResponseTooLarge(BackendUnavailable):
    """The endpoint sent more than a bound allows (an endless line, event or body): it is broken or hostile.

    Not retried in place (the same endpoint would do it again); the other tier may still answer.
    """

    retryable = False


class BadRequest(InferenceError):
    """The request itself is wrong (4xx other than 408/409/429): never retried, never escalated."""

    fallback = False


class AuthenticationError(BadRequest):
    """401/403: the key is wrong. The backend cools down at once."""

    fallback = True


class ModelNotFound(BadRequest):
    """404 / unknown model id."""

    fallback = True


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
