"""The knowledge base with the real int8 MiniLM embedder (exported by `models prepare`) on SQLite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.knowledge.embedder import Embedder
from inference.knowledge.service import KnowledgeBase

pytestmark = pytest.mark.real_model

DOC = b"""# Club handbook

## Meetings

Meetings are on Thursdays at 18:00 in room B12.

## Fees

Fees are 5 EUR a month, paid to the treasurer.

## Network

The wifi password is hunter2 and the network is ClubNet.

## Rules

Rule 7: no spoilers in the general channel.

Rule 8: wash your own mug.

## Parking

Bikes go in the shed behind the hall.
"""


@pytest.fixture
async def kb(prepared_embedder: Path, tmp_path: Path) -> KnowledgeBase:
    return await KnowledgeBase.open(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}", prepared_embedder)


def everyone(_channel: int) -> bool:
    return True


async def test_embeddings_are_unit_vectors_and_batching_changes_nothing(kb: KnowledgeBase) -> None:
    texts = ["short", "a somewhat longer sentence about meetings in room B12", "x " * 400]
    together = await kb.embedder.aembed(texts)
    alone = np.stack([(await kb.embedder.aembed([t]))[0] for t in texts])
    assert together.shape == (3, 384)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-4)
    # Padding is masked out of the mean; what differs is int8 dynamic quantization, whose activation scale is
    # computed over the whole batch, so a batch-mate moves a vector slightly: "short" beside the others kept a
    # cosine of 0.98+ to itself alone on one host and 0.978 on another (AVX2 only: ONNX Runtime's int8 kernels
    # differ by CPU), against 0.3 or less between unrelated texts.
    assert (together * alone).sum(axis=1).min() > 0.97
    await kb.close()


async def test_the_embedder_threads_stop_spinning_when_a_run_ends(kb: KnowledgeBase) -> None:
    # A query is embedded just before the small tier prefills on the same cores.
    assert isinstance(kb.embedder, Embedder)
    options = kb.embedder._session.get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    await kb.close()


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("When are the meetings held?", "B12"),
        ("How much does membership cost?", "5 EUR"),
        ("what's the wifi password", "hunter2"),
        ("Where can I leave my bicycle?", "shed"),
        ("What does rule 7 say?", "spoilers"),
        ("rule 8", "mug"),
    ],
)
async def test_the_right_section_comes_first(kb: KnowledgeBase, question: str, expected: str) -> None:
    await kb.add_file(1, "handbook.md", DOC)
    hits = await kb.search(1, question, can_read=everyone)
    assert hits and expected in hits[0].chunk.text, [h.chunk.text for h in hits]
    await kb.close()


async def test_unrelated_questions_find_nothing(kb: KnowledgeBase) -> None:
    await kb.add_file(1, "handbook.md", DOC)
    for question in ("Who painted Guernica?", "What is the capital of Peru?", "Explain quantum entanglement"):
        assert await kb.search(1, question, can_read=everyone) == [], question
    await kb.close()
