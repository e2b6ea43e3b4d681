"""Batched generation on the genai small tier, on a tiny llama exported in the test (no downloads, seconds).

The tiny model never emits EOS (see tests/fakes/tiny_models.py), so every answer runs to its length:
cancellation and batch sizes are observable. EOS handling is covered on the real SmolLM2 in
tests/integration/test_batching_real.py.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from inference.backends.batching import BatchJob, EngineBatcher
from inference.backends.onnx import OnnxBackend, genai_token_ids, search_options
from inference.build.export import prepare_onnx
from inference.catalogue import Limits, OnnxModel
from inference.errors import BackendUnavailable
from inference.types import ChatMessage, GenerationParams
from tests.fakes.tiny_models import build_tiny_causal_lm

GREEDY = GenerationParams(max_new_tokens=16, temperature=0.0)
QUESTIONS = [
    "Name three fruits.",
    "What is the capital of France?",
    "Write a short poem about the sea and the sky.",
    "Hello there!",
    "Convert 10 kilometres to miles.",
    "def add(a, b):",
    "Summary, please.",
]


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    tiny = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "llama")
    return OnnxModel(
        source=str(tiny), tier="small", runtime="genai", precision="fp32", limits=Limits(max_concurrency=4)
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, spec: OnnxModel) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    prepare_onnx(spec, cache, lambda _: None)
    return cache


async def _started(spec: OnnxModel, cache: Path) -> OnnxBackend:
    backend = OnnxBackend("tiny-genai", spec, cache)
    await backend.start()
    return backend


def _prompt(backend: OnnxBackend, question: str) -> list[int]:
    ids = backend._tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    return [int(i) for i in ids]


def _alone(backend: OnnxBackend, prompt: list[int], n: int) -> list[int]:
    """The unbatched reference: one Generator for this prompt alone."""
    return list(genai_token_ids(backend._model, prompt, params=GREEDY, max_new_tokens=n, stop=threading.Event()))


def _job(prompt: list[int], n: int) -> BatchJob:
    return BatchJob(prompt, n, search_options(len(prompt), GREEDY, n), eos_id=2)


def _batcher(backend: OnnxBackend, max_batch: int, engines: list[Any] | None = None) -> EngineBatcher:
    """A batcher on the backend's model, counting the engines (lanes) it makes."""
    import onnxruntime_genai as og

    real = backend.batcher
    assert real is not None

    def new_engine() -> Any:
        engine = og.Engine(backend._model)
        if engines is not None:
            engines.append(engine)
        return engine

    return EngineBatcher("test", new_engine, real._new_request, max_batch=max_batch)


