"""The base of the in-process backends (ONNX Runtime, PyTorch): load once, generate in a thread.

Subclasses load a model and a transformers tokenizer (``_load``) and turn a prompt into generated
token ids (``_token_ids``); this class does the rest the same way for both: one generation at a time
per model (unless the subclass batches, see ``_exclusive``), prompt budget, chat template,
incremental decoding, stop strings, cancellation.
"""

from __future__ import annotations

import abc
import asyncio
import threading
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

from inference.backends.base import Backend
from inference.backends.chat_template import (
    GenerationStats,
    IncrementalDecoder,
    StopStrings,
    budget,
    encode_prompt,
)
from inference.backends.guidance import GuidanceTokenizers, guidance_processor
from inference.backends.threaded import iterate_in_thread
from inference.catalogue import OnnxModel, TransformersModel
from inference.errors import BackendUnavailable, InferenceError
from inference.types import ChatMessage, GenerationParams


class LocalBackend(Backend):
    """A causal LM loaded into this process; generation runs in a worker thread."""

    def __init__(self, name: str, spec: OnnxModel | TransformersModel, cache_dir: Path) -> None:
        super().__init__(name, spec.source)
        self.spec = spec
        self.cache_dir = cache_dir
        self._model: Any = None
        self._tokenizer: Any = None
        self._eos_ids: set[int] = set()
        # One generation at a time per model: a second would only split the same cores and memory (and
        # optimum's wrapper keeps per-call state on the model object).
        self._lock = threading.Lock()
        self.last_run: GenerationStats | None = None
        self._guidance = GuidanceTokenizers()

    @property
    def context_window(self) -> int:
        return self.spec.context_window

    async def start(self) -> None:
        if self._model is None:
            await asyncio.to_thread(self._load)

    async def aclose(self) -> None:
        self._model = None

    async def probe(self) -> bool:
        return self._model is not None

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            return super().count_tokens(text)
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _logits_processors(self, prompt: list[int], params: GenerationParams) -> list[Any]:
        """What transformers' ``generate`` needs to honour ``params.constraint`` (nothing without one)."""
        if params.constraint is None:
            return []
        n_vocab = int(self._model.config.vocab_size)  # the logits' width, which may exceed the tokenizer's
        processor = guidance_processor(
            self._guidance, self._tokenizer, params.constraint,
            n_vocab=n_vocab, eos_ids=sorted(self._eos_ids), prompt_len=len(prompt),
        )  # fmt: skip
        return [processor]

    def _exclusive(self, params: GenerationParams) -> bool:
        """Whether this request needs the model to itself (the per-model lock); batched backends say no."""
        return True

    @abc.abstractmethod
    def _load(self) -> None:
        """Set ``_model``, ``_tokenizer`` and ``_eos_ids``; raise BackendUnavailable when impossible."""

    @abc.abstractmethod
    def _token_ids(
        self, prompt: list[int], params: GenerationParams, max_new_tokens: int, stop: threading.Event
    ) -> Iterator[int]:
        """Generated token ids for ``prompt``; must return soon after ``stop`` is set."""

    async def _generate(self, messages: list[ChatMessage], params: GenerationParams) -> AsyncIterator[str]:
        if self._model is None:
            raise BackendUnavailable(f"{self.name} is not started", backend=self.name)
        tokenizer, eos_ids = self._tokenizer, self._eos_ids
        max_prompt, max_new = budget(self.context_window, params)
        stats = self.last_run = GenerationStats()

        exclusive = self._exclusive(params)

        def make(stop: threading.Event) -> Generator[str, None, None]:
            if exclusive and not acquire_or_stop(self._lock, stop):
                stats.finish_reason = "cancelled"
                return
            try:
                prompt = encode_prompt(tokenizer, messages, max_prompt_tokens=max_prompt, raw=params.raw)
                stats.prompt_tokens = len(prompt)
                ids = self._token_ids(prompt, params, max_new, stop)
                yield from stream_text(ids, tokenizer, params=params, eos_ids=eos_ids, stop=stop, stats=stats)
            except InferenceError:
                raise
            except Exception as exc:  # runtime errors (ORT, genai, CUDA out of memory) carry no useful type
                raise BackendUnavailable(f"{self.name}: generation failed: {exc}", backend=self.name) from exc
            finally:
                if exclusive:
                    self._lock.release()

        pieces = iterate_in_thread(make)
        try:
            async for piece in pieces:
                yield piece
        finally:
            await close_pieces(pieces)


def acquire_or_stop(lock: threading.Lock, stop: threading.Event) -> bool:
    """Wait for the per-model lock, giving up when the stream is closed while waiting."""
    while not lock.acquire(timeout=0.05):
        if stop.is_set():
            return False
    return True


def stream_text(
    token_ids: Iterator[int],
    tokenizer: Any,
    *,
    params: GenerationParams,
    eos_ids: set[int],
    stop: threading.Event,
    stats: GenerationStats,
) -> Iterator[str]:
    """Token ids -> text pieces: incremental decoding, EOS, stop strings and the finish reason."""
    decoder = IncrementalDecoder(tokenizer)
    stops = StopStrings(params.stop)
    stats.finish_reason = "error"
    try:
        for tok in token_ids:
            if tok in eos_ids:
                stats.finish_reason = "eos"
                break
            stats.generated_tokens += 1
            piece = stops.push(decoder.push(tok))
            if piece:
                yield piece
            if stops.stopped:
                stats.finish_reason = "stop_string"
                return
            if stop.is_set():
                stats.finish_reason = "cancelled"
                return
        else:
            stats.finish_reason = "cancelled" if stop.is_set() else "length"
        tail = stops.push(decoder.flush()) + stops.flush()
        if stops.stopped:
            stats.finish_reason = "stop_string"
        if tail:
            yield tail
    except GeneratorExit:
        stats.finish_reason = "cancelled"
        raise
    finally:
        close = getattr(token_ids, "close", None)
        if close is not None:
            close()  # stops the producer (joins generate's thread, frees the KV cache)


async def close_pieces(pieces: AsyncIterator[str]) -> None:
    """Close an async generator now: the worker's stop event is set at once, not when it is collected."""
    close = getattr(pieces, "aclose", None)
    if close is not None:
        await close()
