"""OnnxBackend and prepare_onnx on a tiny llama built in the test (no downloads, seconds)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.artifacts import MARKER, TOKENIZER_DIR, export_dir, is_prepared
from inference.backends.onnx import OnnxBackend, genai_token_ids
from inference.backends.transformers import TransformersBackend
from inference.build import export
from inference.build.export import prepare_onnx, restore_q4_grid
from inference.catalogue import OnnxModel, TransformersModel
from inference.errors import BackendUnavailable
from inference.structured import SchemaError, validate
from inference.types import ChatMessage, Constraint, GenerationParams
from tests.fakes.tiny_models import build_tiny_causal_lm

CUDA_FIRST = ("CUDAExecutionProvider", "CPUExecutionProvider")
MESSAGES = [ChatMessage("system", "Be brief."), ChatMessage("user", "Name three fruits.")]
GREEDY = GenerationParams(max_new_tokens=24, temperature=0.0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # On a Q4_1-style grid like SmolLM2, so the genai int4 export takes the exact-grid path.
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "llama", q4_grid=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _spec(tiny: Path, runtime: str, precision: str = "fp32", **kw: Any) -> OnnxModel:
    return OnnxModel(source=str(tiny), tier="small", runtime=runtime, precision=precision, **kw)


@pytest.fixture(scope="module")
def prepared(tiny: Path, cache: Path) -> dict[str, tuple[OnnxModel, list[str]]]:
    """Each export once per module, with the progress messages it printed."""
    out: dict[str, tuple[OnnxModel, list[str]]] = {}
    for runtime, precision in [("optimum", "fp32"), ("genai", "fp32"), ("genai", "int4")]:
        spec, said = _spec(tiny, runtime, precision, providers=CUDA_FIRST), list[str]()
        prepare_onnx(spec, cache, said.append)
        out[f"{runtime}-{precision}"] = (spec, said)
    return out


@pytest.fixture(scope="module")
def reference(tiny: Path, cache: Path) -> TransformersBackend:
    return TransformersBackend("torch", TransformersModel(source=str(tiny), tier="large"), cache)


async def _started(spec: OnnxModel, cache: Path) -> OnnxBackend:
    backend = OnnxBackend("tiny-onnx", spec, cache)
    await backend.start()
    return backend


def _torch_greedy_ids(tiny: Path, n: int) -> tuple[list[int], list[int]]:
    """(prompt ids, new ids) from plain transformers generate: the reference for both runtimes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny).eval()
    text = tok.apply_chat_template([{"role": m.role, "content": m.content} for m in MESSAGES],
                                   add_generation_prompt=True, tokenize=False)  # fmt: skip
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return prompt, out[0, len(prompt) :].tolist()


# -- prepare ------------------------------------------------------------------------------------------


