"""TransformersBackend and the shared prompt/streaming helpers, on tiny models built in the test."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from inference.backends.chat_template import IncrementalDecoder, StopStrings, budget, encode_prompt, render_prompt
from inference.backends.guidance import plain_byte_level_decoder
from inference.backends.transformers import TransformersBackend, resolve_device, resolve_dtype
from inference.catalogue import TransformersModel
from inference.errors import BackendUnavailable
from inference.structured import SchemaError, validate
from inference.types import ChatMessage, Constraint, GenerationParams
from tests.fakes.tiny_models import build_tiny_causal_lm

MESSAGES = [ChatMessage("user", "Name three fruits.")]
GREEDY = GenerationParams(max_new_tokens=20)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: build_tiny_causal_lm(root / arch, arch) for arch in ("llama", "gpt2")}  # type: ignore[arg-type]


def _backend(path: Path, tmp_path: Path, **kw: Any) -> TransformersBackend:
    return TransformersBackend("tiny-torch", TransformersModel(source=str(path), tier="large", **kw), tmp_path)


def _reference_text(path: Path, n: int) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = encode_prompt(tok, MESSAGES, max_prompt_tokens=1000)
    with torch.inference_mode():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return str(tok.decode(out[0, len(ids) :], skip_special_tokens=True, clean_up_tokenization_spaces=False))


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
async def test_greedy_stream_equals_plain_generate(models: dict[str, Path], tmp_path: Path, arch: str) -> None:
    backend = _backend(models[arch], tmp_path)
    await backend.start()
    assert backend.provider == "transformers:cpu"
    stream = backend.stream(MESSAGES, GREEDY)
    pieces = [p async for p in stream]
    if arch == "llama":  # GPT-2 may pick its EOS (tied head): only llama is sure to run the full length
        assert backend.last_run is not None and backend.last_run.generated_tokens == 20
        assert "".join(pieces) == _reference_text(models[arch], 20)
    assert len(pieces) > 1
    assert stream.timings.first_token_s is not None and stream.timings.total_s is not None
    assert stream.timings.tokens == len(pieces)


async def test_closing_the_stream_stops_generate(models: dict[str, Path], tmp_path: Path) -> None:
    backend = _backend(models["llama"], tmp_path)
    await backend.start()
    params = GenerationParams(max_new_tokens=1000)
    stream = backend.stream(MESSAGES, params)
    assert await stream.__anext__()
    await stream.aclose()
    for thread in threading.enumerate():  # join, not sleep: done as soon as the workers are
        if thread.name.startswith("switchboard-"):
            thread.join(timeout=30)
            assert not thread.is_alive()
    assert backend.last_run is not None and backend.last_run.finish_reason == "cancelled"
    assert backend.last_run.generated_tokens < params.max_new_tokens
    assert await backend.stream(MESSAGES, GenerationParams(max_new_tokens=2)).text()


async def test_stop_strings_and_sampling(models: dict[str, Path], tmp_path: Path) -> None:
    backend = _backend(models["llama"], tmp_path)
    await backend.start()
    full = await backend.stream(MESSAGES, GREEDY).text()
    stop = full[5:8]
    cut = await backend.stream(MESSAGES, GenerationParams(max_new_tokens=20, stop=(stop,))).text()
    assert cut == full[: full.index(stop)]
    sampled = await backend.stream(MESSAGES, GenerationParams(max_new_tokens=5, temperature=0.8, top_p=0.9)).text()
    assert isinstance(sampled, str)
    assert backend.last_run is not None and backend.last_run.generated_tokens == 5


async def test_loads_with_revision_and_without_remote_code(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    seen: list[dict[str, Any]] = []
    real = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args: Any, **kw: Any) -> Any:
        seen.append(dict(kw))
        kw["revision"] = None  # a local directory has no revisions
        return real(*args, **kw)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", _drop_revision(transformers.AutoTokenizer))
    backend = _backend(models["llama"], tmp_path, revision="abc123")
    await backend.start()
    assert seen[0]["revision"] == "abc123" and seen[0]["trust_remote_code"] is False
    assert backend.count_tokens("Hello there") > 0
    assert backend.context_window == 2048


def _drop_revision(cls: Any) -> Any:
    real = cls.from_pretrained

    def load(*args: Any, **kw: Any) -> Any:
        kw["revision"] = None
        return real(*args, **kw)

    return load


async def test_unloadable_source_is_backend_unavailable(tmp_path: Path) -> None:
    backend = _backend(tmp_path / "no-such-model", tmp_path)
    with pytest.raises(BackendUnavailable, match="cannot load"):
        await backend.start()
    with pytest.raises(BackendUnavailable, match="not started"):
        await backend.stream(MESSAGES, GREEDY).text()


def test_device_and_dtype_resolution() -> None:
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_dtype("auto", "cpu") is torch.float32  # half precision is slow on CPU
    assert resolve_dtype("auto", "cuda") == "auto"
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16


async def test_generation_errors_become_backend_unavailable(
    models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(models["llama"], tmp_path)
    await backend.start()

    def oom(**kw: Any) -> None:
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(backend._model, "generate", oom)
    with pytest.raises(BackendUnavailable, match="out of memory"):
        await backend.stream(MESSAGES, GREEDY).text()
    assert backend._lock.acquire(blocking=False)  # released after the failure


# -- shared helpers ------------------------------------------------------------------------------------


def test_incremental_decoder_keeps_spaces_and_multibyte_characters(models: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models["llama"])
    text = "Café au lait, 日本語 and 🙂 emoji — done."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(i) for i in ids] + [dec.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)  # half characters are held back, never emitted


@pytest.mark.parametrize(
    ("pieces", "stops", "expected"),
    [
        (["Hello", " wor", "ld. ", "User:", " more"], ("User:",), "Hello world. "),
        (["ab", "c<", "|en", "d|>", "tail"], ("<|end|>",), "abc"),
        (["no stop ", "here <", "x"], ("<|end|>",), "no stop here <x"),
        (["x", "STOP"], ("STOP", "x"), ""),
    ],
)
def test_stop_strings_hold_back_partial_matches(pieces: list[str], stops: tuple[str, ...], expected: str) -> None:
    s = StopStrings(stops)
    out = ""
    for p in pieces:
        out += s.push(p)
        if s.stopped:
            break
    out += s.flush()
    assert out == expected


def test_prompt_rendering_and_budget(models: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models["llama"])
    text = render_prompt(tok, [ChatMessage("system", "S"), ChatMessage("user", "U")])
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    with caplog.at_level(logging.WARNING):
        ids = encode_prompt(tok, [ChatMessage("user", "word " * 200)], max_prompt_tokens=50)
    assert len(ids) == 50 and "cut" in caplog.text
    assert budget(2048, GenerationParams(max_new_tokens=256)) == (1792, 256)
    assert budget(512, GenerationParams(max_new_tokens=4096)) == (256, 256)


# --- structured output and raw prompts ---------------------------------------------------------------

CONSTRAINTS = [
    Constraint("choice", choices=("apple", "banana split", "cherry")),
    Constraint("regex", pattern=r"[0-9]{3}-[a-z]{2}"),
    Constraint(
        "json_schema",
        schema={
            "type": "object",
            "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}, "ok": {"type": "boolean"}},
            "required": ["n", "ok"],
            "additionalProperties": False,
        },
    ),
]


@pytest.mark.parametrize("constraint", CONSTRAINTS, ids=lambda c: c.kind)
async def test_a_random_model_still_obeys_the_constraint(
    models: dict[str, Path], tmp_path: Path, constraint: Constraint
) -> None:
    # Random weights and an EOS the model never picks on its own: only the grammar makes this valid and short.
    backend = _backend(models["llama"], tmp_path)
    await backend.start()
    params = GenerationParams(max_new_tokens=40, constraint=constraint)
    text = await backend.stream(MESSAGES, params).text()
    validate(constraint, text)
    assert backend.last_run is not None and backend.last_run.finish_reason == "eos"


async def test_sampling_under_a_constraint_stays_inside_it(models: dict[str, Path], tmp_path: Path) -> None:
    backend = _backend(models["llama"], tmp_path)
    await backend.start()
    labels = Constraint("choice", choices=("red", "green", "blue"))
    params = GenerationParams(max_new_tokens=10, temperature=1.5, top_p=1.0, constraint=labels)
    for _ in range(5):
        assert await backend.stream(MESSAGES, params).text() in labels.choices


async def test_raw_prompt_has_no_chat_template(models: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models["llama"])
    messages = [ChatMessage("system", "Once upon"), ChatMessage("user", "a time")]
    assert render_prompt(tok, messages, raw=True) == "Once upon\n\na time"
    assert encode_prompt(tok, messages, max_prompt_tokens=100, raw=True) == tok("Once upon\n\na time")["input_ids"]
    backend = _backend(models["llama"], tmp_path)
    await backend.start()
    await backend.stream(messages, GenerationParams(max_new_tokens=2, raw=True)).text()
    assert backend.last_run is not None and backend.last_run.prompt_tokens == len(
        tok("Once upon\n\na time")["input_ids"]
    )


async def test_a_constraint_the_engine_cannot_compile_is_a_schema_error(
    models: dict[str, Path], tmp_path: Path
) -> None:
    backend = _backend(models["llama"], tmp_path)
    await backend.start()
    bad = Constraint("regex", pattern="(?=x)y")  # check_schema refuses it; a caller that skipped it gets this
    with pytest.raises(SchemaError, match="cannot enforce"):
        await backend.stream(MESSAGES, GenerationParams(constraint=bad)).text()


def test_a_sentencepiece_style_decoder_over_byte_level_bpe_becomes_plain_byte_level() -> None:
    # The GGUF-derived SmolLM2 tokenizer.json: llguidance read its "Ġ" as a letter, so spaces were impossible.
    byte_level = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
    spec: dict[str, Any] = {
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
        "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}, byte_level]},
    }
    assert plain_byte_level_decoder(spec) and spec["decoder"] == byte_level
    assert not plain_byte_level_decoder(spec)  # already plain
    sentencepiece = {"pre_tokenizer": {"type": "Metaspace"}, "decoder": {"type": "Sequence", "decoders": [byte_level]}}
    assert not plain_byte_level_decoder(sentencepiece)  # not a byte-level vocabulary: left alone


async def test_labels_with_spaces_can_be_written(models: dict[str, Path], tmp_path: Path) -> None:
    backend = _backend(models["llama"], tmp_path)
    await backend.start()
    labels = Constraint("choice", choices=("big cat", "small dog"))
    assert (
        await backend.stream(MESSAGES, GenerationParams(max_new_tokens=10, constraint=labels)).text() in labels.choices
    )


def _fake_hub_download(cache_dir: Path, repo_id: str, model: Path) -> None:
    """Lay ``model`` out as the hub client leaves a finished download (refs/main -> snapshots/<commit>)."""
    import shutil

    repo = cache_dir / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(model, repo / "snapshots" / commit)


async def test_a_downloaded_preferred_model_is_loaded_instead_of_the_source(
    models: dict[str, Path], tmp_path: Path
) -> None:
    _fake_hub_download(tmp_path, "example/larger-instruct", models["gpt2"])
    backend = _backend(models["llama"], tmp_path, prefer="example/larger-instruct")
    await backend.start()
    assert backend.loaded_source == "example/larger-instruct"
    assert backend._model.config.model_type == "gpt2"  # the preferred model, not the llama source


async def test_without_the_preferred_model_the_source_stands_in_and_says_so(
    models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = _backend(models["llama"], tmp_path, prefer="example/not-downloaded")
    with caplog.at_level(logging.WARNING, logger="inference.backends.transformers"):
        await backend.start()
    assert backend.loaded_source == str(models["llama"])
    assert backend._model.config.model_type == "llama"
    assert "example/not-downloaded is not downloaded" in caplog.text and "stands in" in caplog.text


def test_prefer_must_be_a_hub_id() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="model hub id"):
        TransformersModel(source="packaged:smollm2", tier="large", prefer="not a hub id")
