"""Scripted in-process backends: answers, failures and stalls on demand, no model needed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from inference.backends.base import Backend
from inference.catalogue import Catalogue
from inference.errors import InferenceError
from inference.types import ChatMessage, GenerationParams


class ScriptedBackend(Backend):
    kind = "fake"

    def __init__(
        self,
        name: str,
        reply: str = "hello from the fake model",
        *,
        fail: InferenceError | None = None,
        fail_after: int = 0,
        probe_ok: bool = True,
        gate: asyncio.Event | None = None,
        context: int = 2048,
    ) -> None:
        super().__init__(name, name)
        self.reply = reply
        self.fail = fail
        self.fail_after = fail_after
        self.probe_ok = probe_ok
        #: When set, generation waits for it before the first token (a slow model).
        self.gate = gate
        self.context = context
        self.calls: list[list[ChatMessage]] = []
        self.started = asyncio.Event()
        self.closed = False

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
        self.started.set()
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
