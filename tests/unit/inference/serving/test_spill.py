"""Busy is not capacity: a full tier queues (bounded) and spills only to a remote tier, never to a second local
model on the same device; other failures still fall back as before."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from inference.catalogue import Catalogue, RoutingPolicy, load_routing
from inference.errors import BackendUnavailable, QueueFull
from inference.router import Router
from inference.serving.service import Answer, Switchboard
from inference.types import ChatMessage, Classification, Request, TaskId, Tier
from tests.fakes.backends import ScriptedBackend

USER = [ChatMessage("user", "hi")]
_COMMON = {"retry": {"max_attempts": 1, "backoff_base_s": 0}, "timeouts": {"first_token_s": 5, "total_s": 10}}


class Fixed:
    def __init__(self, task: TaskId = "chat") -> None:
        self.task = task

    def classify(self, request: Request) -> Classification:
        return Classification(task=self.task, confidence=0.9, difficulty=0.1, prompt_tokens=5)


def _catalogue() -> Catalogue:
    """A local small tier (one at a time, one waiting), a local large tier and a remote large tier."""
    return Catalogue.model_validate(
        {
            "models": {
                "small-local": {
                    "kind": "onnx", "source": "packaged:smollm2", "tier": "small",
                    "limits": {"max_concurrency": 1, "max_queue": 1}, **_COMMON,
                },
                "large-local": {
                    "kind": "transformers", "source": "packaged:smollm2", "tier": "large",
                    "limits": {"max_concurrency": 1, "max_queue": 0}, **_COMMON,
                },
                "large-remote": {
                    "kind": "openai", "base_url": "http://large.invalid/v1", "model": "l", "tier": "large", **_COMMON,
                },
            }
        }
    )  # fmt: skip


def _board(backends: dict[str, ScriptedBackend], large: str) -> Switchboard:
    base = load_routing()
    policy = RoutingPolicy(tiers=base.tiers, models={Tier.SMALL: "small-local", Tier.LARGE: large})
    return Switchboard(
        Router(Fixed(), policy, _catalogue()),
        cache_dir=None,  # type: ignore[arg-type]
        backend_factory=lambda name, spec: backends[name],
    )


async def _text(answer: Answer) -> str:
    return "".join([piece async for piece in answer])


async def _fill_small_tier(board: Switchboard, small: ScriptedBackend) -> list[asyncio.Task[str]]:
    """One request running on the small tier and one waiting in its queue."""
    held = [asyncio.create_task(_text(board.answer(board.route(Request("hi")), USER))) for _ in range(2)]
    await small.started.wait()
    assert board.backend_for("small-local").in_flight == 2, "the second one waits in the queue"
    return held


async def test_a_full_local_tier_says_busy_instead_of_starting_a_second_local_model() -> None:
    gate = asyncio.Event()
    small = ScriptedBackend("small-local", "small answer", gate=gate)
    local_large = ScriptedBackend("large-local", "large answer")
    board = _board({"small-local": small, "large-local": local_large}, large="large-local")
    held = await _fill_small_tier(board, small)

    with pytest.raises(QueueFull) as caught:
        await _text(board.answer(board.route(Request("hi")), USER))
    assert caught.value.user_text == "The model is busy right now; try again in a minute."
    assert local_large.calls == [], "no second local model under load"

    gate.set()
    assert await asyncio.gather(*held) == ["small answer", "small answer"], "the queued request is served"
    assert len(small.calls) == 2


async def test_a_full_tier_spills_to_a_remote_large_tier() -> None:
    gate = asyncio.Event()
    small = ScriptedBackend("small-local", "small answer", gate=gate)
    remote = ScriptedBackend("large-remote", "remote answer")
    board = _board({"small-local": small, "large-remote": remote}, large="large-remote")
    held = await _fill_small_tier(board, small)

    answer = board.answer(board.route(Request("hi")), USER)
    assert await _text(answer) == "remote answer"
    assert answer.tier is Tier.LARGE and answer.model == "large-remote"
    assert answer.notes == ["the small tier failed (busy); the large tier answered"]

    gate.set()
    assert await asyncio.gather(*held) == ["small answer", "small answer"]


async def test_a_busy_local_large_tier_does_not_fall_back_to_the_local_small_one() -> None:
    gate = asyncio.Event()
    small = ScriptedBackend("small-local", "small answer")
    local_large = ScriptedBackend("large-local", "large answer", gate=gate)
    board = _board({"small-local": small, "large-local": local_large}, large="large-local")
    large_route = replace(board.route(Request("hi")), tier=Tier.LARGE, model="large-local")
    running = asyncio.create_task(_text(board.answer(large_route, USER)))
    await local_large.started.wait()
    with pytest.raises(QueueFull):
        await _text(board.answer(large_route, USER))
    assert small.calls == []
    gate.set()
    assert await running == "large answer"


async def test_a_crashed_local_tier_still_falls_back_to_the_other_local_model() -> None:
    small = ScriptedBackend("small-local", fail=BackendUnavailable("model crashed"))
    local_large = ScriptedBackend("large-local", "large answer")
    board = _board({"small-local": small, "large-local": local_large}, large="large-local")
    answer = board.answer(board.route(Request("hi")), USER)
    assert await _text(answer) == "large answer"
    assert answer.notes == ["the small tier failed (unavailable); the large tier answered"]
