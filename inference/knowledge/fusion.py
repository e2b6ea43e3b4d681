"""Reciprocal rank fusion (Cormack, Clarke & Buettcher, SIGIR 2009) of the vector and keyword rankings.

score(d) = sum over rankings of 1 / (k + rank(d)), ranks starting at 1, k = 60. Only ranks matter, so
cosine similarities and BM25 scores need no common scale. Chunks are identified by (source, position, text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from inference.knowledge.base import Hit

RRF_K = 60


def _key(hit: Hit) -> tuple[str, str, str]:
    return (hit.source, hit.chunk.position, hit.chunk.text)


def rrf(vector: Sequence[Hit], keyword: Sequence[Hit], *, k: int = RRF_K, limit: int | None = None) -> list[Hit]:
    """Fused hits, best first, each with its ``vector_rank`` and ``keyword_rank`` (1-based, None if absent)."""
    scores: dict[tuple[str, str, str], float] = {}
    first: dict[tuple[str, str, str], Hit] = {}
    ranks: dict[tuple[str, str, str], dict[str, int]] = {}
    for name, hits in (("vector", vector), ("keyword", keyword)):
        for rank, hit in enumerate(hits, start=1):
            key = _key(hit)
            if name in ranks.setdefault(key, {}):
                continue  # a duplicate lower in the same list
            ranks[key][name] = rank
            first.setdefault(key, hit)
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    ordered = sorted(scores, key=lambda key: -scores[key])
    fused = [
        replace(
            first[key], score=scores[key], vector_rank=ranks[key].get("vector"), keyword_rank=ranks[key].get("keyword")
        )
        for key in ordered
    ]
    return fused[:limit] if limit is not None else fused
