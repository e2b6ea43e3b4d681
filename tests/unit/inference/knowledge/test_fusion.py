from __future__ import annotations

from inference.knowledge.base import Chunk, Hit
from inference.knowledge.fusion import RRF_K, rrf


def hit(text: str, score: float = 0.0) -> Hit:
    return Hit(chunk=Chunk(text=text, position="p"), source="doc", score=score)


def test_rrf_sums_reciprocal_ranks_and_records_each_rank() -> None:
    fused = rrf([hit("a"), hit("b"), hit("c")], [hit("c"), hit("d")])
    assert [h.chunk.text for h in fused][:1] == ["c"]  # in both lists
    c = fused[0]
    assert c.vector_rank == 3 and c.keyword_rank == 1
    assert abs(c.score - (1 / (RRF_K + 3) + 1 / (RRF_K + 1))) < 1e-12
    a = next(h for h in fused if h.chunk.text == "a")
    assert a.keyword_rank is None and a.vector_rank == 1


def test_rrf_limit_and_empty_lists() -> None:
    assert rrf([], []) == []
    assert [h.chunk.text for h in rrf([hit("a"), hit("b")], [], limit=1)] == ["a"]


def test_only_ranks_matter_not_the_scales_of_the_scores() -> None:
    one = rrf([hit("a", 0.9), hit("b", 0.1)], [hit("b", 100.0), hit("a", 1.0)])
    two = rrf([hit("a", 0.5), hit("b", 0.4)], [hit("b", 3.0), hit("a", 2.0)])
    assert [h.score for h in one] == [h.score for h in two]
