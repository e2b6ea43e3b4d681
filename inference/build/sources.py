"""Model sources at set-up time: bring a catalogue ``source`` into the cache where it needs building.

``packaged:smollm2`` ships as GGUF; it is dequantized once into a transformers directory (about 15 s). Where
prepared models live, and the forms a source may take, are :mod:`inference.artifacts`' business.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from inference.artifacts import default_cache_dir, model_dir, smollm2_dir, smollm2_gguf

log = logging.getLogger(__name__)


def hf_dir(source: str, cache_dir: Path | None = None) -> str:
    """Like :func:`inference.artifacts.model_dir`, building ``packaged:smollm2`` first if need be."""
    cache_dir = cache_dir or default_cache_dir()
    if source == "packaged:smollm2" and not (smollm2_dir(cache_dir) / "config.json").exists():
        _materialize_smollm2(smollm2_dir(cache_dir))
    return model_dir(source, cache_dir)


def _materialize_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    log.info("dequantizing %s into %s (once)", gguf.name, out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tok.pad_token_id or tok.eos_token_id
    tok.save_pretrained(tmp)
    model.save_pretrained(tmp)
    tmp.replace(out)  # atomic: a half-written directory is never mistaken for a finished one
