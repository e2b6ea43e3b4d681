"""The one async interface every model backend implements."""

from __future__ import annotations

import abc
import time
from collections.abc import AsyncIterator, Sequence
from typing import ClassVar

from inference.types import ChatMessage, GenerationParams, Timings


class TokenStream:
    """An async iterator of text pieces that records its own timings.

    Closing it (``await stream.aclose()``, or leaving an ``async for`` early) cancels the generation.
    """

    def __init__(self, pieces: AsyncIterator[str], *, model: str, provider: str) -> None:
        self._pieces = pieces
        self.model = model
        self.provider = provider
        self.timings = Timings()
        self._started = time.perf_counter()

    def __aiter__(self) -> TokenStream:
        return self

    async def __anext__(self) -> str:
        try:
            piece = await self._pieces.__anext__()
        except StopAsyncIteration:
            self.timings.total_s = time.perf_counter() - self._started
            raise
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
