"""Continuous batching on the small tier.

The scheduler runs first on a scripted decoder (pure Python, each row's answer written in advance), where joins,
leaves, queueing and failures are exact; then on a tiny llama exported in the test (no downloads, seconds),
where the batched ONNX Runtime decoder must give the answers onnxruntime-genai gives one request at a time.

The tiny model never emits EOS (see tests/fakes/tiny_models.py), so its answers run to their length; EOS on a
real model is covered on SmolLM2 in tests/integration/test_batching_real.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.backends import onnx as onnx_module
from inference.backends import ort_decoder
from inference.backends.batching import BatchJob, ContinuousBatcher, Greedy, Guided, Sampler
from inference.backends.onnx import OnnxBackend, genai_token_ids
from inference.backends.ort_decoder import GraphNotSupported, OrtDecoder, PrefixCache
from inference.build.export import prepare_onnx
from inference.catalogue import Limits, OnnxModel
from inference.errors import BackendUnavailable
from inference.types import ChatMessage, Constraint, GenerationParams
from tests.fakes.tiny_models import build_tiny_causal_lm

# -- the scheduler, on a scripted decoder ------------------------------------------------------------------

EOS = 99
VOCAB = 100
#: A prompt whose first token is this makes the scripted decoder's prefill fail.
POISON = -1


class ScriptedDecoder:
    """Row ``i`` answers ``scripts[prompt[0]]`` token by token (then counts on, never EOS); state: per row, the
    script id and the tokens it has produced. It checks that each step is fed each row's own last token."""

    def __init__(self, scripts: dict[int, list[int]], *, fail_steps: bool = False) -> None:
        self.scripts, self.fail_steps = scripts, fail_steps
        self.prefills: list[int] = []  # rows per prefill
        self.steps: list[int] = []  # rows per step
        self.warmed: list[tuple[int, str]] = []  # rows, thread of each warm-up
        self.fail_warm_up = False
        #: When set, a prefill reports its first row, then waits for this before it runs the others.
        self.hold: threading.Event | None = None
        self.held_until_released: list[bool] = []

    def _next(self, script: int, produced: int) -> int:
        answer = self.scripts.get(script, [])
        return answer[produced] if produced < len(answer) else produced % 50

    def _logits(self, rows: list[tuple[int, int]]) -> np.ndarray:
        logits = np.zeros((len(rows), VOCAB), dtype=np.float32)
        for r, (script, produced) in enumerate(rows):
            logits[r, self._next(script, produced)] = 1.0
        return logits

    def prefill(
        self, prompts: list[list[int]], ready: Callable[[int, np.ndarray], None] | None = None
    ) -> tuple[np.ndarray, list[tuple[int, int]]]:
        self.prefills.append(len(prompts))
        if any(p[0] == POISON for p in prompts):
            raise RuntimeError("prompt too long for the model")
        rows = [(p[0], 0) for p in prompts]
        logits = self._logits(rows)
        if self.hold is not None and ready is not None:
            ready(0, logits[0])  # the first prompt has run; the others take a while
            self.held_until_released.append(self.hold.wait(timeout=30))
        return logits, rows

    def step(self, state: list[tuple[int, int]], tokens: list[int]) -> tuple[np.ndarray, list[tuple[int, int]]]:
        self.steps.append(len(state))
        if self.fail_steps:
            raise RuntimeError("ORT: out of memory")
        assert tokens == [self._next(s, n) for s, n in state], "each row reads its own last token"
        grown = [(s, n + 1) for s, n in state]
        return self._logits(grown), grown

    def select(self, state: list[tuple[int, int]], keep: list[int]) -> list[tuple[int, int]] | None:
        return [state[i] for i in keep] or None

    def join(self, first: list[tuple[int, int]] | None, second: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return (first or []) + second

    def warm_up(self, rows: int) -> None:
        self.warmed.append((rows, threading.current_thread().name))
        if self.fail_warm_up:
            raise RuntimeError("out of memory")


def _job(script: int, max_new: int = 100, prompt_len: int = 1) -> BatchJob:
    return BatchJob([script] * prompt_len, max_new, frozenset({EOS}))


def _all(job: BatchJob) -> list[int]:
    return list(job.tokens(threading.Event()))


def _idle(batcher: ContinuousBatcher[Any]) -> None:
    """Wait for the worker thread to end by itself (it does once nothing is left)."""
    worker = batcher._worker
    if worker is not None:
        worker.join(timeout=30)
    assert batcher._worker is None


def test_answers_end_at_eos_with_it_or_at_their_length_without_it() -> None:
    decoder = ScriptedDecoder({1: [5, 6, EOS], 2: [7, 8, 9, 10, 11]})
    batcher = ContinuousBatcher("scripted", decoder, max_batch=4)
    short, long = _job(1), _job(2, max_new=4)
    batcher.submit_many([short, long])
    assert _all(short) == [5, 6, EOS]
    assert _all(long) == [7, 8, 9, 10], "its length: no EOS appended"
    _idle(batcher)
    assert decoder.prefills == [2], "both prefilled in one model run"
    assert decoder.steps == [2, 2, 1], "the short one left the batch as soon as it ended"


def test_a_request_arriving_while_a_batch_runs_joins_it_at_the_next_step() -> None:
    decoder = ScriptedDecoder({3: [4, 5, EOS]})
    batcher = ContinuousBatcher("scripted", decoder, max_batch=4)
    endless = batcher.submit(_job(1, max_new=10**6))
    tokens = endless.tokens(threading.Event())
    assert next(tokens) == 0  # the batch is running
    late = batcher.submit(_job(3))
    assert _all(late) == [4, 5, EOS], "served while the first request still runs"
    assert batcher.peak_active == 2 and 2 in decoder.steps, "decoded in the same batch, not after it"
    assert not endless.cancelled.is_set()
    tokens.close()  # its consumer goes away: the row is dropped at the next step, not run to its end
    _idle(batcher)
    assert endless.cancelled.is_set() and batcher.active == 0 and endless.produced < 10**6


def test_more_requests_than_the_batch_holds_wait_and_are_all_served() -> None:
    decoder = ScriptedDecoder({k: [k, k + 1, EOS] for k in range(7)})
    batcher = ContinuousBatcher("scripted", decoder, max_batch=3)
    jobs = [_job(k) for k in range(7)]
    batcher.submit_many(jobs)
    assert [_all(job) for job in jobs] == [[k, k + 1, EOS] for k in range(7)]
    assert batcher.peak_active == 3 and max(decoder.steps) == 3


def test_one_prefill_holds_at_most_its_token_budget() -> None:
    decoder = ScriptedDecoder({k: [EOS] for k in range(5)})
    batcher = ContinuousBatcher("scripted", decoder, max_batch=8, prefill_tokens=8)
    jobs = [_job(k, prompt_len=4) for k in range(5)]
    batcher.submit_many(jobs)
    assert [_all(job) for job in jobs] == [[EOS]] * 5
    assert decoder.prefills == [2, 2, 1], "4-token prompts, 8 tokens a run"


def test_a_first_token_goes_out_as_soon_as_its_prompt_has_run_not_when_its_whole_group_has() -> None:
    decoder = ScriptedDecoder({1: [5, EOS], 2: [7, EOS]})
    decoder.hold = threading.Event()
    batcher = ContinuousBatcher("scripted", decoder, max_batch=4)
    first, second = _job(1), _job(2)
    batcher.submit_many([first, second])
    tokens = first.tokens(threading.Event())
    assert next(tokens) == 5, "while the second prompt is still running"
    decoder.hold.set()
    assert list(tokens) == [EOS] and _all(second) == [7, EOS]
    assert decoder.prefills == [2] and decoder.held_until_released == [True]


def test_a_failed_prefill_fails_only_its_requests() -> None:
    decoder = ScriptedDecoder({3: [4, 5, EOS]})
    batcher = ContinuousBatcher("scripted", decoder, max_batch=4)
    running = batcher.submit(_job(1, max_new=10**6))
    tokens = running.tokens(threading.Event())
    assert next(tokens) == 0
    bad = batcher.submit(_job(POISON))
    with pytest.raises(BackendUnavailable, match="generation failed: prompt too long for the model"):
        _all(bad)
    assert next(tokens) == 1 and batcher.broken is None, "the running answer goes on"
    assert _all(batcher.submit(_job(3))) == [4, 5, EOS]
    tokens.close()


def test_a_failed_step_fails_the_batch_clearly_and_marks_the_batcher_broken() -> None:
    batcher = ContinuousBatcher("broken", ScriptedDecoder({}, fail_steps=True), max_batch=4)
    jobs = [_job(1), _job(2)]
    batcher.submit_many(jobs)
    for job in jobs:
        with pytest.raises(BackendUnavailable, match="generation failed: ORT: out of memory"):
            _all(job)
    assert batcher.active == 0
    assert batcher.broken == "ORT: out of memory", "the backend goes back to one request at a time"


class _LostGuide:
    def mask(self, logits: np.ndarray) -> np.ndarray:
        return logits

    def consume(self, token: int) -> None:
        raise ValueError("token 7 is not allowed here")


def test_a_grammar_that_fails_ends_only_its_own_request() -> None:
    decoder = ScriptedDecoder({1: [7, 8, EOS], 2: [3, 4, EOS]})
    batcher = ContinuousBatcher("scripted", decoder, max_batch=4)
    guided = BatchJob([1], 10, frozenset({EOS}), Guided(_LostGuide(), Greedy()))
    free = _job(2)
    batcher.submit_many([guided, free])
    with pytest.raises(BackendUnavailable, match="not allowed here"):
        _all(guided)
    assert _all(free) == [3, 4, EOS]


def test_the_warm_up_runs_a_full_batch_once_in_the_worker_thread() -> None:
    decoder = ScriptedDecoder({7: [3, 4, EOS]})
    batcher = ContinuousBatcher("test", decoder, max_batch=6)
    batcher.warm_up()
    _idle(batcher)
    assert decoder.warmed == [(6, "switchboard-batcher-test")] and decoder.prefills == []
    assert _all(batcher.submit(_job(7))) == [3, 4, EOS]
    assert len(decoder.warmed) == 1, "once"


def test_a_failed_warm_up_leaves_the_requests_served() -> None:
    decoder = ScriptedDecoder({7: [3, 4, EOS]})
    decoder.fail_warm_up = True
    batcher = ContinuousBatcher("test", decoder, max_batch=2)
    batcher.warm_up()
    assert _all(batcher.submit(_job(7))) == [3, 4, EOS]


def test_a_closed_batcher_refuses_new_requests_clearly() -> None:
    batcher = ContinuousBatcher("closing", ScriptedDecoder({}), max_batch=1)
    batcher.close()
    with pytest.raises(BackendUnavailable, match="closing is closed"):
        batcher.submit(_job(1))
    with pytest.raises(ValueError, match="at least 1"):
        ContinuousBatcher("bad", ScriptedDecoder({}), max_batch=0)


# -- choosing tokens ----------------------------------------------------------------------------------------


def test_sampling_follows_temperature_top_k_and_top_p() -> None:
    with pytest.raises(ValueError, match="temperature must be positive"):
        Sampler(0.0)
    logits = np.log(np.array([0.6, 0.3, 0.1], dtype=np.float32))
    assert {Sampler(1.0, top_k=1, seed=s).choose(logits) for s in range(20)} == {0}
    assert {Sampler(1.0, top_p=0.5, seed=s).choose(logits) for s in range(20)} == {0}, "0.6 alone reaches 0.5"
    sampler = Sampler(1.0, seed=7)
    picks = np.bincount([sampler.choose(logits) for _ in range(4000)], minlength=3) / 4000
    assert np.allclose(picks, [0.6, 0.3, 0.1], atol=0.03)
    cold = Sampler(0.05, seed=7)
    assert {cold.choose(logits) for _ in range(50)} == {0}, "a low temperature is nearly greedy"
    runs = [[sampler.choose(logits) for _ in range(30)] for sampler in (Sampler(1.0, seed=3), Sampler(1.0, seed=3))]
    assert runs[0] == runs[1] and len(set(runs[0])) > 1, "a seed repeats itself"


# -- the prefix cache ---------------------------------------------------------------------------------------


def _kv(length: int, value: float = 1.0) -> list[np.ndarray]:
    return [np.full((1, 2, length, 4), value, dtype=np.float32) for _ in range(2)]


def test_the_prefix_cache_finds_the_longest_stored_beginning() -> None:
    cache = PrefixCache(max_tokens=4096, min_length=24)
    system = list(range(100, 130))  # 30 tokens, like a task's system prompt
    cache.store([*system, 1, 2, 3], _kv(33, 1.0))
    cache.store([*system, 1, 2, 3, 4, 5, 6], _kv(36, 2.0))
    hit = cache.longest([*system, 1, 2, 3, 4, 9])
    assert hit is not None and hit.length == 34 and hit.arrays[0].shape == (1, 2, 34, 4)
    assert float(hit.arrays[0][0, 0, 0, 0]) == 2.0, "from the longer match"
    again = cache.longest([*system, 1, 2, 3])
    assert again is not None and again.length == 32, "the same prompt again leaves its last token to run"
    assert cache.longest(system[:20] + [7] * 20) is None, "20 shared tokens are under the minimum"
    assert cache.hits == 2
    cache.store(list(range(10)), _kv(10))
    assert cache.tokens == 33 + 36, "a prompt shorter than the minimum is not stored"


def test_the_prefix_cache_forgets_the_least_recently_used_first() -> None:
    cache = PrefixCache(max_tokens=70, min_length=24)
    a, b, c = ([k] * 30 for k in (1, 2, 3))
    cache.store(a, _kv(30))
    cache.store(b, _kv(30))
    assert cache.longest([*a, 0]) is not None  # a is used again: b is now the oldest
    cache.store(c, _kv(30))
    assert cache.tokens == 60
    assert cache.longest([*b, 0]) is None and cache.longest([*a, 0]) is not None and cache.longest([*c, 0])


# -- the batched decoder on a tiny exported llama -----------------------------------------------------------

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
SYSTEM = "You are a careful assistant. Answer in one short paragraph, plainly, and say when you are unsure."


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
    if backend.batcher is not None:
        _idle(backend.batcher)  # its warm-up is done: the tests below may use its decoder from their own threads
    return backend


def _prompt(backend: OnnxBackend, question: str, system: str | None = None) -> list[int]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    ids = backend._tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    return [int(i) for i in ids]


def _alone(backend: OnnxBackend, prompt: list[int], n: int) -> list[int]:
    """The reference: onnxruntime-genai, this prompt alone."""
    return list(genai_token_ids(backend.genai_model(), prompt, params=GREEDY, max_new_tokens=n, stop=threading.Event()))


def _decoder(backend: OnnxBackend) -> OrtDecoder:
    assert backend.batcher is not None
    decoder = backend.batcher.decoder
    assert isinstance(decoder, OrtDecoder)
    return decoder


def _greedy(prompt: list[int], n: int) -> BatchJob:
    return BatchJob(prompt, n, frozenset({2}))


async def test_on_cpu_the_genai_export_runs_batched_on_onnx_runtime(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    assert backend.provider == "onnxruntime:CPUExecutionProvider"
    assert isinstance(_decoder(backend), OrtDecoder) and backend._genai is None, "genai is loaded only if needed"
    await backend.aclose()


async def test_the_decoder_threads_stop_spinning_when_a_run_ends(spec: OnnxModel, cache: Path) -> None:
    # Between steps the worker, the streams and the event loop need the cores a spinning thread would hold.
    backend = await _started(spec, cache)
    options = _decoder(backend).session.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    await backend.aclose()


async def test_batched_greedy_answers_equal_genai_one_at_a_time(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    prompts = [_prompt(backend, q) for q in QUESTIONS]
    lengths = [5, 16, 9, 16, 3, 12, 16]  # rows leave at different steps: the cache is cut and re-joined
    batcher = ContinuousBatcher("test", _decoder(backend), max_batch=8)
    jobs = [_greedy(p, n) for p, n in zip(prompts, lengths, strict=True)]
    batcher.submit_many(jobs)
    got = [_all(job) for job in jobs]
    assert batcher.peak_active == len(jobs), "all seven were decoded together"
    assert got == [_alone(backend, p, n) for p, n in zip(prompts, lengths, strict=True)]
    await backend.aclose()


async def test_requests_joining_a_running_batch_get_the_answers_they_get_alone(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    prompts = [_prompt(backend, q) for q in QUESTIONS]
    batcher = ContinuousBatcher("test", _decoder(backend), max_batch=3)
    jobs = [_greedy(p, 6 + k) for k, p in enumerate(prompts)]
    batcher.submit_many(jobs)  # three at a time: each one that ends lets the next join the running batch
    got = [_all(job) for job in jobs]
    assert batcher.peak_active == 3
    assert got == [_alone(backend, p, 6 + k) for k, p in enumerate(prompts)]
    await backend.aclose()


async def test_a_step_writes_the_cache_in_place(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    decoder = _decoder(backend)
    _, state = decoder.prefill([_prompt(backend, q) for q in QUESTIONS[:2]])
    state = decoder.join(None, state)  # buffers with free slots and room to grow
    buffers = state.buffers
    for _ in range(3):
        _, state = decoder.step(state, [5, 6])
    assert state.buffers is buffers, "no new cache per step: the model wrote into the same buffers"
    assert state.capacity > int(state.lengths.max()) and state.slots == decoder.max_rows
    await backend.aclose()


async def test_a_long_prompt_gets_a_buffer_of_its_own_size_not_a_full_batch_of_it(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    decoder = _decoder(backend)
    long = _prompt(backend, " ".join(QUESTIONS * 14))
    assert len(long) > decoder.max_rows * ort_decoder.SLOT_POSITIONS, "longer than a full batch's budget"
    _, state = decoder.prefill([long])
    assert decoder.join(None, state).slots == 1
    _, short = decoder.prefill([_prompt(backend, QUESTIONS[0])])
    assert decoder.join(None, short).slots == decoder.max_rows, "a short one keeps room for a batch to join it"
    batcher = ContinuousBatcher("test", decoder, max_batch=4)
    assert _all(batcher.submit(_greedy(long, 6))) == _alone(backend, long, 6)
    await backend.aclose()


async def test_cache_buffers_that_grow_shrink_and_compact_keep_the_answers(
    spec: OnnxModel, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ort_decoder, "SLACK", 1)  # a new buffer every other step, and one whenever a long row leaves
    backend = await _started(spec, cache)
    prompts = [_prompt(backend, q) for q in QUESTIONS]
    prompts[2] = _prompt(backend, " ".join(QUESTIONS))  # a long row that leaves early: the buffers shrink
    lengths = [9, 14, 3, 16, 5, 11, 7]
    batcher = ContinuousBatcher("test", _decoder(backend), max_batch=4)
    jobs = [_greedy(p, n) for p, n in zip(prompts, lengths, strict=True)]
    batcher.submit_many(jobs)
    got = [_all(job) for job in jobs]
    assert got == [_alone(backend, p, n) for p, n in zip(prompts, lengths, strict=True)]
    await backend.aclose()


async def test_prompts_that_begin_alike_reuse_the_beginning_and_answer_the_same(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    decoder = _decoder(backend)
    prompts = [_prompt(backend, q, SYSTEM) for q in QUESTIONS[:4]]
    batcher = ContinuousBatcher("test", decoder, max_batch=8)
    together = [_greedy(p, 8) for p in prompts[:3]]
    batcher.submit_many(together)  # three alike in one prefill: their shared beginning runs once
    first = [_all(job) for job in together]
    assert decoder.prefixes.hits >= 3
    later = _all(batcher.submit(_greedy(prompts[3], 8)))  # a later one starts from the stored system prompt
    assert decoder.prefixes.hits >= 4
    assert [*first, later] == [_alone(backend, p, 8) for p in prompts]
    heard: list[tuple[int, np.ndarray]] = []
    mixed = [prompts[1], _prompt(backend, QUESTIONS[0])]  # one continues a stored beginning, one runs whole
    logits, _ = decoder.prefill(mixed, lambda i, row: heard.append((i, row.copy())))
    assert sorted(i for i, _ in heard) == [0, 1], "each prompt reported once, as soon as it has run"
    for i, row in heard:
        np.testing.assert_array_equal(row, logits[i])
    turn = prompts[0] + [int(t) for t in first[0]]  # the next turn of a conversation finds the last one
    assert _all(batcher.submit(_greedy(turn, 8))) == _alone(backend, turn, 8)
    await backend.aclose()


class _CountingSession:
    """The decoder's session, recording the shape of ``input_ids`` of each ``run`` (prefills; steps use IOBinding)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.runs: list[tuple[int, ...]] = []

    def run(self, outputs: list[str], feed: dict[str, Any]) -> Any:
        self.runs.append(tuple(feed["input_ids"].shape))
        return self._session.run(outputs, feed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


async def _system_prompt_stored(spec: OnnxModel, cache: Path) -> tuple[OnnxBackend, OrtDecoder, list[list[int]]]:
    """A started backend whose decoder has run a first request, storing its task's system prompt; the prompts."""
    backend = await _started(spec, cache)
    decoder = _decoder(backend)
    prompts = [_prompt(backend, q, SYSTEM) for q in QUESTIONS]
    decoder.prefill([prompts[0]])
    return backend, decoder, prompts


def _count_runs(decoder: OrtDecoder, monkeypatch: pytest.MonkeyPatch) -> _CountingSession:
    counting = _CountingSession(decoder.session)
    monkeypatch.setattr(decoder, "session", counting)
    return counting


async def test_prompts_continuing_one_stored_beginning_run_together_and_answer_as_alone(
    spec: OnnxModel, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, decoder, prompts = await _system_prompt_stored(spec, cache)
    counting = _count_runs(decoder, monkeypatch)
    burst = prompts[1:]
    logits, state = decoder.prefill(burst)
    beginning = min(ort_decoder._common(p, prompts[0]) for p in burst)  # the system prompt, stored
    assert counting.runs == [(1, sum(len(p) - beginning for p in burst))], "six rests in one run, in one row"
    for i, prompt in enumerate(burst):  # each saw its beginning and itself only, at its own positions
        alone, whole_cache = decoder._prefill_plain([prompt])
        np.testing.assert_allclose(logits[i], alone[0], rtol=1e-4, atol=1e-4)
        for row, whole in zip(state.arrays, whole_cache.arrays, strict=True):
            np.testing.assert_allclose(row[i, :, : len(prompt)], whole[0, :, : len(prompt)], rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(decoder, "session", counting._session)
    batcher = ContinuousBatcher("test", decoder, max_batch=8)
    jobs = [_greedy(p, 10) for p in burst]
    batcher.submit_many(jobs)
    assert [_all(job) for job in jobs] == [_alone(backend, p, 10) for p in burst]
    await backend.aclose()


async def test_a_run_of_continued_prompts_holds_its_token_budget_and_a_long_history_keeps_its_own(
    spec: OnnxModel, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, decoder, prompts = await _system_prompt_stored(spec, cache)
    history = prompts[0] + list(range(40, 80)) + prompts[1][len(prompts[0]) - 8 :]  # a conversation's next turn
    decoder.prefill([history[:-3]])  # its history so far is stored too
    monkeypatch.setattr(ort_decoder, "FOLD_TOKENS", 40)
    counting = _count_runs(decoder, monkeypatch)
    decoder.prefill([*prompts[1:], history])
    rests = [n for _, n in counting.runs]
    assert max(rests) <= 40 and len(counting.runs) >= 3, "the six rests split into runs of at most 40 tokens"
    assert 3 in rests, "the conversation runs its last three tokens on its own history"
    await backend.aclose()


async def test_concurrent_streams_through_the_backend_are_batched_and_identical(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    messages = [[ChatMessage("user", q)] for q in QUESTIONS[:4]]
    alone = [await backend.stream(m, GREEDY).text() for m in messages]
    together = await asyncio.gather(*(backend.stream(m, GREEDY).text() for m in messages))
    assert list(together) == alone
    assert backend.batcher is not None and backend.batcher.peak_active > 1
    assert not backend._exclusive(GREEDY), "no per-model lock while batching"
    assert backend.last_run is not None and backend.last_run.finish_reason == "length"
    await backend.aclose()


async def test_a_closed_stream_leaves_the_batch(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    batcher = backend.batcher
    assert batcher is not None
    long = GenerationParams(max_new_tokens=1500, temperature=0.0)
    stream = backend.stream([ChatMessage("user", "Hello there!")], long)
    assert await stream.__anext__()
    await stream.aclose()
    for thread in threading.enumerate():  # the generation thread, then the batcher's: both end by themselves
        if thread.name.startswith("switchboard-"):
            thread.join(timeout=30)
            assert not thread.is_alive()
    assert batcher.active == 0, "a row nobody reads from is dropped, not run to its end"
    run = backend.last_run
    assert run is not None and run.finish_reason == "cancelled" and run.generated_tokens < 1500
    assert await backend.stream([ChatMessage("user", "Hi")], GenerationParams(max_new_tokens=3)).text()
    await backend.aclose()


async def test_guided_and_sampled_requests_share_the_batch(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    guided = GenerationParams(max_new_tokens=8, temperature=0.0, constraint=Constraint(kind="regex", pattern="[ab]{3}"))
    prompts = [_prompt(backend, q) for q in ("Pick.", "Name three fruits.", "Tell me a story.")]
    eos = frozenset(backend._eos_ids)
    jobs = [
        BatchJob(prompts[0], 8, eos, Guided(backend._guide(guided), Greedy())),
        BatchJob(prompts[1], 16, eos),
        BatchJob(prompts[2], 6, eos, Sampler(0.8, top_p=0.9, seed=1)),
    ]
    batcher = ContinuousBatcher("test", _decoder(backend), max_batch=8)
    batcher.submit_many(jobs)
    masked, free, sampled = (_all(job) for job in jobs)
    assert batcher.peak_active == 3, "one batch for all three"
    reference = genai_token_ids(
        backend.genai_model(), prompts[0], params=guided, max_new_tokens=8, stop=threading.Event(),
        guide=backend._guide(guided),
    )  # fmt: skip
    assert masked == list(reference), "the grammar's answer is the one genai gives alone"
    assert backend._tokenizer.decode([t for t in masked if t not in eos]) in {
        "aaa",
        "aab",
        "aba",
        "abb",
        "baa",
        "bab",
        "bba",
        "bbb",
    }
    assert free == _alone(backend, prompts[1], 16) and len(sampled) == 6
    # Through the backend: concurrent guided and free requests both come back right.
    text, other = await asyncio.gather(
        backend.stream([ChatMessage("user", "Pick.")], guided).text(),
        backend.stream([ChatMessage("user", "Name three fruits.")], GREEDY).text(),
    )
    assert len(text) == 3 and set(text) <= {"a", "b"} and other
    await backend.aclose()


async def test_after_a_failed_batch_the_backend_answers_one_request_at_a_time(spec: OnnxModel, cache: Path) -> None:
    backend = await _started(spec, cache)
    assert backend.batcher is not None
    expected = await backend.stream([ChatMessage("user", "Hello there!")], GREEDY).text()
    backend.batcher.broken = "ORT: out of memory"
    assert backend._exclusive(GREEDY), "the per-model lock again"
    assert await backend.stream([ChatMessage("user", "Hello there!")], GREEDY).text() == expected
    assert backend._genai is not None, "onnxruntime-genai answered"
    await backend.aclose()


async def test_an_export_the_decoder_cannot_run_is_served_by_genai(
    spec: OnnxModel, cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def refuse(export: Path) -> OrtDecoder:
        raise GraphNotSupported(f"{export}: no /lm_head MatMul feeding a logits output")

    monkeypatch.setattr(onnx_module, "OrtDecoder", refuse)
    backend = await _started(spec, cache)
    assert backend.provider == "onnxruntime-genai:cpu" and backend.batcher is None
    assert any("no batched decoder" in r.getMessage() for r in caplog.records)
    prompt = _prompt(backend, QUESTIONS[0])
    assert list(backend._token_ids(prompt, GREEDY, 8, threading.Event())) == _alone(backend, prompt, 8)
    await backend.aclose()


def test_a_graph_without_a_language_model_head_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "not-a-decoder", [x], [y])
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    with pytest.raises(GraphNotSupported, match="no /lm_head"):
        OrtDecoder(tmp_path)


def test_a_graph_without_grouped_query_attention_over_a_cache_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input_ids", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])
    head = helper.make_node("MatMul", ["input_ids", "w"], ["logits"], name="/lm_head/MatMul")
    weight = numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")
    graph = helper.make_graph([head], "a-head-without-attention", [x], [y], [weight])
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    with pytest.raises(GraphNotSupported, match="no GroupQueryAttention"):
        OrtDecoder(tmp_path)