async def test_batched_greedy_answers_equal_the_unbatched_ones(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    prompts = [_prompt(backend, q) for q in QUESTIONS]
    lengths = [5, 16, 9, 16, 3, 12, 16]  # each sequence ends on its own
    engines: list[Any] = []
    batcher = _batcher(backend, max_batch=8, engines=engines)
    jobs = [_job(p, n) for p, n in zip(prompts, lengths, strict=True)]
    batcher.submit_many(jobs)
    got = [list(job.tokens(threading.Event())) for job in jobs]
    assert batcher.peak_active == len(jobs), "all seven were decoded together"
    assert len(engines) == 2, "two lanes of up to four"
    assert got == [_alone(backend, p, n) for p, n in zip(prompts, lengths, strict=True)]
    await backend.aclose()


async def test_more_requests_than_the_batch_wait_and_are_all_served(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    batcher = _batcher(backend, max_batch=3)
    prompts = [_prompt(backend, q) for q in QUESTIONS]
    jobs = [_job(p, 6) for p in prompts]
    batcher.submit_many(jobs)
    got = [list(job.tokens(threading.Event())) for job in jobs]
    assert batcher.peak_active == 3
    assert got == [_alone(backend, p, 6) for p in prompts]
    await backend.aclose()


async def test_concurrent_streams_through_the_backend_are_batched_and_identical(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    messages = [[ChatMessage("user", q)] for q in QUESTIONS[:4]]
    alone = [await backend.stream(m, GREEDY).text() for m in messages]
    together = await asyncio.gather(*(backend.stream(m, GREEDY).text() for m in messages))
    assert list(together) == alone
    assert backend.batcher is not None and backend.batcher.peak_active > 1
    assert backend.last_run is not None and backend.last_run.finish_reason == "length"
    await backend.aclose()


async def test_a_closed_stream_leaves_the_batch_and_its_lane_stops(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    batcher = backend.batcher
    assert batcher is not None
    long = GenerationParams(max_new_tokens=1500, temperature=0.0)
    stream = backend.stream([ChatMessage("user", "Hello there!")], long)
    assert await stream.__anext__()
    await stream.aclose()
    for thread in threading.enumerate():  # the generation thread, then the batcher's: both end by themselves
        if thread.name.startswith(("switchboard-", "genai-batcher-")):
            thread.join(timeout=30)
            assert not thread.is_alive()
    assert batcher.active == 0, "a lane nobody reads from is dropped, not run to its end"
    run = backend.last_run
    assert run is not None and run.finish_reason == "cancelled" and run.generated_tokens < 1500
    assert await backend.stream([ChatMessage("user", "Hi")], GenerationParams(max_new_tokens=3)).text()
    await backend.aclose()


async def test_guided_requests_run_beside_the_batch(spec: OnnxModel, cache: Path) -> None:
    from inference.types import Constraint

    backend = await _started(spec, cache)
    guided = GenerationParams(max_new_tokens=8, temperature=0.0, constraint=Constraint(kind="regex", pattern="[ab]{3}"))
    free = backend.stream([ChatMessage("user", "Name three fruits.")], GREEDY).text()
    text, other = await asyncio.gather(backend.stream([ChatMessage("user", "Pick.")], guided).text(), free)
    assert len(text) == 3 and set(text) <= {"a", "b"}
    assert other
    await backend.aclose()


class _BrokenEngine:
    """An engine whose model run fails (ORT errors surface from ``step``)."""

    def add_request(self, request: Any) -> None:
        pass

    def has_pending_requests(self) -> bool:
        return True

    def step(self) -> Any:
        raise RuntimeError("ORT: out of memory")

    def remove_request(self, request: Any) -> None:
        pass


class _Request:
    def set_opaque_data(self, data: object) -> None:
        pass

    def is_done(self) -> bool:
        return False


def test_a_failed_batch_fails_its_requests_with_a_clear_error_and_the_batcher_goes_on() -> None:
    engines: list[Any] = [_BrokenEngine()]
    batcher = EngineBatcher("broken", lambda: engines.pop(0), lambda job: _Request(), max_batch=4)
    jobs = [BatchJob([1, 2], 4, {}, eos_id=2) for _ in range(2)]
    batcher.submit_many(jobs)
    for job in jobs:
        with pytest.raises(BackendUnavailable, match="generation failed: ORT: out of memory"):
            list(job.tokens(threading.Event()))
    assert batcher.active == 0
    assert batcher.broken == "ORT: out of memory", "the backend goes back to one request at a time"


async def test_after_a_failed_batch_the_backend_answers_one_request_at_a_time(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    assert backend.batcher is not None
    expected = await backend.stream([ChatMessage("user", "Hello there!")], GREEDY).text()
    backend.batcher.broken = "the Engine is not supported on this provider"
    assert backend._exclusive(GREEDY), "the per-model lock again"
    assert await backend.stream([ChatMessage("user", "Hello there!")], GREEDY).text() == expected
    await backend.aclose()


def test_a_closed_batcher_refuses_new_requests_clearly() -> None:
    batcher = EngineBatcher("closing", _BrokenEngine, lambda job: _Request(), max_batch=1)
    batcher.close()
    with pytest.raises(BackendUnavailable, match="closing is closed"):
        batcher.submit(BatchJob([1], 1, {}, eos_id=None))
    with pytest.raises(ValueError, match="at least 1"):
        EngineBatcher("bad", _BrokenEngine, lambda job: _Request(), max_batch=0)


# -- the scheduling itself, on a scripted engine that behaves like genai 0.13.2's static batching -------------

EOS = 99


class _ScriptedRequest:
    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.unseen: list[int] = []
        self.done = False
        self.data: object = None

    def set_opaque_data(self, data: object) -> None:
        self.data = data

    def get_opaque_data(self) -> object:
        return self.data

    def has_unseen_tokens(self) -> bool:
        return bool(self.unseen)

    def get_unseen_token(self) -> int:
        return self.unseen.pop(0)

    def is_done(self) -> bool:
        return self.done


class _ScriptedEngine:
    """Round-robin over its requests, one token per step. Like genai, EOS is not handed out: the request is just
    done, and a step that finds no other request ready raises."""

    def __init__(self) -> None:
        self.requests: list[_ScriptedRequest] = []
        self.turn = 0

    def add_request(self, request: _ScriptedRequest) -> None:
        self.requests.append(request)

    def has_pending_requests(self) -> bool:
        return any(not r.done for r in self.requests)

    def remove_request(self, request: _ScriptedRequest) -> None:
        self.requests.remove(request)

    def step(self) -> _ScriptedRequest:
        for _ in range(len(self.requests)):
            request = self.requests[self.turn % len(self.requests)]
            self.turn += 1
            if request.done:
                continue
            token = request.script.pop(0)
            if token == EOS or not request.script:
                request.done = True
            if token != EOS:
                request.unseen.append(token)
                return request
        raise RuntimeError("Expected at least one request to be ready, but none were found.")


def _scripted(max_batch: int = 8, gather_s: float = 0.0) -> tuple[EngineBatcher, list[_ScriptedEngine]]:
    engines: list[_ScriptedEngine] = []

    def new_engine() -> _ScriptedEngine:
        engines.append(_ScriptedEngine())
        return engines[-1]

    def new_request(job: BatchJob) -> _ScriptedRequest:
        return _ScriptedRequest(job.options["script"])

    batcher = EngineBatcher(
        "scripted", new_engine, new_request, max_batch=max_batch, gather_s=gather_s, gather_busy_s=gather_s
    )
    return batcher, engines


def _scripted_job(script: list[int], max_new: int = 100) -> BatchJob:
    return BatchJob([1], max_new, {"script": script}, eos_id=EOS)


def test_answers_that_reach_eos_end_with_it_even_when_the_engine_raises_for_the_last_one() -> None:
    batcher, _ = _scripted()
    short, long, alone = _scripted_job([5, 6, EOS]), _scripted_job([7, 8, 9, 10], max_new=4), _scripted_job([3, EOS])
    batcher.submit_many([short, long])
    assert list(short.tokens(threading.Event())) == [5, 6, EOS]
    assert list(long.tokens(threading.Event())) == [7, 8, 9, 10], "its length, not EOS: no EOS appended"
    batcher.submit(alone)  # alone in its batch: genai raises on the step where it reaches EOS
    assert list(alone.tokens(threading.Event())) == [3, EOS]


def test_a_request_arriving_during_a_batch_starts_at_once_in_a_new_lane() -> None:
    batcher, engines = _scripted()
    endless = _scripted_job(list(range(10**6)), max_new=10**6)
    batcher.submit(endless)
    stop = threading.Event()
    tokens = endless.tokens(stop)
    assert next(tokens) == 0  # the first batch is running
    late = _scripted_job([4, 5, EOS])
    batcher.submit(late)
    assert list(late.tokens(threading.Event())) == [4, 5, EOS], "served while the first batch still runs"
    assert len(engines) == 2 and not endless.cancelled.is_set()
    tokens.close()  # the consumer goes away: its lane, where nobody else is, is dropped
    assert endless.cancelled.is_set()
    worker = batcher._worker
    if worker is not None:
        worker.join(timeout=30)
    assert batcher.active == 0 and endless.produced < 10**6


def test_requests_arriving_one_by_one_are_gathered_into_one_batch() -> None:
    # A long window: the lane starts when it is full (four), not when the window ends.
    batcher, engines = _scripted(gather_s=60.0)
    jobs = [_scripted_job([k, EOS]) for k in range(4)]
    for job in jobs:
        batcher.submit(job)  # one at a time, as clients of a burst arrive
    assert [list(job.tokens(threading.Event())) for job in jobs] == [[k, EOS] for k in range(4)]
    assert len(engines) == 1 and batcher.peak_active == 4


def test_while_a_batch_runs_late_arrivals_are_gathered_into_one_new_lane() -> None:
    engines: list[_ScriptedEngine] = []

    def new_engine() -> _ScriptedEngine:
        engines.append(_ScriptedEngine())
        return engines[-1]

    batcher = EngineBatcher(
        "busy", new_engine, lambda job: _ScriptedRequest(job.options["script"]), max_batch=8,
        gather_s=0.0, gather_busy_s=60.0,
    )  # fmt: skip
    endless = _scripted_job(list(range(10**6)), max_new=10**6)
    batcher.submit(endless)
    tokens = endless.tokens(threading.Event())
    assert next(tokens) == 0  # alone on an idle batcher: started at once
    late = [_scripted_job([k, EOS]) for k in range(4)]
    for job in late:
        batcher.submit(job)
    assert [list(job.tokens(threading.Event())) for job in late] == [[k, EOS] for k in range(4)]
    assert len(engines) == 2, "the four late ones share one lane"
    tokens.close()
