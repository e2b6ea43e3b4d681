"""Scripted in-process backends: answers, failures and stalls on demand, no model needed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from inference.backends.base import Backend
from inference.catalogue import Catalogue
from inference.errors import InferenceError
from inference.serving.clock import FakeClock
from inference.types import ChatMessage, GenerationParams

#: One step of a script: a piece of text to yield, an error to raise, or an event to wait for.
Step = str | BaseException | asyncio.Event


class ScriptedBackend(Backend):
    """The one scripted backend of the test suite: answers, failures, stalls and pacing on demand.

    Two ways to script it:

    - ``ScriptedBackend(name, reply, fail=..., fail_after=..., gate=...)``: every call streams ``reply`` word by word,
      optionally waiting for ``gate`` first and raising ``fail`` after ``fail_after`` words;
    - ``ScriptedBackend.playing(script, script, ...)``: each call plays the next script (a list of steps), the last
      one repeating.

    With ``clock`` (a :class:`~inference.serving.clock.FakeClock`) each streamed piece advances it by ``step``
    seconds: a model that takes time, without sleeping.
    """

    kind = "fake"

    def __init__(
        self,
        name: str = "scripted",
        reply: str = "hello from the fake model",
        *,
        scripts: list[list[Step]] | None = None,
        fail: InferenceError | None = None,
        fail_after: int = 0,
        probe_ok: bool = True,
        gate: asyncio.Event | None = None,
        context: int = 2048,
        clock: FakeClock | None = None,
        step: float = 0.0,
    ) -> None:
        super().__init__(name, name)
        self.reply = reply
        self.scripts = scripts
        self.fail = fail
        self.fail_after = fail_after
        self.probe_ok = probe_ok
        #: When set, generation waits for it before the first token (a slow model).
        self.gate = gate
        self.context = context
        self.clock = clock
        self.step = step
        #: The messages of every call, in order.
        self.calls: list[list[ChatMessage]] = []
        #: The generation settings of every call, in order (constraint, raw, temperature ...).
        self.params: list[GenerationParams] = []
        #: Generations that ended: finished, failed or cancelled (closed early by the caller).
        self.finished = 0
        self.started = asyncio.Event()
        self.closed = False

    @classmethod
    def playing(cls, *scripts: list[Step], name: str = "scripted") -> ScriptedBackend:
        return cls(name, scripts=list(scripts) or [["ok"]])

    @property
    def provider(self) -> str:
        return f"fake:{self.name}"

    @property
    def context_window(self) -> int:
        return self.context

    async def probe(self) -> bool:
        return self.probe_ok

    async def aclose(self) -> None:
        self.closed = True

    async def _generate(self, messages: list[ChatMessage], params: GenerationParams) -> AsyncIterator[str]:
        self.calls.append(messages)
        self.params.append(params)
        self.started.set()
        try:
            pieces = self._scripted() if self.scripts is not None else self._reply()
            async for piece in pieces:
                if self.clock is not None:
                    self.clock.advance(self.step)
                yield piece
        finally:
            self.finished += 1

    async def _scripted(self) -> AsyncIterator[str]:
        assert self.scripts is not None
        for step in self.scripts[min(len(self.calls), len(self.scripts)) - 1]:
            if isinstance(step, asyncio.Event):
                await step.wait()
            elif isinstance(step, BaseException):
                raise step
            else:
                yield step

    async def _reply(self) -> AsyncIterator[str]:
        if self.gate is not None:
            await self.gate.wait()
        words = self.reply.split(" ")
        for i, word in enumerate(words):
            if self.fail is not None and i == self.fail_after:
                raise self.fail
            yield word if i == 0 else " " + word
        if self.fail is not None and self.fail_after >= len(words):
            raise self.fail


def fake_catalogue(*, fallback: bool = False) -> Catalogue:
    """small + large OpenAI-kind specs (the kind only matters to the real factory) with no retries."""
    common = {
        "retry": {"max_attempts": 1, "backoff_base_s": 0},
        "timeouts": {"first_token_s": 5, "total_s": 10},
        "cooldown": {"min_requests": 2, "failure_ratio": 0.5, "duration_s": 30},
    }
    models: dict[str, dict[str, object]] = {
        "small-fake": {
            "kind": "openai",
            "base_url": "http://small.invalid/v1",
            "model": "s",
            "tier": "small",
            **common,
        },
        "large-fake": {
            "kind": "openai",
            "base_url": "http://large.invalid/v1",
            "model": "l",
            "tier": "large",
            **common,
        },
        "local-fake": {
            "kind": "openai",
            "base_url": "http://local.invalid/v1",
            "model": "x",
            "tier": "large",
            **common,
        },
    }
    if fallback:
        models["large-fake"]["fallback"] = "local-fake"
    return Catalogue.model_validate({"models": models})
