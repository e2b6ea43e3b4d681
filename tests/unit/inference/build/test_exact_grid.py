"""The int4-exact export: the source's own 4-bit and 8-bit grids, fp32 activations, identical greedy answers.

Synthetic single-node graphs check the rewrites bit for bit (within float rounding); a tiny llama on
GGUF-style grids checks the whole export against PyTorch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inference.artifacts import MARKER
from inference.build.export import ExportError, prepare_onnx, restore_q4_grid, restore_q8_head
from inference.catalogue import OnnxModel
from inference.errors import ConfigError
from tests.fakes.tiny_models import build_tiny_causal_lm

CPU = ("CPUExecutionProvider",)


def _model(path: Path, node: Any, k: int, n: int, inits: list[Any], out: str = "y") -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "seq", k])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, "seq", n])],
        inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=10), str(path))


def _q4_layer(path: Path, k: int, n: int) -> None:
    """A builder-style int4 layer at accuracy level 4 (int8 activations), as the builder writes it on CPU."""
    from onnx import helper, numpy_helper

    nb = k // 32
    node = helper.make_node(
        "MatMulNBits", ["x", "B", "scales"], ["y"], name="/model/layers.0/mlp/down_proj/MatMul_Q4",
        domain="com.microsoft", K=k, N=n, bits=4, block_size=32, accuracy_level=4,
    )  # fmt: skip
    inits = [
        numpy_helper.from_array(np.zeros((n, nb, 16), np.uint8), "B"),
        numpy_helper.from_array(np.ones((n * nb,), np.float32), "scales"),
    ]
    _model(path, node, k, n, inits)


def _q8_head(path: Path, k: int, n: int) -> None:
    """The builder's rtn_last LM head: 8-bit MatMulNBits writing the graph output ``logits``."""
    from onnx import helper, numpy_helper

    nb = k // 32
    node = helper.make_node(
        "MatMulNBits", ["x", "B", "scales"], ["logits"], name="/lm_head/MatMul_Q8",
        domain="com.microsoft", K=k, N=n, bits=8, block_size=32, accuracy_level=4,
    )  # fmt: skip
    inits = [
        numpy_helper.from_array(np.full((n, nb, 32), 128, np.uint8), "B"),
        numpy_helper.from_array(np.ones((n * nb,), np.float32), "scales"),
    ]
    _model(path, node, k, n, inits, out="logits")


