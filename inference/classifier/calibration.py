"""Confidence calibration for the task head: temperature scaling and expected calibration error.

A softmax head fit on embeddings its encoder was fine-tuned on is over-confident: a single temperature
``T`` (logits / T) fit by negative log-likelihood on held-out logits fixes most of that without changing
which task wins (Guo et al., 2017). numpy only: run time divides by ``T`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` (1-D or 2-D)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, lo: float = 0.05, hi: float = 20.0) -> float:
    """The temperature in [lo, hi] that minimises the NLL of ``labels`` (golden-section search on log T).

    NLL is convex in 1/T for a fixed set of logits, so the one-dimensional search finds the optimum.
    """
    labels = np.asarray(labels, dtype=np.int64)
    a, b = np.log(lo), np.log(hi)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(logits, labels, float(np.exp(c))), nll(logits, labels, float(np.exp(d)))
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(logits, labels, float(np.exp(c)))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(logits, labels, float(np.exp(d)))
    return float(np.exp((a + b) / 2.0))


def expected_calibration_error(
    confidences: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, bins: int = 15
) -> float:
    """ECE: the bin-weighted mean gap between confidence and accuracy over ``bins`` equal-width bins.

    Bins are right-closed, ``(i/bins, (i+1)/bins]``, with a confidence of exactly 0 put in the first bin.
    """
    conf = np.asarray(confidences, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return 0.0
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() / conf.size * abs(float(hit[mask].mean()) - float(conf[mask].mean()))
    return float(total)
