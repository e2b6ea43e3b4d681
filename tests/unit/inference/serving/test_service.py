"""The service: stand-ins for unreachable models, tier fallback with a visible note, cooldown skip."""

from __future__ import annotations

import asyncio
import logging

import pytest

from inference.backends.base import ProbeResult
from inference.catalogue import RoutingPolicy, Timeouts, load_routing
from inference.errors import BackendTimeout, BackendUnavailable, BadRequest, EndpointRejected, InferenceError, QueueFull
from inference.router import Router
from inference.serving.clock import FakeClock
from inference.serving.service import Switchboard
from inference.types import TASKS, ChatMessage, Classification, Request, TaskId, Tier
from tests.fakes.backends import ScriptedBackend, fake_catalogue


class Fixed:
    def __init__(self, task: TaskId = "chat") -> None:
        self.task = task

    def classify(self, request: Request) -> Classification:
        return Classification(task=self.task, confidence=0.9, difficulty=0.1, prompt_tokens=5)


def policy() -> RoutingPolicy:
    base = load_routing()
    return RoutingPolicy(tiers=base.tiers, models={Tier.SMALL: "small-fake", Tier.LARGE: "large-fake"})


def board_with(
    backends: dict[str, ScriptedBackend],
    *,
    task: TaskId = "chat",
    fallback: bool = False,
    clock: FakeClock | None = None,
) -> Switchboard:
    catalogue = fake_catalogue(fallback=fallback)
    router = Router(Fixed(task), policy(), catalogue)
    return Switchboard(
        router,
        cache_dir=None,  # type: ignore[arg-type]
        backend_factory=lambda name, spec: backends[name],
        clock=clock,
    )


USER = [ChatMessage("user", "hi")]


async def collect(answer) -> str:  # type: ignore[no-untyped-def]
    return "".join([p async for p in answer])


async def test_answer_reports_route_and_timings():
    board = board_with({"small-fake": ScriptedBackend("small-fake", "one two three")})
    decision = board.route(Request("hi"))
    answer = board.answer(decision, USER)
    assert await collect(answer) == "one two three"
    assert answer.tier is Tier.SMALL and answer.model == "small-fake" and answer.provider == "fake:small-fake"
    assert answer.timings.tokens == 3 and answer.timings.first_token_s is not None
    assert not answer.fell_back and answer.notes == []


async def test_unreachable_model_gets_its_stand_in_and_says_so():
    backends = {
        "large-fake": ScriptedBackend("large-fake", probe_ok=False),
        "local-fake": ScriptedBackend("local-fake", "local answer"),
        "small-fake": ScriptedBackend("small-fake"),
    }
    board = board_with(backends, task="code", fallback=True)
    notes = await board.start(probe=True)
    assert len(notes) == 1 and "large-fake" in notes[0] and "local-fake stands in" in notes[0]
    decision = board.route(Request("write a parser"))
    assert decision.tier is Tier.LARGE and decision.model == "local-fake"
    assert "large-fake unreachable" in decision.reason
    answer = board.answer(decision, USER)
    assert await collect(answer) == "local answer"
    assert any("stands in" in n for n in answer.notes)


async def test_failed_tier_falls_back_with_a_note():
    backends = {
        "small-fake": ScriptedBackend("small-fake", fail=BackendUnavailable("down")),
        "large-fake": ScriptedBackend("large-fake", "large answer"),
    }
    board = board_with(backends)
    answer = board.answer(board.route(Request("hi")), USER)
    assert await collect(answer) == "large answer"
    assert answer.fell_back and answer.tier is Tier.LARGE
    assert answer.notes == ["the small tier failed (unavailable); the large tier answered"]


async def test_bad_request_never_goes_to_the_bigger_model():
    large = ScriptedBackend("large-fake", "large answer")
    board = board_with({"small-fake": ScriptedBackend("small-fake", fail=BadRequest("too long")), "large-fake": large})
    with pytest.raises(BadRequest):
        await collect(board.answer(board.route(Request("hi")), USER))
    assert large.calls == []