def test_prepare_writes_marker_last_and_is_idempotent(
    prepared: dict[str, Any], cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec, _ = prepared["optimum-fp32"]
    out = export_dir(spec, cache)
    marker = out / MARKER
    info = json.loads(marker.read_text())
    assert info["runtime"] == "optimum" and info["precision"] == "fp32" and info["target"] == "cpu"
    assert (out / "model.onnx").exists() and (out / TOKENIZER_DIR / "tokenizer.json").exists()
    assert not list(out.parent.glob(".*tmp*")), "temporary directories are cleaned up"
    mtime = marker.stat().st_mtime_ns

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("a prepared model must not be exported again")

    monkeypatch.setattr(export, "_export_optimum", boom)
    said: list[str] = []
    assert prepare_onnx(spec, cache, said.append) == out
    assert said == [f"already prepared: {out}"]
    assert marker.stat().st_mtime_ns == mtime


def test_export_dir_names_runtime_precision_and_target(tiny: Path, cache: Path) -> None:
    a = export_dir(_spec(tiny, "genai", "int4"), cache)
    b = export_dir(_spec(tiny, "genai", "int4", revision="v2"), cache)
    assert a.parent == cache / "onnx"
    assert a.name.startswith("llama-genai-int4-cpu-")  # no GPU here: a CPU export
    assert a != b  # another revision is another export


def test_unfinished_export_is_not_used(tiny: Path, tmp_path: Path) -> None:
    spec = _spec(tiny, "optimum")
    out = export_dir(spec, tmp_path)
    out.mkdir(parents=True)  # e.g. a crash after the rename of an older layout: no marker
    (out / "model.onnx").write_bytes(b"garbage")
    assert not is_prepared(spec, tmp_path)


async def test_missing_export_is_a_clear_backend_unavailable(tiny: Path, tmp_path: Path) -> None:
    backend = OnnxBackend("nothing-here", _spec(tiny, "genai", "int4"), tmp_path)
    with pytest.raises(BackendUnavailable, match=r"python -m bot models prepare"):
        await backend.start()


def test_optimum_fp16_needs_a_gpu(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fp16"):
        prepare_onnx(_spec(tiny, "optimum", "fp16"), tmp_path)


# -- greedy equality with PyTorch -------------------------------------------------------------------


async def test_optimum_greedy_equals_pytorch(
    prepared: dict[str, Any], cache: Path, tiny: Path, reference: TransformersBackend
) -> None:
    spec, _ = prepared["optimum-fp32"]
    backend = await _started(spec, cache)
    _, ref_ids = _torch_greedy_ids(tiny, GREEDY.max_new_tokens)
    # ids: the ONNX graph under transformers' generate
    model = backend._model
    prompt, _ = _torch_greedy_ids(tiny, 1)
    import torch

    ort_ids = model.generate(torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24, do_sample=False)
    assert ort_ids[0, len(prompt) :].tolist() == ref_ids
    # text: both backends end to end
    await reference.start()
    assert await backend.stream(MESSAGES, GREEDY).text() == await reference.stream(MESSAGES, GREEDY).text()


async def test_genai_fp32_greedy_equals_pytorch(
    prepared: dict[str, Any], cache: Path, tiny: Path, reference: TransformersBackend
) -> None:
    spec, _ = prepared["genai-fp32"]
    backend = await _started(spec, cache)
    prompt, ref_ids = _torch_greedy_ids(tiny, GREEDY.max_new_tokens)
    ids = list(genai_token_ids(backend.genai_model(), prompt, params=GREEDY, max_new_tokens=24, stop=threading.Event()))
    assert ids == ref_ids, "onnxruntime-genai (the GPU path) on this export"
    assert list(backend._token_ids(prompt, GREEDY, 24, threading.Event())) == ref_ids, "the batched CPU decoder"
    await reference.start()
    assert await backend.stream(MESSAGES, GREEDY).text() == await reference.stream(MESSAGES, GREEDY).text()


async def test_genai_int4_restores_the_exact_grid_and_generates(prepared: dict[str, Any], cache: Path) -> None:
    spec, said = prepared["genai-int4"]
    assert any("exact 4-bit grid" in msg for msg in said)
    backend = await _started(spec, cache)
    stream = backend.stream(MESSAGES, GREEDY)
    assert await stream.text()
    assert backend.last_run is not None and backend.last_run.generated_tokens == GREEDY.max_new_tokens


# -- streaming, providers, cancellation ------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["optimum-fp32", "genai-fp32"])
async def test_streams_pieces_with_timings(prepared: dict[str, Any], cache: Path, variant: str) -> None:
    spec, _ = prepared[variant]
    backend = await _started(spec, cache)
    stream = backend.stream(MESSAGES, GREEDY)
    pieces = [p async for p in stream]
    assert len(pieces) > 1 and all(pieces)
    t = stream.timings
    assert t.first_token_s is not None and t.total_s is not None and 0 < t.first_token_s <= t.total_s
    assert t.tokens == len(pieces)
    assert stream.provider == backend.provider and stream.model == str(spec.source)
    assert backend.last_run is not None
    assert backend.last_run.finish_reason == "length" and backend.last_run.generated_tokens == 24


@pytest.mark.parametrize(
    ("variant", "expected"),
    [("optimum-fp32", "onnxruntime:CPUExecutionProvider"), ("genai-fp32", "onnxruntime:CPUExecutionProvider")],
)
async def test_cuda_first_falls_back_to_cpu_and_says_so(
    prepared: dict[str, Any], cache: Path, caplog: pytest.LogCaptureFixture, variant: str, expected: str
) -> None:
    spec, _ = prepared[variant]
    assert spec.providers[0] == "CUDAExecutionProvider"
    with caplog.at_level(logging.INFO, logger="inference.backends.onnx"):
        backend = await _started(spec, cache)
    assert backend.provider == expected
    line = next(r for r in caplog.records if "running on" in r.getMessage())
    assert expected in line.getMessage() and "asked for CUDAExecutionProvider" in line.getMessage()
    assert line.levelno == logging.WARNING  # not what was asked for first


def _join_generation_threads() -> None:
    for thread in threading.enumerate():
        if thread.name.startswith("switchboard-"):
            thread.join(timeout=30)
            assert not thread.is_alive(), f"{thread.name} did not stop"


@pytest.mark.parametrize("variant", ["optimum-fp32", "genai-fp32"])
async def test_closing_the_stream_stops_generation(prepared: dict[str, Any], cache: Path, variant: str) -> None:
    spec, _ = prepared[variant]
    backend = await _started(spec, cache)
    params = GenerationParams(max_new_tokens=1000)
    stream = backend.stream(MESSAGES, params)
    first = await stream.__anext__()
    assert first
    await stream.aclose()
    _join_generation_threads()  # waits on the threads themselves: no sleeping for time
    run = backend.last_run
    assert run is not None and run.finish_reason == "cancelled"
    assert 1 <= run.generated_tokens < params.max_new_tokens
    # The lock was released: the backend serves the next request.
    assert await backend.stream(MESSAGES, GenerationParams(max_new_tokens=3)).text()


async def test_stop_string_cuts_the_answer(prepared: dict[str, Any], cache: Path) -> None:
    spec, _ = prepared["genai-fp32"]
    backend = await _started(spec, cache)
    full = await backend.stream(MESSAGES, GREEDY).text()
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = await backend.stream(MESSAGES, GenerationParams(max_new_tokens=24, stop=(stop,))).text()
    assert cut == full[: full.index(stop)]
    assert backend.last_run is not None and backend.last_run.finish_reason == "stop_string"


async def test_count_tokens_and_context_window(prepared: dict[str, Any], cache: Path) -> None:
    spec, _ = prepared["genai-fp32"]
    backend = OnnxBackend("tiny-onnx", spec.model_copy(update={"context_window": 512}), cache)
    assert backend.context_window == 512
    await backend.start()
    tokenizer = backend._tokenizer
    text = "The capital of France is Paris."
    assert backend.count_tokens(text) == len(tokenizer(text, add_special_tokens=False)["input_ids"])


# -- the exact-grid rewrite, on one MatMulNBits node -------------------------------------------------------


def _one_matmul_model(path: Path, k: int, n: int) -> None:
    """A genai-style graph: y = MatMulNBits(x) named like a builder layer, fp32 activations."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nb = k // 32
    node = helper.make_node(
        "MatMulNBits", ["x", "B", "scales"], ["y"], name="/model/layers.0/mlp/down_proj/MatMul_Q4",
        domain="com.microsoft", K=k, N=n, bits=4, block_size=32, accuracy_level=1,
    )  # fmt: skip
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, n])],
        [numpy_helper.from_array(np.zeros((n, nb, 16), np.uint8), "B"),
         numpy_helper.from_array(np.ones((n * nb,), np.float32), "scales")],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)  # what onnxruntime reads
    onnx.save(model, str(path))


def _save_weight(directory: Path, w: np.ndarray) -> None:
    from safetensors.numpy import save_file

    save_file({"model.layers.0.mlp.down_proj.weight": w}, str(directory / "model.safetensors"))


def test_restore_q4_grid_reproduces_grid_weights_exactly(tmp_path: Path) -> None:
    import onnxruntime as ort

    k, n = 96, 8
    rng = np.random.default_rng(0)
    d = rng.uniform(0.01, 0.1, (n, k // 32, 1))
    m = rng.uniform(-0.5, 0.0, (n, k // 32, 1))
    q = rng.integers(0, 16, (n, k // 32, 32))
    q[..., 0], q[..., 1] = 0, 15  # Q4_1 maps each block's min to 0 and its max to 15
    w = (d * q + m).reshape(n, k).astype(np.float32)  # Q4_1-style: d * q + m per block of 32
    _save_weight(tmp_path, w)
    model = tmp_path / "model.onnx"
    _one_matmul_model(model, k, n)
    assert restore_q4_grid(model, tmp_path, lambda _: None)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = rng.standard_normal((1, 1, k)).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-4, atol=1e-4)


def test_restore_q4_grid_leaves_off_grid_weights_alone(tmp_path: Path) -> None:
    k, n = 64, 4
    _save_weight(tmp_path, np.random.default_rng(1).standard_normal((n, k)).astype(np.float32))
    model = tmp_path / "model.onnx"
    _one_matmul_model(model, k, n)
    before = model.read_bytes()
    assert not restore_q4_grid(model, tmp_path, lambda _: None)
    assert model.read_bytes() == before


# -- structured output: genai's built-in guidance, optimum through the logits processor ----------------

CHOICE = Constraint("choice", choices=("apple", "banana split", "cherry"))
CODE = Constraint("regex", pattern=r"[0-9]{3}-[a-z]{2}")
RECORD = Constraint(
    "json_schema",
    schema={
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}, "tag": {"enum": ["a", "b"]}},
        "required": ["n", "tag"],
        "additionalProperties": False,
    },
)


@pytest.mark.parametrize("variant", ["genai-fp32", "optimum-fp32"])
@pytest.mark.parametrize("constraint", [CHOICE, CODE, RECORD], ids=lambda c: c.kind)
async def test_a_random_model_still_obeys_the_constraint(
    prepared: dict[str, Any], cache: Path, variant: str, constraint: Constraint
) -> None:
    # The tiny model never picks EOS by itself: a valid, finished answer is the grammar's doing.
    spec, _ = prepared[variant]
    backend = await _started(spec, cache)
    text = await backend.stream(MESSAGES, GenerationParams(max_new_tokens=40, constraint=constraint)).text()
    validate(constraint, text)
    assert backend.last_run is not None and backend.last_run.finish_reason == "eos"


async def test_genai_raw_prompt_has_no_chat_template(prepared: dict[str, Any], cache: Path, tiny: Path) -> None:
    from transformers import AutoTokenizer

    spec, _ = prepared["genai-fp32"]
    backend = await _started(spec, cache)
    await backend.stream(MESSAGES, GenerationParams(max_new_tokens=2, raw=True)).text()
    expected = AutoTokenizer.from_pretrained(tiny)("Be brief.\n\nName three fruits.")["input_ids"]
    assert backend.last_run is not None and backend.last_run.prompt_tokens == len(expected)


async def test_genai_refuses_a_grammar_it_cannot_compile_as_a_schema_error(
    prepared: dict[str, Any], cache: Path
) -> None:
    spec, _ = prepared["genai-fp32"]
    backend = await _started(spec, cache)
    bad = Constraint("regex", pattern="(?=x)y")  # check_schema refuses it; a caller that skipped it gets this
    with pytest.raises(SchemaError, match="cannot enforce"):
        await backend.stream(MESSAGES, GenerationParams(constraint=bad)).text()
