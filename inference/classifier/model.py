"""The local task classifier: which of the ten tasks a request is, and how hard it is.

Run-time path only: onnxruntime + tokenizers + numpy (no torch, transformers or scikit-learn), so a
cold start costs a fraction of a second. The artifacts (int8 MiniLM, tokenizer, linear heads) are made
at setup time by :func:`inference.classifier.train.prepare_classifier` (``python -m bot models prepare``).

Model: a MiniLM sentence embedding concatenated with a few cheap lexical features (code fences, "yes
or no", "according to the docs", numbers, length, ...). One softmax head gives the task, one logistic
head gives the difficulty. Both are plain ``W @ x + b`` in numpy. The task head's logits are divided by a
temperature fit at training time on out-of-fold logits, so its confidence means what it says.

The unsure path: when that calibrated confidence is under the artefact's ``unsure_below``, a second opinion
from the nearest labelled training examples (:class:`~inference.classifier.bank.ExampleBank`, cosine top-k
over the same embedding) is mixed in and settles the task; ``Classification.decided_by`` and a signal say so.

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
from inference.classifier.bank import ExampleBank, Votes
from inference.classifier.features import FEATURE_NAMES, lexical_features, read_window
from inference.classifier.recipe import PREPARE_COMMAND, artifact_path
from inference.errors import ConfigError
from inference.types import TASKS, Attachment, Classification, Request, TaskId

log = logging.getLogger(__name__)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


#: ``Classification.decided_by`` when the unsure path settled the task.
NEAREST_EXAMPLES = "nearest examples"


def second_opinion(
    probs: np.ndarray, embedding: np.ndarray, bank: ExampleBank | None, *, unsure_below: float, k: int, weight: float
) -> tuple[np.ndarray, Votes | None]:
    """The task probabilities after the unsure path: unchanged when the head is sure (or there is no bank),
    else ``(1 - weight) * probs + weight * the neighbours' vote shares``. Returns the votes when it ran."""
    if bank is None or not len(bank) or float(probs.max()) >= unsure_below:
        return probs, None
    votes = bank.nearest(embedding, k)
    shares = np.array([votes.shares[t] for t in TASKS], dtype=np.float64)
    return (1.0 - weight) * probs + weight * shares, votes


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
        self.temperature = float(heads["task_temperature"]) if "task_temperature" in heads.files else 1.0
        unsure = meta.get("unsure") or {}
        self.unsure_below = float(unsure.get("below", 0.0))
        self.unsure_k = int(unsure.get("k", 8))
        self.unsure_weight = float(unsure.get("weight", 0.5))
        #: The labelled training examples' embeddings: the unsure path's second opinion.
        self.bank: ExampleBank | None = (
            ExampleBank.load(artifact_dir / "bank.npz") if (artifact_dir / "bank.npz").exists() else None
        )
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
        embedding = x[: self.encoder_dim]
        probs = _softmax((self._task_w @ x + self._task_b) / self.temperature)
        first = float(probs.max())
        probs, votes = second_opinion(
            probs, embedding, self.bank, unsure_below=self.unsure_below, k=self.unsure_k, weight=self.unsure_weight
        )
        scores: dict[str, float] = {t: float(p) for t, p in zip(TASKS, probs, strict=True)}
        best = int(probs.argmax())
        task: TaskId = TASKS[best]
        confidence = float(probs[best])
        difficulty = _sigmoid(float(self._diff_w @ x) + self._diff_b)
        decided_by = "classifier"
        if votes is not None:
            decided_by = NEAREST_EXAMPLES
            signals.append(f"unsure ({first:.0%}): {len(votes.neighbours)} nearest examples voted {votes.task}")

        total = n_tokens + max(request.context_tokens, 0)
        if total > self.long_context_tokens:
            # Only a signal: the router owns the long-context rule.
            signals.append(f"long context ({total} tokens)")

        media = [a for a in request.attachments if a.is_media]
        if media:
            # A media attachment is multimodal by definition: the small tier cannot see it.
            kinds = sorted({_media_kind(a) for a in media})
            # The attachment settles the task: no second opinion was needed.
            signals = [f"{k} attachment" for k in kinds] + [s for s in signals if not s.startswith("unsure (")]
            task, confidence, decided_by = "multimodal", 1.0, "attachment"
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
            decided_by=decided_by,
            embedding=embedding,
        )

    @property
    def encoder_dim(self) -> int:
        """Width of the encoder's embedding (the head input's leading part)."""
        return int(self._task_w.shape[1]) - len(FEATURE_NAMES)


def _default_long_context_tokens() -> int:
    from inference.catalogue import load_routing

    return load_routing().escalation.long_context_tokens