async def test_half_an_answer_is_not_silently_replaced():
    large = ScriptedBackend("large-fake", "large answer")
    small = ScriptedBackend("small-fake", "a b c", fail=BackendUnavailable("reset"), fail_after=2)
    board = board_with({"small-fake": small, "large-fake": large})
    pieces: list[str] = []
    with pytest.raises(InferenceError):
        async for piece in board.answer(board.route(Request("hi")), USER):
            pieces.append(piece)
    assert pieces == ["a", " b"] and large.calls == []


async def test_cooling_down_tier_is_skipped_until_it_recovers():
    clock = FakeClock()
    small = ScriptedBackend("small-fake", fail=BackendUnavailable("down"))
    large = ScriptedBackend("large-fake", "large answer")
    board = board_with({"small-fake": small, "large-fake": large}, clock=clock)
    for _ in range(2):  # two failures in the window open the circuit (min_requests=2)
        await collect(board.answer(board.route(Request("hi")), USER))
    assert len(small.calls) == 2
    answer = board.answer(board.route(Request("hi")), USER)
    assert await collect(answer) == "large answer"
    assert len(small.calls) == 2, "a cooling-down backend is not even tried"
    assert "cooling down" in answer.notes[0]
    assert board.health("small-fake").startswith("cooling down")
    clock.advance(31)
    small.fail = None
    answer = board.answer(board.route(Request("hi")), USER)
    assert await collect(answer) == "hello from the fake model" and answer.tier is Tier.SMALL


async def test_aclose_closes_every_backend():
    backends = {n: ScriptedBackend(n) for n in ("small-fake", "large-fake")}
    board = board_with(backends)
    for name in backends:
        await board.backend(name)
    await board.aclose()
    assert all(b.closed for b in backends.values())


def test_every_task_routes_somewhere():
    board = board_with({})
    for task in TASKS:
        assert board.route(Request("x"), task=task).model in {"small-fake", "large-fake"}


@pytest.mark.parametrize(
    ("error", "said"),
    [(QueueFull("full"), "busy"), (EndpointRejected("redirect"), "unavailable"), (BackendTimeout("slow"), "timed out")],
)
async def test_fallback_note_names_the_failure_family(error, said):
    backends = {"small-fake": ScriptedBackend("small-fake", fail=error), "large-fake": ScriptedBackend("large-fake")}
    board = board_with(backends)
    answer = board.answer(board.route(Request("hi")), USER)
    await collect(answer)
    assert answer.notes == [f"the small tier failed ({said}); the large tier answered"]


# --- starting a backend: inside the request's time budget, shared, never serialised ---------------------


class SlowStart(ScriptedBackend):
    """A backend whose start (DNS lookup, session) waits on an event, then succeeds or fails."""

    def __init__(self, name: str, gate: asyncio.Event, *, fail: InferenceError | None = None) -> None:
        super().__init__(name, "started answer")
        self.start_gate = gate
        self.start_fail = fail
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        await self.start_gate.wait()
        if self.start_fail is not None:
            raise self.start_fail


@pytest.mark.parametrize("fail", [None, BackendUnavailable("DNS lookup failed")], ids=["ok", "failing"])
async def test_concurrent_first_requests_share_one_start(fail):
    gate = asyncio.Event()
    slow = SlowStart("small-fake", gate, fail=fail)
    board = board_with({"small-fake": slow, "large-fake": ScriptedBackend("large-fake")})
    k = 5
    answers = [board.answer(board.route(Request("hi")), USER, allow_fallback=False) for _ in range(k)]
    tasks = [asyncio.create_task(collect(a)) for a in answers]
    for _ in range(10):
        await asyncio.sleep(0)  # a few loop turns: every request arrives at the start, which waits on the gate
    assert slow.starts == 1
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    # One lookup for all k requests, whatever its outcome: the k-th request does not wait k lookups.
    assert slow.starts == 1
    if fail is None:
        assert results == ["started answer"] * k
    else:
        assert all(isinstance(r, BackendUnavailable) for r in results)


