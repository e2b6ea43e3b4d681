"""Set-up step: the packaged all-MiniLM-L6-v2 as an int8 ONNX sentence encoder for the knowledge base.

optimum's ``feature-extraction`` export with transformers library semantics (the plain BERT graph giving
``last_hidden_state``; mean pooling and normalisation happen in numpy at run time), then int8 per-channel
dynamic quantization, as for the task classifier. Run time (``inference.knowledge.embedder``) needs only
onnxruntime, tokenizers and numpy. Idempotent: a marker file, written last, says the export is complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from inference.artifacts import EMBEDDER_FORMAT, MARKER, embedder_dir, minilm_dir

log = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "config.json")


def embedder_ready(cache_dir: Path) -> bool:
    try:
        marker = json.loads((embedder_dir(cache_dir) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(marker.get("format") == EMBEDDER_FORMAT)


def prepare_embedder(cache_dir: Path, progress: Callable[[str], None] | None = None) -> Path:
    """Export and quantize the embedder into ``embedder_dir(cache_dir)``; return that directory."""
    say = progress or (lambda msg: log.info("%s", msg))
    out = embedder_dir(cache_dir)
    if embedder_ready(cache_dir):
        say(f"already prepared: {out}")
        return out
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from optimum.exporters.onnx import main_export

    source = minilm_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    try:
        say("exporting all-MiniLM-L6-v2 to ONNX (feature-extraction)")
        main_export(
            str(source),
            output=str(tmp / "fp32"),
            task="feature-extraction",
            library_name="transformers",
            do_validation=False,
        )
        say("quantizing the embedder to int8 (dynamic, per channel)")
        quantize_dynamic(tmp / "fp32" / "model.onnx", tmp / "model.onnx", per_channel=True, weight_type=QuantType.QInt8)
        shutil.rmtree(tmp / "fp32")
        shutil.copyfile(source / "tokenizer.json", tmp / "tokenizer.json")
        marker = {"format": EMBEDDER_FORMAT, "source": "packaged:minilm", "precision": "int8"}
        marker["seconds"] = round(time.perf_counter() - started, 1)
        (tmp / MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        try:
            tmp.replace(out)
        except OSError:
            if not embedder_ready(cache_dir):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    say(f"prepared {out} in {time.perf_counter() - started:.1f} s")
    return out
