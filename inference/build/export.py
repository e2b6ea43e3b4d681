"""Export catalogue models to ONNX once, ahead of time (``python -m bot models prepare``).

Each :class:`~inference.catalogue.OnnxModel` gets its own directory under ``<cache>/onnx/``, named
from its source, runtime, precision and target device. The directory is built under a temporary name
and renamed into place, and a marker file is written last, so a half-finished export is never used
and a second call does no work.

Runtimes:

- ``genai``: onnxruntime-genai's model builder (a subprocess; about 7 s for SmolLM2-135M). Its C++
  generation loop is what makes ONNX Runtime fast for a small model.
- ``optimum``: ``optimum.exporters.onnx`` with ``text-generation-with-past`` (about 40-60 s), run by
  ``ORTModelForCausalLM``.

Precisions: ``fp32``; ``fp16`` (needs a GPU at export time with optimum; the genai builder writes
fp16 graphs itself); ``int4`` weight-only (MatMulNBits); ``int8`` dynamic per-channel quantization
of the fp32 graph.

- genai int4 is the builder's int4 with the LM head in int8 (``rtn_last``) and, when the source
  weights lie on a 4-bit block grid (GGUF Q4_1, as SmolLM2's do), that exact grid restored instead of
  a second rounding (:func:`restore_q4_grid`): far closer to the fp32 answers at ~80 % of the speed.
- genai ``int4-exact`` (CPU default for SmolLM2) keeps the source's own grids exactly and computes in fp32:
  the GGUF's 4-bit blocks (Q4_1) in MatMulNBits at accuracy level 1 (fp32 activations) and its 8-bit
  head/embedding table (Q8_0) restored exactly, with the head's top candidates rescored in fp32
  (:func:`restore_q8_head`). Greedy answers identical to PyTorch on the dequantized weights, at a
  third of the fp32 export's memory traffic. Needs a source on those grids (GGUF-derived).
- optimum int4 is ONNX Runtime's plain round-to-nearest quantizer.
- int8 is allowed but not recommended for SmolLM2: its weights are already 4-bit, and quantizing
  them again to int8 with per-channel scales changes the answers a lot (see bench/small_tier.py).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inference.artifacts import (
    EXPORT_FORMAT,
    MARKER,
    TOKENIZER_DIR,
    Target,
    export_dir,
    export_target,
    is_complete,
    is_hub_id,
)
from inference.build.sources import hf_dir
from inference.catalogue import ImageToTextModel, OnnxModel
from inference.errors import ConfigError

log = logging.getLogger(__name__)

#: The exact-grid int4 precision (see the module docstring).
EXACT = "int4-exact"

Progress = Callable[[str], None]


class ExportError(RuntimeError):
    """The exporter failed; the message ends with the tail of its output."""


def prepare_onnx(
    spec: OnnxModel,
    cache_dir: Path,
    progress: Progress | None = None,
    *,
    out: Path | None = None,
    tuned_int4: bool = True,
) -> Path:
    """Export ``spec`` for its runtime and precision into the cache; return the export directory.

    Idempotent: when the marker file is there, nothing is done. ``out`` overrides the directory and
    ``tuned_int4=False`` keeps the genai builder's plain int4 (no int8 head, no exact-grid restore);
    both are for benchmarks comparing exports.
    """
    say = progress or (lambda msg: log.info("%s", msg))
    out = out or export_dir(spec, cache_dir)
    if is_complete(out):
        say(f"already prepared: {out}")
        return out
    target = export_target(spec)
    if spec.runtime == "optimum" and spec.precision == EXACT:
        raise ConfigError(f"precision {EXACT} needs runtime genai (optimum has no exact-grid export); use int4")
    if spec.runtime == "optimum" and spec.precision == "fp16" and target != "cuda":
        raise ConfigError(
            "precision fp16 with runtime optimum needs a CUDA GPU at export time; "
            "use fp32 (or int4) on CPU, or runtime genai"
        )
    say(f"resolving source {spec.source}")
    source = hf_dir(spec.source, cache_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A per-process temporary name: two concurrent prepares never write into one directory.
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    try:
        say(f"exporting {spec.source} with {spec.runtime} ({spec.precision}, {target}) -> {out.name}")
        if spec.runtime == "genai":
            _export_genai(spec, source, tmp, target, cache_dir, say, tuned_int4=tuned_int4)
        else:
            _export_optimum(spec, source, tmp, target, say)
        _save_tokenizer(spec, source, tmp / TOKENIZER_DIR)
        marker = {
            "format": EXPORT_FORMAT,
            "source": spec.source,
            "revision": spec.revision,
            "runtime": spec.runtime,
            "precision": spec.precision,
            "target": target,
            "tuned_int4": tuned_int4 if spec.precision == "int4" else None,
            "exact_grid": spec.precision == EXACT,
            "seconds": round(time.perf_counter() - started, 1),
        }
        # Written last: its presence means every file before it is complete.
        (tmp / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)  # a leftover without a marker (it failed the check above)
        try:
            tmp.replace(out)
        except OSError:
            if not is_complete(out):  # another process finished first: keep its export
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"prepared {out} in {time.perf_counter() - started:.1f} s")
    return out


def _save_tokenizer(spec: OnnxModel, source: str, dest: Path) -> None:
    """Keep the transformers tokenizer and generation config beside the graph: the backends encode
    with it (onnxruntime-genai's tokenizer mis-decodes GGUF-derived SmolLM2) and start without the
    original weights."""
    from transformers import AutoTokenizer, GenerationConfig

    AutoTokenizer.from_pretrained(source, revision=spec.revision).save_pretrained(dest)
    try:
        GenerationConfig.from_pretrained(source, revision=spec.revision or "main").save_pretrained(dest)
    except OSError:
        log.debug("%s has no generation_config.json", source)


def _local_dir(spec: OnnxModel, source: str, cache_dir: Path) -> str:
    """The genai builder reads a directory; a hub id is downloaded first (with its revision)."""
    if not is_hub_id(source):
        return source
    from huggingface_hub import snapshot_download

    return snapshot_download(source, revision=spec.revision, cache_dir=str(cache_dir / "hub"))


def _export_genai(
    spec: OnnxModel,
    source: str,
    tmp: Path,
    target: Target,
    cache_dir: Path,
    say: Progress,
    *,
    tuned_int4: bool = True,
) -> None:
    # The builder has no int8 (the fp32 graph quantized afterwards) and no exact int4 (its int4, rewritten).
    exact = spec.precision == EXACT
    precision = {"int8": "fp32", EXACT: "int4"}.get(spec.precision, spec.precision)
    local = _local_dir(spec, source, cache_dir)
    work = tmp.with_name(tmp.name + "-builder-cache")
    cmd = [
        sys.executable, "-m", "onnxruntime_genai.models.builder",
        "-i", local, "-o", str(tmp), "-p", precision, "-e", target, "-c", str(work),
    ]  # fmt: skip
    if precision == "int4" and (tuned_int4 or exact):
        # rtn_last: the LM head (and the embedding sharing its weights) in int8 rather than int4.
        # The head is the layer int4 hurts most; this also halves the file (one shared int8 table).
        cmd += ["--extra_options", "int4_algo_config=rtn_last"]
    say("running onnxruntime-genai model builder")
    try:
        _run(cmd)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if spec.precision == "int8":
        _quantize_int8(tmp / "model.onnx", say)
    elif exact:
        _make_exact(tmp / "model.onnx", Path(local), say)
    elif spec.precision == "int4" and tuned_int4:
        restore_q4_grid(tmp / "model.onnx", Path(local), say)


def _make_exact(model: Path, source: Path, say: Progress) -> None:
    """The int4-exact rewrite of a genai int4 (rtn_last) export; refuses a source off the grids."""
    # Accuracy level 1: fp32 activations. Level 4 (the builder's CPU default) quantizes every
    # activation block to int8, which alone changed most of SmolLM2's greedy answers.
    if not restore_q4_grid(model, source, say, accuracy_level=1):
        raise ExportError(
            f"precision {EXACT} needs decoder weights on a 4-bit block grid (a GGUF Q4_1 or Q4_0 source, "
            "like packaged:smollm2); this source is not: use precision fp32 or int4"
        )
    if not restore_q8_head(model, source, say):
        raise ExportError(
            f"precision {EXACT} needs the LM head on an 8-bit block grid (GGUF Q8_0, like packaged:smollm2); "
            "this source's is not: use precision fp32 or int4"
        )


def _run(cmd: list[str]) -> None:
    # The builder prints a progress bar per tensor: keep its output out of the user's terminal
    # and show only the tail when it fails.
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        hint = ""
        if "No module named 'onnx_ir'" in tail:
            hint = " (pip install onnx-ir: the genai builder needs it)"
        raise ExportError(f"{' '.join(cmd[:4])} failed with exit status {proc.returncode}{hint}:\n{tail}")


def prepare_image_to_text(spec: ImageToTextModel, cache_dir: Path, progress: Progress | None = None) -> Path | None:
    """Export an image-to-text model (a VisionEncoderDecoder: encoder, decoder and decoder-with-past graphs, with
    its tokenizer and image processor beside them) with optimum for ``ORTModelForVision2Seq``; return the export
    directory (inference.backends.vision), or None when its hub id can't be downloaded (offline): the backend
    then says it is not prepared. Idempotent, built under a temporary name with the marker written last."""
    from optimum.exporters.onnx import main_export

    from inference.backends.vision import vision_export_dir

    say = progress or (lambda msg: log.info("%s", msg))
    out = vision_export_dir(spec, cache_dir)
    if is_complete(out):
        say(f"already prepared: {out}")
        return out
    source = _vision_source(spec, cache_dir, say)
    if source is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    try:
        say(f"exporting {spec.source} (image-to-text, {spec.precision}) -> {out.name}")
        try:
            main_export(
                source,
                tmp,
                task="image-to-text-with-past",
                device="cpu",  # fp32 graphs run on CPU and CUDA alike
                trust_remote_code=False,
                do_validation=False,  # re-runs the model on random inputs: slow, and the tests caption anyway
            )
        except (OSError, ValueError, KeyError) as exc:  # not an encoder-decoder optimum knows, missing files
            raise ExportError(f"{spec.source} could not be exported as an image-to-text model: {exc}") from exc
        marker = {"format": EXPORT_FORMAT, "source": spec.source, "revision": spec.revision, "kind": spec.kind}
        marker |= {"precision": spec.precision, "seconds": round(time.perf_counter() - started, 1)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)  # a leftover without a marker
        try:
            tmp.replace(out)
        except OSError:
            if not is_complete(out):  # another process finished first: keep its export
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"prepared {out} in {time.perf_counter() - started:.1f} s")
    return out


def _vision_source(spec: ImageToTextModel, cache_dir: Path, say: Progress) -> str | None:
    """A local directory to export from: the source itself, or its hub download (None when none can be had)."""
    path = Path(spec.source).expanduser()
    if not is_hub_id(spec.source):
        if not (path / "config.json").is_file():
            raise ConfigError(f"{spec.source}: no model directory there (config.json not found)")
        return str(path)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    from inference.artifacts import hub_cache

    say(f"downloading {spec.source}")
    try:
        # Config, tokenizer, image processor and weights (safetensors or PyTorch .bin, whichever it has).
        return str(
            snapshot_download(
                spec.source,
                revision=spec.revision,
                cache_dir=hub_cache(cache_dir),
                allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors", "*.bin"],
                ignore_patterns=["*.msgpack", "*.h5", "onnx/*"],
            )
        )
    except (HfHubHTTPError, OSError, ValueError) as exc:  # offline, unknown repository, gated model
        log.warning("%s could not be downloaded (no model hub reachable?): %s", spec.source, exc)
        return None


def _export_optimum(spec: OnnxModel, source: str, tmp: Path, target: Target, say: Progress) -> None:
    from optimum.exporters.onnx import main_export

    fp16 = spec.precision == "fp16"
    main_export(
        source,
        tmp,
        task="text-generation-with-past",
        revision=spec.revision or "main",
        device="cuda" if fp16 else "cpu",
        dtype="fp16" if fp16 else None,
        trust_remote_code=False,
        # Validation re-runs the model on random inputs: slow, and the tests compare outputs anyway.
        do_validation=False,
    )
    model = tmp / "model.onnx"
    if spec.precision == "int8":
        _quantize_int8(model, say)
    elif spec.precision == "int4":
        _quantize_int4(model, target, say)


def _quantize_int8(model: Path, say: Progress) -> None:
    """Dynamic int8, per channel: per-tensor scales lose far more accuracy on these weights."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    say("quantizing to int8 (dynamic, per channel)")
    quantized = model.with_name("model.int8.onnx")
    external = (model.parent / (model.name + ".data")).exists()
    quantize_dynamic(model, quantized, per_channel=True, weight_type=QuantType.QInt8, use_external_data_format=external)
    _swap_in(model, quantized)


def _quantize_int4(model: Path, target: Target, say: Progress) -> None:
    """Weight-only int4 (MatMulNBits, blocks of 32) as the genai builder does it."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    say("quantizing to int4 (weight-only, MatMulNBits)")
    # Accuracy level 4 (int8 activations) is the builder's CPU default and the fast CPU kernel.
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(model)), block_size=32, is_symmetric=True, accuracy_level=4 if target == "cpu" else None
    )
    quantizer.process()
    quantized = model.with_name("model.int4.onnx")
    quantizer.model.save_model_to_file(str(quantized), use_external_data_format=False)
    _swap_in(model, quantized)


def _swap_in(model: Path, quantized: Path) -> None:
    """Replace ``model.onnx`` by its quantized version (runtimes look for that name).

    A quantized graph with external data keeps referring to its own data file (``model.int8.onnx.data``),
    which stays where it is.
    """
    for stale in model.parent.glob(model.name + "*"):  # model.onnx, model.onnx.data, model.onnx_data
        stale.unlink()
    quantized.replace(model)


# -- int4 without a second rounding -------------------------------------------------------------------
#
# SmolLM2 arrives as GGUF Q4_1: every block of 32 weights along the input dimension is d * q + m with
# q in 0..15. Re-quantizing those dequantized weights with round-to-nearest int4 rounds them a second
# time onto a different grid (symmetric, no offset), and the answers drift far from the original
# model's. When the weights lie on such a grid, the exact q and d can be read back. MatMulNBits has
# no fractional zero point on its fast path, so the offset goes into a small correction:
#
#     W x = sum_b d_b (q_b - 8) x_b  +  sum_b (8 d_b + m_b) * sum(x_b)
#
# i.e. the usual symmetric MatMulNBits plus (block sums of x) @ C, C[n, b] = 8 d + m: one Reshape and
# ReduceSum per distinct input and one small MatMul (K/32 x N) + Add per linear layer.
# Measured on SmolLM2 (20 prompts, greedy, vs the fp32 export): mean common prefix 18 tokens instead
# of 3.5, first token the same in 19/20 answers instead of 12/20, at about 80 % of plain int4 speed.

_LAYER_NODE = re.compile(r"^/model/layers\.(\d+)/(attn|mlp)/(\w+)/MatMul")


def restore_q4_grid(model_path: Path, hf_dir_path: Path, say: Progress, *, accuracy_level: int | None = None) -> bool:
    """Rewrite the int4 MatMulNBits weights of a genai export with the source's exact 4-bit grid.

    ``accuracy_level`` (when given) is set on the rewritten nodes: 1 keeps activations in fp32.
    Returns False (and leaves the model as the builder wrote it) when the source weights are not on
    a 4-bit block grid, are not in safetensors, or the graph is not laid out as expected.
    """
    import numpy as np

    try:
        weights = _SafetensorsWeights(hf_dir_path)
    except (OSError, ValueError) as exc:
        log.info("no exact int4 restore: %s", exc)
        return False
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path))
    inits = {init.name: init for init in model.graph.initializer}
    plan = []
    for node in model.graph.node:
        if node.op_type != "MatMulNBits" or node.name.startswith("/lm_head"):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        try:
            w = _hf_linear(weights, node.name)
        except (TypeError, ValueError) as exc:  # e.g. bfloat16 tensors, which numpy cannot hold
            log.info("no exact int4 restore: %s", exc)
            return False
        if w is None or attrs.get("bits") != 4 or len(node.input) != 3:
            log.info("no exact int4 restore: unexpected node %s", node.name)
            return False
        grid = _q4_grid(w, int(attrs["block_size"]))
        if grid is None:
            log.info("no exact int4 restore: %s is not on a 4-bit block grid", node.name)
            return False
        plan.append((node, grid))
    if not plan:
        return False
    say(f"restoring the source's exact 4-bit grid in {len(plan)} layers")
    new_nodes: list[Any] = []
    new_inits: list[Any] = []
    block_sums: dict[str, str] = {}
    planned = {id(node): grid for node, grid in plan}
    for node in list(model.graph.node):
        new_nodes.append(node)
        grid = planned.get(id(node))
        if grid is None:
            continue
        q, d, lo = grid  # [N, nb, bs] ints, [N, nb] steps, [N, nb] offsets
        _, nb, bs = q.shape
        b_init, s_init = inits[node.input[1]], inits[node.input[2]]
        dtype = numpy_helper.to_array(s_init).dtype  # float32 for CPU exports, float16 for CUDA
        packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)  # low nibble first
        b_init.CopyFrom(numpy_helper.from_array(packed.reshape(tuple(b_init.dims)), b_init.name))
        s_init.CopyFrom(numpy_helper.from_array(d.astype(dtype).reshape(tuple(s_init.dims)), s_init.name))
        if accuracy_level is not None:
            _set_attribute(node, "accuracy_level", accuracy_level)
        x = node.input[0]
        if x not in block_sums:  # q/k/v and gate/up read the same input: sum its blocks once
            shape, axes, summed = f"{x}/q4_shape", f"{x}/q4_axes", f"{x}/q4_block_sums"
            new_inits += [
                numpy_helper.from_array(np.array([0, 0, nb, bs], np.int64), shape),
                numpy_helper.from_array(np.array([-1], np.int64), axes),
            ]
            new_nodes += [
                helper.make_node("Reshape", [x, shape], [f"{x}/q4_blocks"], name=f"{x}/q4_Reshape"),
                helper.make_node("ReduceSum", [f"{x}/q4_blocks", axes], [summed], name=f"{x}/q4_ReduceSum", keepdims=0),
            ]
            block_sums[x] = summed
        corr = f"{node.input[1]}_q4_offset"
        new_inits.append(numpy_helper.from_array(np.ascontiguousarray((8 * d + lo).T.astype(dtype)), corr))
        y = node.output[0]
        node.output[0] = f"{y}_q4_raw"
        new_nodes += [
            helper.make_node("MatMul", [block_sums[x], corr], [f"{y}_q4_offset"], name=f"{node.name}_q4_offset"),
            helper.make_node("Add", [f"{y}_q4_raw", f"{y}_q4_offset"], [y], name=f"{node.name}_q4_add"),
        ]
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    model.graph.initializer.extend(new_inits)
    _save(model, model_path)
    return True


def _save(model: Any, model_path: Path) -> None:
    import onnx

    for stale in model_path.parent.glob(model_path.name + "*"):
        stale.unlink()  # everything is in memory now; rewrite graph and data together
    onnx.save(
        model, str(model_path), save_as_external_data=True, all_tensors_to_one_file=True,
        location=model_path.name + ".data",
    )  # fmt: skip


def _set_attribute(node: Any, name: str, value: int) -> None:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            attr.i = value
            return
    node.attribute.append(helper.make_attribute(name, value))


# -- the LM head on its exact 8-bit grid, rescored in fp32 ----------------------------------------------
#
# SmolLM2's GGUF stores the tied embedding/LM head as Q8_0: blocks of 32, w = d * q, q in -127..127.
# That grid fits MatMulNBits' 8-bit layout exactly (stored q + 128, the default zero point). But the
# only fast 8-bit kernel quantizes the activations to int8 too (accuracy level 4; level 1 falls back to
# dequantizing 28M weights per token, ~20x slower), and those rounding errors flip the argmax often
# enough to change greedy answers; an fp32 head reads 113 MB per token. So the head runs at level 4 and
# its top ``candidates`` logits are then recomputed exactly (the same int8 rows gathered and dotted
# with the fp32 hidden state) and written back: the argmax is exact whenever the true best token is
# among the approximate top candidates (its logit error is a small fraction of the gap to the 8th).

#: Candidates rescored per position: 8 * 576 multiply-adds against 28M for the whole head.
RESCORE_CANDIDATES = 8


def restore_q8_head(
    model_path: Path, hf_dir_path: Path, say: Progress, *, candidates: int = RESCORE_CANDIDATES
) -> bool:
    """Put the source's exact 8-bit grid into a genai export's int8 LM head (and the embedding table it
    shares), and rescore the head's top ``candidates`` in fp32.

    Returns False (model untouched) when there is no 8-bit head, or its weights are not on a symmetric
    8-bit block grid.
    """
    import numpy as np

    try:
        weights = _SafetensorsWeights(hf_dir_path)
    except (OSError, ValueError) as exc:
        log.info("no exact int8 head: %s", exc)
        return False
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(model_path))
    graph = model.graph
    head = next((n for n in graph.node if n.op_type == "MatMulNBits" and n.name.startswith("/lm_head")), None)
    if head is None or len(head.input) != 3:
        log.info("no exact int8 head: no 8-bit /lm_head MatMulNBits without zero points")
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in head.attribute}
    name = next((n for n in ("lm_head.weight", "model.embed_tokens.weight") if n in weights), None)
    if attrs.get("bits") != 8 or name is None:
        log.info("no exact int8 head: unexpected head %s", head.name)
        return False
    try:
        grid = _q8_grid(weights[name], int(attrs["block_size"]))
    except (TypeError, ValueError) as exc:
        log.info("no exact int8 head: %s", exc)
        return False
    if grid is None:
        log.info("no exact int8 head: %s is not on an 8-bit block grid", name)
        return False
    q, d = grid
    say(f"restoring the source's exact 8-bit LM head ({name}), top {candidates} rescored in fp32")
    inits = {init.name: init for init in graph.initializer}
    b_init, s_init = inits[head.input[1]], inits[head.input[2]]
    dtype = numpy_helper.to_array(s_init).dtype
    b_init.CopyFrom(numpy_helper.from_array((q + 128).astype(np.uint8).reshape(tuple(b_init.dims)), b_init.name))
    # [N, blocks]: GatherBlockQuantized (the rescoring, the embedding) wants scales of the table's rank.
    s_init.CopyFrom(numpy_helper.from_array(d.astype(dtype), s_init.name))
    _set_attribute(head, "accuracy_level", 4)  # the fast int8 kernel; the rescoring makes up for it
    n_rows, k = int(attrs["N"]), int(attrs["K"])
    nodes = list(graph.node)
    # The embedding's GatherBlockQuantized reads the same table through a Reshape to [V, K]: reuse it.
    table = next((n.output[0] for n in nodes if n.op_type == "Reshape" and n.input[0] == head.input[1]), None)
    pre = "/lm_head/rescore"
    new_nodes: list[Any] = []
    new_inits = [
        numpy_helper.from_array(np.array([candidates], np.int64), f"{pre}/k"),
        numpy_helper.from_array(np.array([-2], np.int64), f"{pre}/axis_-2"),
        numpy_helper.from_array(np.array([-1], np.int64), f"{pre}/axis_-1"),
    ]
    if table is None:
        new_inits.append(numpy_helper.from_array(np.array([n_rows, k], np.int64), f"{pre}/table_shape"))
        table = f"{pre}/table"
        new_nodes.append(
            helper.make_node("Reshape", [head.input[1], f"{pre}/table_shape"], [table], name=f"{pre}/Reshape")
        )
    hidden, logits = head.input[0], head.output[0]
    approx = f"{pre}/approx_logits"
    head.output[0] = approx
    top, ids, rows, exact = f"{pre}/top_values", f"{pre}/top_ids", f"{pre}/rows", f"{pre}/exact"
    quantized: dict[str, Any] = {"domain": "com.microsoft", "bits": 8, "block_size": int(attrs["block_size"])}
    new_nodes += [
        helper.make_node("TopK", [approx, f"{pre}/k"], [top, ids], axis=-1, name=f"{pre}/TopK"),
        helper.make_node(
            "GatherBlockQuantized",
            [table, ids, head.input[2]],
            [rows],
            name=f"{pre}/Gather",
            gather_axis=0,
            quantize_axis=1,
            **quantized,
        ),
        helper.make_node("Unsqueeze", [hidden, f"{pre}/axis_-2"], [f"{pre}/hidden"], name=f"{pre}/Unsqueeze"),
        helper.make_node("Mul", [rows, f"{pre}/hidden"], [f"{pre}/products"], name=f"{pre}/Mul"),
        helper.make_node("ReduceSum", [f"{pre}/products", f"{pre}/axis_-1"], [exact], keepdims=0, name=f"{pre}/Sum"),
        helper.make_node("ScatterElements", [approx, ids, exact], [logits], axis=-1, name=f"{pre}/Scatter"),
    ]
    at = nodes.index(head) + 1
    nodes[at:at] = new_nodes
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    _save(model, model_path)
    return True


def _q8_grid(w: Any, block: int) -> tuple[Any, Any] | None:
    """(q, d) with ``w == d * q``, q in -127..127 per block of ``block`` inputs (GGUF Q8_0), or None."""
    import numpy as np

    n_out, k = w.shape
    if k % block:
        return None
    blocks = w.astype(np.float64).reshape(n_out, k // block, block)
    d = np.abs(blocks).max(-1) / 127  # Q8_0 maps each block's largest magnitude to +-127
    d[d == 0] = 1.0
    q = np.rint(blocks / d[..., None])
    err = np.abs(q * d[..., None] - blocks).max(-1)
    if np.any(err > 1e-3 * d):  # on the grid only float rounding remains; off it, up to d / 2
        return None
    return q.astype(np.int16), d


def _q4_grid(w: Any, block: int) -> tuple[Any, Any, Any] | None:
    """(q, d, lo) with ``w == d * q + lo`` per block of ``block`` inputs, or None when w is off-grid."""
    import numpy as np

    n_out, k = w.shape
    if k % block or block % 2:
        return None
    blocks = w.astype(np.float64).reshape(n_out, k // block, block)
    lo, hi = blocks.min(-1), blocks.max(-1)
    d = (hi - lo) / 15
    d[d == 0] = 1.0  # a constant block: q = 0 everywhere, the offset carries the value
    q = np.rint((blocks - lo[..., None]) / d[..., None])
    err = np.abs(q * d[..., None] + lo[..., None] - blocks).max(-1)
    # On the grid, reconstruction is exact up to float32 rounding; off it, errors reach d / 2.
    if np.any(err > 1e-3 * d):
        return None
    return q.astype(np.uint8), d, lo


def _hf_linear(weights: _SafetensorsWeights, node_name: str) -> Any:
    """The HF weight ([out, in]) behind a genai builder node; q/k/v are fused in that order."""
    import numpy as np

    m = _LAYER_NODE.match(node_name)
    if m is None:
        return None
    layer, _, kind = m.groups()
    prefix = f"model.layers.{layer}"
    names = {
        "qkv_proj": [f"{prefix}.self_attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj")],
        "q_proj": [f"{prefix}.self_attn.q_proj.weight"],
        "k_proj": [f"{prefix}.self_attn.k_proj.weight"],
        "v_proj": [f"{prefix}.self_attn.v_proj.weight"],
        "o_proj": [f"{prefix}.self_attn.o_proj.weight"],
        "gate_proj": [f"{prefix}.mlp.gate_proj.weight"],
        "up_proj": [f"{prefix}.mlp.up_proj.weight"],
        "down_proj": [f"{prefix}.mlp.down_proj.weight"],
    }.get(kind)
    if names is None or not all(n in weights for n in names):
        return None
    return np.concatenate([weights[n] for n in names], axis=0)


class _SafetensorsWeights:
    """Tensors by name across a model directory's (possibly sharded) safetensors files."""

    def __init__(self, directory: Path) -> None:
        from safetensors import safe_open

        files = sorted(directory.glob("*.safetensors"))
        if not files:
            raise ValueError(f"no safetensors weights in {directory}")
        self._handles = [safe_open(str(f), framework="np") for f in files]
        self._where = {name: h for h in self._handles for name in h.keys()}

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def __getitem__(self, name: str) -> Any:
        return self._where[name].get_tensor(name)
