"""The one async interface every model backend implements."""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator, Callable, Sequence
from enum import StrEnum
from typing import ClassVar

from inference.types import ChatMessage, GenerationParams, Timings, TokenLogprob, ToolCall

#: Characters one token may stand for, on average over an answer, before the client calls the output too
#: long. Generous (English averages about 4, code with long whitespace runs rarely 8): it only has to stop
#: a server that ignores ``max_tokens``, never a well-behaved one.
CHARS_PER_TOKEN = 16


class ProbeResult(StrEnum):
    """What a start-up health check found; the value is the words ``/models list`` shows."""

    HEALTHY = "healthy"
    REFUSED = "credentials refused"
    UNREACHABLE = "unreachable"

    def __bool__(self) -> bool:
        return self is ProbeResult.HEALTHY


class OutputLimit:
    """The client's own cap on one answer, whatever the server does with ``max_tokens``.

    At most ``max_tokens`` pieces (a well-behaved server sends at most one piece per token) and at most
    ``max_tokens * CHARS_PER_TOKEN`` characters, whichever comes first; the piece that crosses the
    character cap is cut. ``reached`` tells the caller the answer ended at the cap, possibly truncated.
    """

    def __init__(self, max_tokens: int) -> None:
        self.max_pieces = max(1, max_tokens)
        self.max_chars = self.max_pieces * CHARS_PER_TOKEN
        self.pieces = 0
        self.chars = 0
        self.reached = False

    def admit(self, piece: str) -> str:
        """The part of ``piece`` within the cap; sets :attr:`reached` once the cap is met."""
        piece = piece[: self.max_chars - self.chars]
        self.pieces += 1
        self.chars += len(piece)
        if self.pieces >= self.max_pieces or self.chars >= self.max_chars:
            self.reached = True
        return piece


class TokenStream:
    """An async iterator of text pieces that records its own timings.

    Closing it (``await stream.aclose()``, or leaving an ``async for`` early) cancels the generation.
    With an :class:`OutputLimit` the stream ends (and closes the generation) once the limit is met;
    :attr:`truncated` then says so.
    """

    def __init__(
        self, pieces: AsyncIterator[str], *, model: str, provider: str, limit: OutputLimit | None = None
    ) -> None:
        self._pieces = pieces
        self.model = model
        self.provider = provider
        self.timings = Timings()
        self._limit = limit
        #: The answer ended at an output limit (this stream's, or one a wrapped stream reported).
        self.truncated = False
        #: Per-token log-probabilities, when ``params.logprobs`` asked and the backend exposes them.
        self.logprobs: list[TokenLogprob] = []
        #: Tools the model asked to run (``params.tools``), complete once the stream has ended.
        self.tool_calls: list[ToolCall] = []
        self._started = time.perf_counter()

    @classmethod
    def wrapping(cls, make: Callable[[TokenStream], AsyncIterator[str]], *, model: str, provider: str) -> TokenStream:
        """A stream whose pieces come from ``make(stream)``: a wrapper can report on the stream it feeds."""

        async def nothing() -> AsyncIterator[str]:
            return
            yield  # pragma: no cover - makes this an async generator

        stream = cls(nothing(), model=model, provider=provider)
        stream._pieces = make(stream)
        return stream

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> str:
        limit = self._limit
        try:
            if limit is not None and limit.reached:
                self.truncated = True
                await self.aclose()  # stop the generation now, not when the server decides to
                raise StopAsyncIteration
            piece = await self._pieces.__anext__()
        except StopAsyncIteration:
            self.timings.total_s = time.perf_counter() - self._started
            raise
        if limit is not None:
            piece = limit.admit(piece)
        now = time.perf_counter() - self._started
        if self.timings.first_token_s is None:
            self.timings.first_token_s = now
        self.timings.tokens += 1
        self.timings.total_s = now
        return piece

    async def aclose(self) -> None:
        aclose = getattr(self._pieces, "aclose", None)
        if aclose is not None:
            await aclose()

    async def text(self) -> str:
        """Drain the stream and return the whole answer."""
        return "".join([piece async for piece in self])


class Backend(abc.ABC):
    """A model that turns chat messages into a stream of text.

    Implementations: one file each under ``inference/backends/``, registered by ``kind`` in
    :data:`inference.backends.REGISTRY`.
    """

    kind: ClassVar[str]

    def __init__(self, name: str, model: str) -> None:
        self.name = name
        self.model = model

    @property
    @abc.abstractmethod
    def provider(self) -> str:
        """Where the tokens come from, e.g. ``onnxruntime:CPUExecutionProvider`` or an endpoint URL."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load weights / open sessions. Called once before the first request."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources. Safe to call twice."""

    async def probe(self) -> bool:
        """Cheap health check; default: the backend started."""
        return True

    async def probe_status(self) -> ProbeResult:
        """The health check told apart: healthy, credentials refused, unreachable. Default: from :meth:`probe`."""
        return ProbeResult.HEALTHY if await self.probe() else ProbeResult.UNREACHABLE

    def count_tokens(self, text: str) -> int:
        """Token count used to trim conversations; a rough default of 4 characters a token."""
        return max(1, len(text) // 4)

    @property
    def context_window(self) -> int:
        return 2048

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> TokenStream:
        return TokenStream(self._generate(list(messages), params), model=self.model, provider=self.provider)

    @abc.abstractmethod
    def _generate(self, messages: list[ChatMessage], params: GenerationParams) -> AsyncIterator[str]:
        """Yield text pieces; raise :class:`inference.errors.InferenceError` subclasses on failure."""