async def test_backend_is_built_without_starting_or_waiting():
    gate = asyncio.Event()  # never set: a start that never finishes
    slow = SlowStart("small-fake", gate)
    board = board_with({"small-fake": slow, "large-fake": ScriptedBackend("large-fake")})
    wrapped = board.backend_for("small-fake")
    assert await board.backend("small-fake", start=False) is wrapped
    assert slow.starts == 0 and not wrapped.started
    assert board.health("small-fake") == "not loaded yet"


async def test_start_that_never_finishes_hits_the_first_token_timeout():
    gate = asyncio.Event()  # never set
    catalogue = fake_catalogue()
    quick = catalogue.models["small-fake"].model_copy(
        update={"timeouts": Timeouts(connect_s=1, first_token_s=0.2, total_s=5)}
    )
    catalogue = catalogue.model_copy(update={"models": {**catalogue.models, "small-fake": quick}})
    slow = SlowStart("small-fake", gate)
    backends = {"small-fake": slow, "large-fake": ScriptedBackend("large-fake", "large answer")}
    board = Switchboard(
        Router(Fixed(), policy(), catalogue),
        cache_dir=None,
        backend_factory=lambda n, s: backends[n],  # type: ignore[arg-type]
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = board.answer(board.route(Request("hi")), USER)
    assert await collect(answer) == "large answer"  # the other tier answers, as for any timeout
    assert 0.2 <= loop.time() - started < 5
    assert answer.notes == ["the small tier failed (timed out); the large tier answered"]
    with pytest.raises(BackendTimeout, match="while starting"):
        await collect(board.answer(board.route(Request("hi")), USER, allow_fallback=False))
    await board.aclose()


# --- the start-up probe: healthy, credentials refused, unreachable -----------------------------------


class Probed(ScriptedBackend):
    def __init__(self, name: str, result: ProbeResult) -> None:
        super().__init__(name, f"{name} answer")
        self.result = result

    async def probe_status(self) -> ProbeResult:
        return self.result


@pytest.mark.parametrize(
    ("result", "note", "health"),
    [
        (ProbeResult.HEALTHY, None, "healthy"),
        (ProbeResult.UNREACHABLE, "is not reachable", "unreachable; local-fake stands in"),
        (ProbeResult.REFUSED, "refused our credentials", "credentials refused; local-fake stands in"),
    ],
)
async def test_start_up_probe_tells_the_cases_apart(result, note, health, caplog):
    backends = {
        "large-fake": Probed("large-fake", result),
        "local-fake": ScriptedBackend("local-fake", "local answer"),
        "small-fake": ScriptedBackend("small-fake"),
    }
    board = board_with(backends, task="code", fallback=True)
    caplog.set_level(logging.INFO, logger="inference.serving.service")
    notes = await board.start(probe=True)
    assert board.probes == {"large-fake": result}
    assert board.health("large-fake") == health
    if note is None:
        assert notes == [] and "large-fake (large tier) is healthy" in caplog.text
        assert board.route(Request("x")).model == "large-fake"
    else:
        assert len(notes) == 1 and note in notes[0] and "local-fake stands in" in notes[0]
        assert note in caplog.text
        decision = board.route(Request("x"))
        assert decision.model == "local-fake"
        why = "credentials refused" if result is ProbeResult.REFUSED else "unreachable"
        assert f"large-fake {why}" in decision.reason
        answer = board.answer(decision, USER)
        assert await collect(answer) == "local answer"
        assert answer.notes[0] == f"large-fake {why}; local-fake stands in"


async def test_health_words():
    clock = FakeClock()
    small = ScriptedBackend("small-fake", fail=BackendUnavailable("down"))
    board = board_with({"small-fake": small, "large-fake": ScriptedBackend("large-fake")}, clock=clock)
    assert board.health("small-fake") == "not loaded yet"
    await board.backend("large-fake")
    assert board.health("large-fake") == "healthy"
    for _ in range(2):
        await collect(board.answer(board.route(Request("hi")), USER))
    assert board.health("small-fake") == "cooling down (30s left)"
    assert board.health("nope") == "unknown"
