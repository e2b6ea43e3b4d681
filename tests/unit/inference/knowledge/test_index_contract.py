"""The one behaviour every KnowledgeIndex has, run against SQLite (sqlite-vec + FTS5) and PostgreSQL (pgvector).

The PostgreSQL runs are against a real server the suite starts itself (``postgres_url`` in tests/conftest.py).
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from inference.knowledge.base import Chunk, KnowledgeIndex, Source

DIM = 384


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, seed: int, noise: float = 0.05) -> np.ndarray:
    w = v + noise * unit(seed)
    return (w / np.linalg.norm(w)).astype(np.float32)


async def _open_sqlite(tmp_path: Path) -> KnowledgeIndex:
    module = pytest.importorskip("inference.knowledge.sqlite", reason="the SQLite index is not written yet")
    classes = [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, KnowledgeIndex) and cls is not KnowledgeIndex and cls.__module__ == module.__name__
    ]
    if not classes or not hasattr(classes[0], "open"):
        pytest.skip("inference.knowledge.sqlite has no KnowledgeIndex with an open(url) classmethod")
    index = await classes[0].open(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    assert isinstance(index, KnowledgeIndex)
    return index


async def _open_postgres(url: str) -> KnowledgeIndex:
    from sqlalchemy import text

    from inference.knowledge.postgres import PostgresIndex

    index = await PostgresIndex.open(url)
    # One server for the whole session: each test starts from empty tables.
    async with index._engine.begin() as conn:
        await conn.execute(text("TRUNCATE knowledge_chunks, knowledge_sources RESTART IDENTITY"))
    return index


@pytest.fixture(params=["sqlite", "postgres"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KnowledgeIndex]:
    if request.param == "sqlite":
        opened = await _open_sqlite(tmp_path)
    else:
        opened = await _open_postgres(request.getfixturevalue("postgres_url"))
    try:
        yield opened
    finally:
        await opened.close()


RULES = Source(server_id=1, name="rules.md", kind="file", added_by=7)
RULE_CHUNKS = [
    Chunk("Meetings are on Thursdays at 18:00 in room B12.", "section 'Meetings' (lines 1-2)", "Rules > Meetings"),
    Chunk("Rule 4.2: no spoilers outside the #spoilers channel.", "section 'Rules' (lines 3-4)", "Rules"),
    Chunk("Dues are five euros a month, paid to the treasurer.", "section 'Money' (lines 5-6)", "Rules > Money"),
]
RULE_VECTORS = np.stack([unit(1), unit(2), unit(3)])


async def test_add_lists_the_source_with_its_chunk_count(index: KnowledgeIndex) -> None:
    await index.add(RULES, RULE_CHUNKS, RULE_VECTORS)
    [source] = await index.sources(1)
    assert (source.name, source.kind, source.chunks, source.added_by, source.channel_id) == (
        "rules.md",
        "file",
        3,
        7,
        None,
    )
    assert await index.sources(2) == []


async def test_vector_search_ranks_by_cosine_similarity(index: KnowledgeIndex) -> None:
    await index.add(RULES, RULE_CHUNKS, RULE_VECTORS)
    hits = await index.vector_search(1, near(unit(2), seed=99), k=2)
    assert len(hits) == 2
    assert hits[0].chunk.text.startswith("Rule 4.2")
    assert hits[0].source == "rules.md"
    assert hits[0].chunk.position == "section 'Rules' (lines 3-4)" and hits[0].chunk.context == "Rules"
    assert hits[0].score > hits[1].score
    assert hits[0].score > 0.9  # a similarity (1 - cosine distance): higher is closer


async def test_keyword_search_finds_codes_and_names(index: KnowledgeIndex) -> None:
    await index.add(RULES, RULE_CHUNKS, RULE_VECTORS)
    hits = await index.keyword_search(1, "where is room B12?", k=5)
    assert [h.chunk.text for h in hits] == [RULE_CHUNKS[0].text]
    assert hits[0].source == "rules.md"
    # A question whose words are not all in one chunk still finds the chunk with most of them first.
    hits = await index.keyword_search(1, "when do the meetings happen on thursdays", k=5)
    assert hits and hits[0].chunk.text == RULE_CHUNKS[0].text
    assert [h.chunk.text for h in await index.keyword_search(1, "spoilers", k=5)] == [RULE_CHUNKS[1].text]
    assert await index.keyword_search(1, "aardvark", k=5) == []
    assert await index.keyword_search(1, "?!", k=5) == []


async def test_k_limits_the_hits(index: KnowledgeIndex) -> None:
    chunks = [Chunk(f"Note {i} about the garden party.", f"line {i}") for i in range(12)]
    await index.add(Source(1, "notes.txt", "file"), chunks, np.stack([unit(100 + i) for i in range(12)]))
    assert len(await index.vector_search(1, unit(105), k=5)) == 5
    assert len(await index.keyword_search(1, "garden party", k=5)) == 5


async def test_a_server_only_ever_retrieves_its_own_chunks(index: KnowledgeIndex) -> None:
    await index.add(RULES, RULE_CHUNKS, RULE_VECTORS)
    other = Source(server_id=2, name="rules.md", kind="file")
    secret = [Chunk("Server two meets in room B12 on Mondays.", "line 1")]
    await index.add(other, secret, unit(1)[None, :])
    for server, expected in ((1, RULE_CHUNKS[0].text), (2, secret[0].text)):
        assert {h.chunk.text for h in await index.vector_search(server, unit(1), k=10)} >= {expected}
        texts = {h.chunk.text for h in await index.vector_search(server, unit(1), k=10)}
        texts |= {h.chunk.text for h in await index.keyword_search(server, "B12 room", k=10)}
        assert (secret[0].text in texts) == (server == 2)
        assert (RULE_CHUNKS[0].text in texts) == (server == 1)
    # Same name on another server is another source: removing one leaves the other.
    assert await index.remove(2, "rules.md")
    assert [s.name for s in await index.sources(1)] == ["rules.md"]


async def test_filtered_vector_search_still_returns_k_of_the_server(index: KnowledgeIndex) -> None:
    # Many near neighbours belong to another server: an approximate index must not return fewer than k for ours.
    crowd = [Chunk(f"crowd {i}", f"line {i}") for i in range(300)]
    await index.add(Source(9, "crowd.txt", "file"), crowd, np.stack([near(unit(5), seed=1000 + i) for i in range(300)]))
    mine = [Chunk(f"mine {i}", f"line {i}") for i in range(5)]
    await index.add(Source(1, "mine.txt", "file"), mine, np.stack([unit(2000 + i) for i in range(5)]))
    hits = await index.vector_search(1, unit(5), k=5)
    assert sorted(h.chunk.text for h in hits) == sorted(c.text for c in mine)


async def test_removing_a_source_leaves_nothing_retrievable(index: KnowledgeIndex) -> None:
    await index.add(RULES, RULE_CHUNKS, RULE_VECTORS)
    keep = Source(1, "faq.md", "file")
    await index.add(keep, [Chunk("The FAQ says hello.", "line 1")], unit(50)[None, :])
    assert await index.remove(1, "rules.md") is True
    assert await index.remove(1, "rules.md") is False
    assert [s.name for s in await index.sources(1)] == ["faq.md"]
    for vector in RULE_VECTORS:
        assert all(h.source == "faq.md" for h in await index.vector_search(1, vector, k=10))
    for words in ("B12", "spoilers", "treasurer euros", "Meetings Rules Money"):
        assert await index.keyword_search(1, words, k=10) == []


async def test_messages_are_removed_one_by_one_and_re_added(index: KnowledgeIndex) -> None:
    channel = Source(1, "channel:55", "channel", channel_id=55)
    messages = [
        Chunk("Welcome! Read the rules first.", "https://discord.com/channels/1/55/501", "alice", 501, 55),
        Chunk("The server map is pinned in #maps.", "https://discord.com/channels/1/55/502", "bob", 502, 55),
    ]
    await index.add(channel, messages, np.stack([unit(11), unit(12)]))
    hits = await index.keyword_search(1, "server map", k=5)
    assert hits[0].chunk.message_id == 502 and hits[0].chunk.channel_id == 55 and hits[0].chunk.context == "bob"
    # A message of another server with the same id is not touched.
    assert await index.remove_message(2, 502) == 0
    assert await index.remove_message(1, 502) == 1
    assert await index.keyword_search(1, "server map", k=5) == []
    assert all(h.chunk.message_id != 502 for h in await index.vector_search(1, unit(12), k=5))
    # An edit: the message's chunks go, the new text is added to the same source.
    edited = Chunk("The server map moved to #atlas.", "https://discord.com/channels/1/55/502", "bob", 502, 55)
    await index.add(channel, [edited], unit(13)[None, :])
    [source] = await index.sources(1)
    assert (source.name, source.kind, source.channel_id, source.chunks) == ("channel:55", "channel", 55, 2)
    assert [h.chunk.text for h in await index.keyword_search(1, "atlas", k=5)] == [edited.text]


async def test_adding_nothing_still_records_the_source(index: KnowledgeIndex) -> None:
    await index.add(Source(1, "pins:55", "pins", channel_id=55), [], np.zeros((0, DIM), dtype=np.float32))
    [source] = await index.sources(1)
    assert (source.name, source.chunks) == ("pins:55", 0)
    assert await index.vector_search(1, unit(1), k=5) == []


# -- PostgreSQL specifics -----------------------------------------------------------------------------------------


def test_postgres_urls_are_turned_into_asyncpg_ones() -> None:
    pytest.importorskip("pgvector", reason="needs `pip install pgvector` (the dev extra)")
    from inference.knowledge.postgres import asyncpg_url

    assert asyncpg_url("postgresql://u:p@/db?host=/tmp/x") == "postgresql+asyncpg://u:p@/db?host=/tmp/x"
    assert asyncpg_url("postgres://h/db") == "postgresql+asyncpg://h/db"
    assert asyncpg_url("postgresql+asyncpg://h/db") == "postgresql+asyncpg://h/db"
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        asyncpg_url("sqlite+aiosqlite:///bot.db")


def test_keyword_queries_or_the_words_and_keep_codes_whole() -> None:
    pytest.importorskip("pgvector", reason="needs `pip install pgvector` (the dev extra)")
    from inference.knowledge.postgres import keyword_query

    assert keyword_query("Where's rule 4.2 about B12?") == "Where or s or rule or 4.2 or about or B12"
    # The user's own operators are words, never syntax: no NOT, no phrase, no empty query.
    assert keyword_query('-spoilers "or" OR x-ray') == "spoilers or x-ray"
    assert keyword_query("?!") == ""


async def test_the_knowledge_base_runs_on_postgres(postgres_url: str) -> None:
    from inference.knowledge.postgres import PostgresIndex
    from inference.knowledge.service import KnowledgeBase, open_index

    from .fakes import WordEmbedder

    index = await open_index(postgres_url)
    assert isinstance(index, PostgresIndex)
    kb = KnowledgeBase(index, WordEmbedder())
    try:
        await kb.remove(77, "rules.md")
        data = b"# Meetings\n\nMeetings are on Thursdays at 18:00 in room B12.\n"
        await kb.add_file(77, "rules.md", data, added_by=5)
        assert [(s.name, s.added_by) for s in await kb.sources(77)] == [("rules.md", 5)]
        hits = await kb.search(77, "when are the meetings?", can_read=lambda _: True)
        assert hits and "B12" in hits[0].chunk.text and hits[0].source == "rules.md"
        assert await kb.search(78, "when are the meetings?", can_read=lambda _: True) == []
        assert await kb.remove(77, "rules.md")
        assert await kb.search(77, "meetings B12 Thursdays", can_read=lambda _: True) == []
    finally:
        await kb.close()


async def test_postgres_filtered_hnsw_search_keeps_scanning_for_the_server(postgres_url: str) -> None:
    # Every row of another server is nearer the query than any of ours. On a big table the planner takes the HNSW
    # index (here it is made to: sorting a small table would be cheaper), whose first ef_search candidates are then
    # all the other server's: without pgvector's iterative scan the filter would leave nothing.
    from sqlalchemy import text

    from inference.knowledge.postgres import PostgresIndex

    await (await _open_postgres(postgres_url)).close()  # empty tables
    settings = {"enable_seqscan": "off", "enable_sort": "off"}
    index = await PostgresIndex.open(postgres_url, connect_args={"server_settings": settings})
    try:
        crowd = [Chunk(f"crowd {i}", f"line {i}") for i in range(400)]
        crowd_vectors = np.stack([near(unit(5), seed=3000 + i, noise=0.3) for i in range(400)])
        await index.add(Source(9, "crowd.txt", "file"), crowd, crowd_vectors)
        mine = [Chunk(f"mine {i}", f"line {i}") for i in range(100)]
        await index.add(Source(1, "mine.txt", "file"), mine, np.stack([unit(5000 + i) for i in range(100)]))
        query = (
            "EXPLAIN SELECT id FROM knowledge_chunks WHERE server_id = 1 "
            "ORDER BY embedding <=> CAST(:v AS vector) LIMIT 5"
        )
        async with index._engine.connect() as conn:
            plan = "\n".join(row[0] for row in await conn.execute(text(query), {"v": str(unit(5).tolist())}))
        assert "ix_knowledge_chunks_embedding" in plan
        assert index.iterative_scan
        hits = await index.vector_search(1, unit(5), k=5)
        assert len(hits) == 5 and all(h.chunk.text.startswith("mine") for h in hits)
        index.iterative_scan = False  # what pgvector < 0.8 does: the filter empties the candidate list
        assert len(await index.vector_search(1, unit(5), k=5)) < 5
    finally:
        await index.close()
