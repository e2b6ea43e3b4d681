"""The SQLite index in the bot's own database file: sqlite-vec partitioned by server, FTS5, clean removal."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from inference.knowledge.base import Chunk, Source
from inference.knowledge.sqlite import SqliteIndex, fts_query, path_from_url
from tests.unit.inference.knowledge.fakes import WordEmbedder

EMB = WordEmbedder()


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[SqliteIndex]:
    idx = await SqliteIndex.open(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    yield idx
    await idx.close()


async def add(idx: SqliteIndex, server: int, name: str, texts: list[str], channel: int | None = None) -> None:
    chunks = [Chunk(text=t, position=f"line {i}", channel_id=channel) for i, t in enumerate(texts, start=1)]
    source = Source(server, name, "channel", channel_id=channel) if channel else Source(server, name, "file")
    await idx.add(source, chunks, EMB.embed(texts))


def test_urls_and_keyword_queries() -> None:
    assert path_from_url("sqlite+aiosqlite:////tmp/x/bot.db") == "/tmp/x/bot.db"
    assert path_from_url("sqlite+aiosqlite:///data/bot.db") == "data/bot.db"
    assert path_from_url("sqlite://") == ":memory:"
    # quotes and FTS5 operators in user text can't break the query
    assert fts_query('when are "meetings" NEAR(x)? -- AND') == '"meetings" OR "near" OR "x"'
    assert fts_query("?!") is None


async def test_search_add_and_list(index: SqliteIndex) -> None:
    await add(index, 1, "rules.md", ["Meetings are on Thursdays in room B12.", "Fees are 5 EUR a month."])
    (source,) = await index.sources(1)
    assert (source.name, source.kind, source.chunks) == ("rules.md", "file", 2)
    by_vector = await index.vector_search(1, EMB.embed(["meetings room"])[0], 5)
    assert "B12" in by_vector[0].chunk.text and by_vector[0].score > by_vector[1].score
    by_keyword = await index.keyword_search(1, "What does rule B12 say?", 5)
    assert [h.chunk.text for h in by_keyword] == ["Meetings are on Thursdays in room B12."]


async def test_servers_never_see_each_others_chunks(index: SqliteIndex) -> None:
    await add(index, 1, "a.md", ["The secret code is AX-17."])
    await add(index, 2, "b.md", ["Unrelated text about cats."])
    assert await index.keyword_search(2, "AX-17 secret code", 5) == []
    assert all(h.source == "b.md" for h in await index.vector_search(2, EMB.embed(["secret code"])[0], 5))
    assert [s.name for s in await index.sources(2)] == ["b.md"]


async def test_remove_leaves_nothing_retrievable(index: SqliteIndex, tmp_path: Path) -> None:
    await add(index, 1, "gone.md", ["Password hint: blue walrus."] * 3)
    await add(index, 1, "kept.md", ["Keep this one."])
    assert await index.remove(1, "gone.md") and not await index.remove(1, "gone.md")
    assert await index.keyword_search(1, "walrus", 5) == []
    assert all(h.source == "kept.md" for h in await index.vector_search(1, EMB.embed(["walrus"])[0], 5))
    # and nothing of it is left in any table of the file
    raw = sqlite3.connect(tmp_path / "bot.db")
    assert raw.execute("SELECT count(*) FROM knowledge_chunks").fetchone() == (1,)
    assert raw.execute("SELECT count(*) FROM knowledge_fts").fetchone() == (1,)
    assert raw.execute("SELECT count(*) FROM knowledge_sources").fetchone() == (1,)
    raw.close()


async def test_messages_are_removed_by_id(index: SqliteIndex) -> None:
    chunks = [
        Chunk("hello", "https://x/1", "ann", message_id=1, channel_id=9),
        Chunk("bye", "https://x/2", message_id=2),
    ]
    await index.add(Source(1, "channel:9", "channel", channel_id=9), chunks, EMB.embed(["hello", "bye"]))
    assert await index.remove_message(1, 1) == 1 and await index.remove_message(2, 2) == 0
    (source,) = await index.sources(1)
    assert source.chunks == 1
    hits = await index.keyword_search(1, "bye", 5)
    assert hits[0].chunk.channel_id == 9  # the source's channel fills in


async def test_tables_are_created_idempotently_beside_the_bots(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    first = await SqliteIndex.open(url)
    await add(first, 1, "a.md", ["alpha"])
    await first.close()
    again = await SqliteIndex.open(url)
    assert [s.name for s in await again.sources(1)] == ["a.md"]
    await again.close()


async def test_keyword_search_matches_other_forms_of_a_word(index: SqliteIndex) -> None:
    # Porter stemming, as PostgreSQL's english configuration: "meeting" finds "Meetings", "charged" finds "charges".
    await add(index, 1, "rules.md", ["Meetings are on Thursdays.", "Late charges apply after a week."])
    assert [h.chunk.text for h in await index.keyword_search(1, "when is the meeting", 5)] == [
        "Meetings are on Thursdays."
    ]
    assert [h.chunk.text for h in await index.keyword_search(1, "am I charged?", 5)] == [
        "Late charges apply after a week."
    ]


async def test_an_index_made_before_stemming_is_rebuilt_with_it(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    idx = await SqliteIndex.open(url)
    await add(idx, 1, "rules.md", ["Meetings are on Thursdays."])
    await idx.close()
    # Put back the plain tokenizer the first version created, with the same rows.
    conn = sqlite3.connect(tmp_path / "bot.db")
    rows = conn.execute("SELECT rowid, text, context, server_id FROM knowledge_fts").fetchall()
    conn.execute("DROP TABLE knowledge_fts")
    conn.execute("CREATE VIRTUAL TABLE knowledge_fts USING fts5(text, context, server_id UNINDEXED)")
    conn.executemany("INSERT INTO knowledge_fts (rowid, text, context, server_id) VALUES (?, ?, ?, ?)", rows)
    conn.commit()
    conn.close()
    idx = await SqliteIndex.open(url)
    try:
        assert [h.chunk.text for h in await idx.keyword_search(1, "meeting", 5)] == ["Meetings are on Thursdays."]
        await add(idx, 1, "more.md", ["Another meeting note."])
        assert len(await idx.keyword_search(1, "meeting", 5)) == 2  # no row twice after the rebuild
    finally:
        await idx.close()
