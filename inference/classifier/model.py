"""The local task classifier: which of the ten tasks a request is, and how hard it is.

Run-time path only: onnxruntime + tokenizers + numpy (no torch, transformers or scikit-learn), so a
cold start costs a fraction of a second. The artifacts (int8 MiniLM, tokenizer, linear heads) are made
at setup time by :func:`inference.classifier.train.prepare_classifier` (``python -m bot models prepare``).

Model: a MiniLM sentence embedding concatenated with a few cheap lexical features (code fences, "yes
or no", "according to the docs", numbers, length, ...). One softmax head gives the task, one logistic
head gives the difficulty. Both are plain ``W @ x + b`` in numpy.

Thread safety: a loaded :class:`TaskClassifier` holds no mutable state; ``classify`` may be called from
several threads at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from inference.artifacts import default_cache_dir
from inference.classifier.features import FEATURE_NAMES, lexical_features, read_window
from inference.classifier.recipe import PREPARE_COMMAND, artifact_path
from inference.errors import ConfigError
from inference.types import TASKS, Attachment, Classification, Request, TaskId

log = logging.getLogger(__name__)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def _sigmoid(z: float) -> float:
    # Stable for large |z| (math.exp overflows past ~709).
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _media_kind(att: Attachment) -> str:
    major = att.content_type.split("/", 1)[0].lower()
    if major in {"image", "audio", "video"}:
        return major
    ext = att.filename.rsplit(".", 1)[-1].lower()
    if ext in {"mp3", "wav", "ogg", "flac", "m4a", "opus", "aac"}:
        return "audio"
    if ext in {"mp4", "mov", "webm", "mkv", "avi"}:
        return "video"
    return "image"


class TaskClassifier:
    """Loaded classifier artifacts. Build with :meth:`load`."""

    def __init__(
        self, artifact_dir: Path, *, providers: list[str] | None = None, long_context_tokens: int | None = None
    ) -> None:
        from inference.classifier.encoder import OnnxEncoder

        meta = json.loads((artifact_dir / "meta.json").read_text())
        if tuple(meta["tasks"]) != TASKS or tuple(meta["features"]) != FEATURE_NAMES:
            raise ConfigError(f"classifier artifacts in {artifact_dir} are stale: run `{PREPARE_COMMAND}`")
        heads = np.load(artifact_dir / "heads.npz")
        self.artifact_dir = artifact_dir
        self.meta = meta
        self._feat_mean = heads["feat_mean"].astype(np.float32)
        self._feat_scale = heads["feat_scale"].astype(np.float32)
        self._task_w = heads["task_w"].astype(np.float32)  # (n_tasks, dim)
        self._task_b = heads["task_b"].astype(np.float32)
        self._diff_w = heads["diff_w"].astype(np.float32)  # (dim,)
        self._diff_b = float(heads["diff_b"])
        self.encoder = OnnxEncoder(
            artifact_dir / "encoder.onnx",
            artifact_dir / "tokenizer.json",
            max_tokens=int(meta["max_tokens"]),
            # 2 spinning threads meet the 2 ms median on a 2-core box (1.6 ms vs 2.3 ms with one, measured
            # with bench/routing.py); SWITCHBOARD_CLASSIFIER_THREADS=1 suits a box the generator saturates.
            threads=int(os.environ.get("SWITCHBOARD_CLASSIFIER_THREADS") or min(2, os.cpu_count() or 1)),
            providers=providers,
        )
        self.provider = self.encoder.provider
        #: Prompt + history tokens past which the "long context" signal is added (only a signal: the router
        #: owns the rule). None: the default routing policy's, read from config/routing.yaml.
        self.long_context_tokens = long_context_tokens or _default_long_context_tokens()

    @classmethod
    def load(
        cls,
        cache_dir: Path | None = None,
        *,
        providers: list[str] | None = None,
        long_context_tokens: int | None = None,
    ) -> TaskClassifier:
        """Load the artifacts for the current training data and recipe from ``cache_dir``."""
        cache_dir = cache_dir or default_cache_dir()
        artifact_dir = artifact_path(cache_dir)
        if not (artifact_dir / "meta.json").exists():
            raise ConfigError(f"task classifier not prepared (no {artifact_dir}): run `{PREPARE_COMMAND}` first")
        t0 = time.perf_counter()
        clf = cls(artifact_dir, providers=providers, long_context_tokens=long_context_tokens)
        log.info("task classifier loaded in %.0f ms from %s", (time.perf_counter() - t0) * 1e3, artifact_dir)
        return clf

    def features(self, text: str) -> tuple[np.ndarray, int, list[str]]:
        """(head input vector, prompt tokens, lexical signals) for ``text``.

        Only a bounded head and tail of a long text are read (tokenising 20 MB took 52 s and 6 GB); its
        token count, which the length features and the long-context rule use, is scaled up from them.
        """
        sample, scale = read_window(text)
        ids = self.encoder.token_ids(sample)
        n_tokens = len(ids) if scale == 1.0 else round(len(ids) * scale)
        emb = self.encoder.embed_ids(ids)
        lex, signals = lexical_features(sample, n_tokens)
        lex = (lex - self._feat_mean) / self._feat_scale
        return np.concatenate([emb.astype(np.float32), lex]), n_tokens, signals

    def classify(self, request: Request) -> Classification:
        x, n_tokens, signals = self.features(request.text)
        probs = _softmax(self._task_w @ x + self._task_b)
        scores: dict[str, float] = {t: float(p) for t, p in zip(TASKS, probs, strict=True)}
        best = int(probs.argmax())
        task: TaskId = TASKS[best]
        confidence = float(probs[best])
        difficulty = _sigmoid(float(self._diff_w @ x) + self._diff_b)

        total = n_tokens + max(request.context_tokens, 0)
        if total > self.long_context_tokens:
            # Only a signal: the router owns the long-context rule.
            signals.append(f"long context ({total} tokens)")

        media = [a for a in request.attachments if a.is_media]
        if media:
            # A media attachment is multimodal by definition: the small tier cannot see it.
            kinds = sorted({_media_kind(a) for a in media})
            signals = [f"{k} attachment" for k in kinds] + signals
            task, confidence = "multimodal", 1.0
            scores = {t: (1.0 if t == "multimodal" else 0.0) for t in TASKS}
        elif request.attachments:
            signals.append("non-media attachment")
        return Classification(
            task=task,
            confidence=confidence,
            difficulty=difficulty,
            signals=tuple(dict.fromkeys(signals)),
            scores=scores,
            prompt_tokens=n_tokens,
        )


def _default_long_context_tokens() -> int:
    from inference.catalogue import load_routing

    return load_routing().escalation.long_context_tokens
