"""Build everything the catalogue needs into the cache: idempotent, with a progress bar.

Steps: the task classifier (encoder export + training), the knowledge base's embedder, each ONNX model's
export, each local image-to-text model's export, and each packaged transformers model's conversion. Each step
skips itself when its output is already there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from tqdm import tqdm

from inference.build.sources import hf_dir
from inference.catalogue import Catalogue, ImageToTextModel, OnnxModel, TransformersModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    label: str
    run: Callable[[Callable[[str], None]], object]


def plan(catalogue: Catalogue, cache_dir: Path, *, download: bool = True) -> list[Step]:
    """The steps, in order; ``download=False`` leaves out downloads of preferred hub models (tests)."""
    steps = [
        Step("task classifier", partial(_classifier, cache_dir)),
        Step("knowledge embedder (ONNX int8)", partial(_embedder, cache_dir)),
    ]
    for name, spec in catalogue.models.items():
        if isinstance(spec, OnnxModel):
            steps.append(Step(f"{name} (ONNX {spec.runtime} {spec.precision})", partial(_onnx, spec, cache_dir)))
        elif isinstance(spec, ImageToTextModel):
            steps.append(Step(f"{name} (ONNX image-to-text {spec.precision})", partial(_vision, name, spec, cache_dir)))
        elif isinstance(spec, TransformersModel):
            if spec.source.startswith("packaged:"):
                steps.append(Step(f"{name} (transformers)", partial(_transformers, spec, cache_dir)))
            if spec.prefer is not None and download:
                steps.append(Step(f"{name}: {spec.prefer}", partial(_preferred, name, spec, cache_dir)))
    return steps


def _classifier(cache_dir: Path, say: Callable[[str], None]) -> object:
    from inference.classifier.train import prepare_classifier

    return prepare_classifier(cache_dir, say)


def _embedder(cache_dir: Path, say: Callable[[str], None]) -> object:
    from inference.build.embedder import prepare_embedder

    return prepare_embedder(cache_dir, say)


def _onnx(spec: OnnxModel, cache_dir: Path, say: Callable[[str], None]) -> object:
    from inference.build.export import prepare_onnx

    return prepare_onnx(spec, cache_dir, say)


def _vision(name: str, spec: ImageToTextModel, cache_dir: Path, say: Callable[[str], None]) -> object:
    """Export a local image-to-text model; offline with a hub id, say that images go undescribed until it is."""
    from inference.build.export import prepare_image_to_text

    out = prepare_image_to_text(spec, cache_dir, say)
    if out is None:
        message = f"{name}: {spec.source} could not be downloaded (no model hub reachable?); images stay undescribed"
        tqdm.write(message)
        log.warning(message)
    return out


def _transformers(spec: TransformersModel, cache_dir: Path, say: Callable[[str], None]) -> object:
    return hf_dir(spec.source, cache_dir)


def _preferred(name: str, spec: TransformersModel, cache_dir: Path, say: Callable[[str], None]) -> object:
    """Download the larger model a local large tier prefers; offline, say that its ``source`` stands in."""
    from inference.build.sources import fetch_hub_model

    assert spec.prefer is not None
    say(f"downloading {spec.prefer}")
    path = fetch_hub_model(spec.prefer, cache_dir, spec.revision)
    if path is None:
        message = f"{name}: {spec.prefer} could not be downloaded (no model hub reachable?); {spec.source} stands in"
        tqdm.write(message)
        log.warning(message)
    return path


def prepare_all(catalogue: Catalogue, cache_dir: Path, *, show_progress: bool = True, download: bool = True) -> None:
    steps = plan(catalogue, cache_dir, download=download)
    with tqdm(total=len(steps), desc="preparing models", unit="step", disable=not show_progress) as bar:
        for step in steps:
            bar.set_postfix_str(step.label)

            def say(msg: str, label: str = step.label) -> None:
                bar.set_postfix_str(f"{label}: {msg}")

            step.run(say)
            bar.update(1)