def _q4_1(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Weights as GGUF Q4_1 stores them: d * q + m per block of 32, q in 0..15, fp16 d and m."""
    d = rng.uniform(0.01, 0.1, (n, k // 32, 1)).astype(np.float16).astype(np.float32)
    m = rng.uniform(-0.5, 0.0, (n, k // 32, 1)).astype(np.float16).astype(np.float32)
    q = rng.integers(0, 16, (n, k // 32, 32))
    q[..., 0], q[..., 1] = 0, 15  # Q4_1 maps each block's min to 0 and its max to 15
    return (d * q + m).reshape(n, k).astype(np.float32)


def _q8_0(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Weights as GGUF Q8_0 stores them: d * q per block of 32, q in -127..127 with +-127 reached."""
    d = rng.uniform(0.001, 0.05, (n, k // 32, 1)).astype(np.float16).astype(np.float32)
    q = rng.integers(-127, 128, (n, k // 32, 32))
    q[..., 0] = rng.choice([-127, 127], (n, k // 32))
    return (d * q).reshape(n, k).astype(np.float32)


def _save(directory: Path, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(directory / "model.safetensors"))


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=list(CPU))


def _attribute(path: Path, op: str, name: str) -> Any:
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if n.op_type == op)
    return next(helper.get_attribute_value(a) for a in node.attribute if a.name == name)


def test_q4_grid_at_accuracy_level_1_reproduces_the_float_product(tmp_path: Path) -> None:
    k, n = 128, 16
    rng = np.random.default_rng(0)
    w = _q4_1(rng, n, k)
    _save(tmp_path, {"model.layers.0.mlp.down_proj.weight": w})
    model = tmp_path / "model.onnx"
    _q4_layer(model, k, n)
    assert restore_q4_grid(model, tmp_path, lambda _: None, accuracy_level=1)
    assert _attribute(model, "MatMulNBits", "accuracy_level") == 1  # fp32 activations
    x = rng.standard_normal((1, 3, k)).astype(np.float32)
    (y,) = _session(model).run(None, {"x": x})
    # The exact weights in fp32 arithmetic: only summation order differs from x @ w.T.
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-5, atol=1e-5)


def test_q8_head_is_restored_exactly_and_its_top_logits_are_exact(tmp_path: Path) -> None:
    k, n = 96, 300
    rng = np.random.default_rng(1)
    w = _q8_0(rng, n, k)
    _save(tmp_path, {"lm_head.weight": w})
    model = tmp_path / "model.onnx"
    _q8_head(model, k, n)
    said: list[str] = []
    assert restore_q8_head(model, tmp_path, said.append, candidates=8)
    assert "top 8 rescored" in said[0]

    import onnx
    from onnx import numpy_helper

    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(model)).graph.initializer}
    dequantized = (stored["B"].astype(np.float32) - 128).reshape(n, k // 32, 32) * stored["scales"].reshape(n, -1, 1)
    np.testing.assert_allclose(dequantized.reshape(n, k), w, rtol=1e-6, atol=0)  # the grid, not a re-rounding

    x = rng.standard_normal((1, 5, k)).astype(np.float32)
    (logits,) = _session(model).run(None, {"x": x})
    exact = x @ w.T
    assert (logits.argmax(-1) == exact.argmax(-1)).all()
    top = np.argsort(-exact, axis=-1)[..., :4]
    np.testing.assert_allclose(
        np.take_along_axis(logits, top, -1), np.take_along_axis(exact, top, -1), rtol=1e-5, atol=1e-5
    )


def test_q8_head_leaves_off_grid_weights_alone(tmp_path: Path) -> None:
    k, n = 64, 40
    _save(tmp_path, {"lm_head.weight": np.random.default_rng(2).standard_normal((n, k)).astype(np.float32)})
    model = tmp_path / "model.onnx"
    _q8_head(model, k, n)
    before = model.read_bytes()
    assert not restore_q8_head(model, tmp_path, lambda _: None)
    assert model.read_bytes() == before


# -- the whole export on a tiny llama whose weights lie on GGUF grids ------------------------------------


def _snap_head_to_q8(directory: Path) -> None:
    from safetensors.numpy import load_file

    tensors = load_file(str(directory / "model.safetensors"))
    w = tensors["lm_head.weight"].astype(np.float64)
    blocks = w.reshape(w.shape[0], -1, 32)
    d = (np.abs(blocks).max(-1, keepdims=True) / 127).astype(np.float16).astype(np.float64)
    d[d == 0] = 1.0  # the special tokens' all-zero rows stay zero
    tensors["lm_head.weight"] = (np.clip(np.rint(blocks / d), -127, 127) * d).reshape(w.shape).astype(np.float32)
    _save(directory, tensors)


@pytest.fixture(scope="module")
def gridded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tiny = build_tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "llama", q4_grid=True)
    _snap_head_to_q8(tiny)
    return tiny


def _spec(source: Path, precision: str = "int4-exact", runtime: str = "genai") -> OnnxModel:
    return OnnxModel(source=str(source), tier="small", runtime=runtime, precision=precision, providers=CPU)  # type: ignore[arg-type]


def _greedy_torch(source: Path, ids: list[int], steps: int) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=steps, do_sample=False, eos_token_id=None)
    return [int(t) for t in out[0, len(ids) :]]


def _greedy_genai(export: Path, ids: list[int], steps: int) -> list[int]:
    import onnxruntime_genai as og

    model = og.Model(og.Config(str(export)))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(ids) + steps, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(ids, dtype=np.int32))
    out: list[int] = []
    while len(out) < steps and not generator.is_done():
        generator.generate_next_token()
        out.append(int(generator.get_next_tokens()[0]))
    return out


def test_int4_exact_export_answers_like_pytorch(gridded: Path, tmp_path: Path) -> None:
    import json

    said: list[str] = []
    out = prepare_onnx(_spec(gridded), tmp_path, said.append)
    assert any("exact 4-bit grid" in s for s in said) and any("exact 8-bit LM head" in s for s in said)
    assert json.loads((out / MARKER).read_text())["exact_grid"] is True
    assert _attribute(out / "model.onnx", "MatMulNBits", "accuracy_level") == 1
    ids = [5, 17, 42, 8, 99, 23]
    steps = 16  # the tiny model's EOS row is zero, so both run the full length
    assert _greedy_genai(out, ids, steps) == _greedy_torch(gridded, ids, steps)


def test_int4_exact_refuses_a_source_off_the_grid(tmp_path: Path) -> None:
    plain = build_tiny_causal_lm(tmp_path / "plain")
    with pytest.raises(ExportError, match="int4-exact needs decoder weights on a 4-bit block grid"):
        prepare_onnx(_spec(plain), tmp_path / "cache")


def test_int4_exact_needs_genai(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="int4-exact needs runtime genai"):
        prepare_onnx(_spec(tmp_path, runtime="optimum"), tmp_path / "cache")
