"""The classifier's declared recipe, and the key that names its artefacts.

The key hashes what shapes the artefacts: the training data, this recipe (hyper-parameters, the encoder's
token window, the feature definitions) and the versions of the packages that build them. A reformatted
source file or a new comment changes nothing; a new pattern, a hyper-parameter or a library upgrade
retrains at the next ``models prepare``. A change to a computed feature's code is not visible here: the
golden test on the lexical features fails and says to bump :attr:`Recipe.version`.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from inference.classifier import features

#: Where the labelled examples live (``train.jsonl``, ``heldout.jsonl`` and their README).
DATA_DIR = Path(__file__).resolve().parents[2] / "config" / "classifier"
PREPARE_COMMAND = "python -m bot models prepare"

#: The packages whose versions shape the artefacts (training, export, quantisation, tokenisation).
BUILD_PACKAGES = ("torch", "transformers", "optimum", "onnx", "onnxruntime-gpu", "tokenizers", "scikit-learn", "numpy")


@dataclass(frozen=True)
class Recipe:
    #: Bump when something the key cannot see changes (a computed feature's code, the training procedure).
    version: str = "tc-4"
    encoder_layers: int = 4  # of MiniLM's 6: same held-out accuracy after fine-tuning, 2/3 of the latency
    frozen_layers: int = 1  # embeddings + this many layers stay frozen; their outputs are computed once
    epochs: int = 4
    batch_size: int = 16
    encoder_lr: float = 1e-4
    head_lr: float = 2e-3
    max_tokens: int = 48  # encoder window (head + tail); see inference.classifier.encoder
    task_c: float = 8.0  # inverse L2 strength of the final logistic heads
    diff_c: float = 8.0
    seed: int = 0
    calibration_share: float = 0.2  # rows the encoder is not tuned on; the temperature is fit on them
    unsure_below: float = 0.6  # calibrated confidence under which the nearest examples give a second opinion
    unsure_k: int = 8  # neighbours that vote
    unsure_weight: float = 0.5  # their vote's share of the mixed probabilities


RECIPE = Recipe()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


@functools.cache
def _recipe_fingerprint() -> str:
    declared = {
        "recipe": asdict(RECIPE),
        "features": [f.definition() for f in features.FEATURES],
        "windows": [features.LEX_HEAD, features.LEX_TAIL, features.READ_HEAD, features.READ_TAIL],
        "packages": {p: _version(p) for p in BUILD_PACKAGES},
    }
    return json.dumps(declared, sort_keys=True)


def artifact_key(train_path: Path | None = None) -> str:
    """Names the artefacts built from ``train_path`` (default: the project's training data) by this recipe."""
    h = hashlib.sha256(_recipe_fingerprint().encode())
    h.update(b"\0")
    h.update((train_path or DATA_DIR / "train.jsonl").read_bytes())
    return h.hexdigest()[:16]


def artifact_path(cache_dir: Path) -> Path:
    return cache_dir / "classifier" / artifact_key()
