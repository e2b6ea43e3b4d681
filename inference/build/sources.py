"""Model sources at set-up time: bring a catalogue ``source`` into the cache where it needs building.

``packaged:smollm2`` ships as GGUF; it is dequantized once into a transformers directory (about 15 s). Where
prepared models live, and the forms a source may take, are :mod:`inference.artifacts`' business.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from inference.artifacts import default_cache_dir, hub_cache, hub_snapshot, model_dir, smollm2_dir, smollm2_gguf

log = logging.getLogger(__name__)


def hf_dir(source: str, cache_dir: Path | None = None) -> str:
    """Like :func:`inference.artifacts.model_dir`, building ``packaged:smollm2`` first if need be."""
    cache_dir = cache_dir or default_cache_dir()
    if source == "packaged:smollm2" and not (smollm2_dir(cache_dir) / "config.json").exists():
        _materialize_smollm2(smollm2_dir(cache_dir))
    return model_dir(source, cache_dir)


#: The files a causal LM needs from a hub repository (not its other weight formats: GGUF, ONNX, PyTorch .bin).
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]


def fetch_hub_model(repo_id: str, cache_dir: Path, revision: str | None = None) -> Path | None:
    """Download ``repo_id`` into the cache (the hub client shows a progress bar per file); None when no hub is
    reachable or the repository can't be read. A finished download is found without the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    done = hub_snapshot(repo_id, cache_dir, revision)
    if done is not None:
        return done
    try:
        path = snapshot_download(repo_id, revision=revision, cache_dir=hub_cache(cache_dir), allow_patterns=HUB_FILES)
    except (HfHubHTTPError, OSError, ValueError) as exc:  # offline, unknown repository, gated model
        log.info("could not download %s: %s", repo_id, exc)
        return None
    return Path(path)


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
