"""Model backends: one base class (base.py) and one file per implementation, registered by kind."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inference.backends.base import Backend, TokenStream

if TYPE_CHECKING:
    import aiohttp

    from inference.catalogue import ModelSpec
    from inference.serving.netguard import Guard

__all__ = ["REGISTRY", "Backend", "TokenStream", "build_backend"]

#: kind -> "module:Class"; imported on demand so `route` never pays for torch or onnxruntime.
REGISTRY: dict[str, str] = {
    "onnx": "inference.backends.onnx:OnnxBackend",
    "transformers": "inference.backends.transformers:TransformersBackend",
    "openai": "inference.backends.openai:OpenAIBackend",
}


def backend_class(kind: str) -> type[Backend]:
    try:
        module, cls = REGISTRY[kind].split(":")
    except KeyError:
        raise ValueError(f"unknown backend kind {kind!r}; known: {', '.join(REGISTRY)}") from None
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


def build_backend(
    name: str,
    spec: ModelSpec,
    *,
    cache_dir: Path,
    session: aiohttp.ClientSession | None = None,
    guard: Guard | None = None,
    env: Mapping[str, str] | None = None,
) -> Backend:
    """``env``: the operator's environment for ``api_key_env``; pass it only for operator models."""
    cls: Any = backend_class(spec.kind)
    if spec.kind == "openai":
        return cls(name, spec, session, guard=guard, env=env)  # type: ignore[no-any-return]
    return cls(name, spec, cache_dir)  # type: ignore[no-any-return]
