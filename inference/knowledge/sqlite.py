"""The SQLite index: sqlite-vec for vectors, FTS5 for keywords, in the bot's own database file.

Tables (created idempotently on open, prefixed ``knowledge_`` so they never meet the bot's own):

- ``knowledge_sources`` (one row per source, unique per server and name) and ``knowledge_chunks``;
- ``knowledge_vectors``: a sqlite-vec ``vec0`` table, rowid = chunk id, ``server_id`` as its **partition
  key** so a k-nearest query (``embedding MATCH ? AND k = ? AND server_id = ?``) only ever looks at that
  server's vectors, with cosine distance;
- ``knowledge_fts``: an FTS5 table, rowid = chunk id, ranked by BM25, filtered by server.

Extensions: the stdlib ``sqlite3`` can load sqlite-vec only where it was built with extension loading (many
Pythons, not all); elsewhere ``pysqlite3`` (the ``pysqlite3-binary`` wheel) is used. The connection lives in
one worker thread (a single-thread executor), so SQLite is never touched from the event loop; WAL mode and a
busy timeout let the bot's own connection share the file.

``add`` appends to a source that already exists (the service replaces a re-added file by removing it first,
and re-indexes an edited message by removing its chunks and adding the new ones).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from inference.knowledge.base import Chunk, Hit, KnowledgeIndex, Source

T = TypeVar("T")
DIMENSIONS = 384

#: Porter stemming over unicode61, so "sentient" finds "sentience" as PostgreSQL's ``english`` config does.
FTS_TOKENIZE = "tokenize='porter unicode61'"

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS knowledge_sources (
        id INTEGER PRIMARY KEY,
        server_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        channel_id INTEGER,
        added_by INTEGER,
        UNIQUE (server_id, name)
    )""",
    """CREATE TABLE IF NOT EXISTS knowledge_chunks (
        id INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL REFERENCES knowledge_sources(id) ON DELETE CASCADE,
        server_id INTEGER NOT NULL,
        text TEXT NOT NULL,
        position TEXT NOT NULL,
        context TEXT NOT NULL DEFAULT '',
        message_id INTEGER,
        channel_id INTEGER
    )""",
    "CREATE INDEX IF NOT EXISTS knowledge_chunks_source ON knowledge_chunks (source_id)",
    "CREATE INDEX IF NOT EXISTS knowledge_chunks_message ON knowledge_chunks (server_id, message_id)",
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS knowledge_vectors USING vec0(
        server_id integer partition key,
        embedding float[{DIMENSIONS}] distance_metric=cosine
    )""",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS knowledge_fts USING fts5(text, context, server_id UNINDEXED, {FTS_TOKENIZE})",
]

#: Words too common to help a keyword search (FTS5 has no stop list; BM25 discounts them, but OR-ing them
#: in lets every chunk match).
_STOP = frozenset(
    "a an and are as at be by can do does for from has have how i in is it its me my of on or our so than that "
    "the their them then there these they this to was we were what when where which who why will with you "
    "your".split()
)


def connect(path: str) -> sqlite3.Connection:
    """A connection with sqlite-vec loaded: stdlib sqlite3 where it can load extensions, else pysqlite3."""
    import sqlite_vec

    module: Any = sqlite3
    if not hasattr(sqlite3.Connection, "enable_load_extension"):
        try:
            import pysqlite3.dbapi2 as module  # type: ignore[import-not-found, no-redef]
        except ImportError as exc:
            raise RuntimeError(
                "this Python's sqlite3 can't load extensions; pip install pysqlite3-binary (or use PostgreSQL)"
            ) from exc
    conn = module.connect(path, check_same_thread=False, isolation_level=None)
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.enable_load_extension(False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    if path != ":memory:":
        conn.execute("PRAGMA journal_mode = WAL")
    return conn  # type: ignore[no-any-return]


def path_from_url(url: str) -> str:
    """The file of a ``sqlite[+driver]:///path`` URL (``:memory:`` for an in-memory one)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if not parsed.get_backend_name() == "sqlite":
        raise ValueError(f"not a SQLite URL: {parsed.render_as_string(hide_password=True)}")
    return parsed.database or ":memory:"


def fts_query(text: str) -> str | None:
    """A safe FTS5 query from free text: its words (minus stop words), each quoted, OR-ed; None when empty."""
    words = [w for w in re.findall(r"\w+", text.lower()) if w not in _STOP]
    if not words:
        words = re.findall(r"\w+", text.lower())
    words = list(dict.fromkeys(words))[:32]
    return " OR ".join(f'"{w}"' for w in words) or None


class SqliteIndex(KnowledgeIndex):
    def __init__(self, path: str) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="knowledge-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._rebuild_fts = False

    @classmethod
    async def open(cls, url_or_path: str) -> SqliteIndex:
        path = path_from_url(url_or_path) if "://" in url_or_path else url_or_path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        index = cls(path)
        await index._run(index._setup)
        return index

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _setup(self) -> None:
        self._conn = connect(self.path)
        with self._tx() as conn:
            self._upgrade_fts(conn)
            for statement in _SCHEMA:
                conn.execute(statement)
            if self._rebuild_fts:
                conn.execute(
                    "INSERT INTO knowledge_fts (rowid, text, context, server_id) "
                    "SELECT id, text, context, server_id FROM knowledge_chunks"
                )

    def _upgrade_fts(self, conn: sqlite3.Connection) -> None:
        """An index made before stemming has an FTS table with the plain tokenizer: drop it, to be rebuilt from
        the chunks (the tokenizer of an FTS5 table can't be changed in place)."""
        row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'knowledge_fts'").fetchone()
        self._rebuild_fts = row is not None and "porter" not in row[0]
        if self._rebuild_fts:
            conn.execute("DROP TABLE knowledge_fts")

    def _tx(self) -> Any:
        assert self._conn is not None, "index is closed"
        return _Transaction(self._conn)

    # --- writes -------------------------------------------------------------------------------------------

    async def add(self, source: Source, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        await self._run(self._add, source, list(chunks), vecs)

    def _add(self, source: Source, chunks: list[Chunk], vectors: np.ndarray) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO knowledge_sources (server_id, name, kind, channel_id, added_by) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (server_id, name) DO UPDATE SET kind = excluded.kind, channel_id = excluded.channel_id",
                (source.server_id, source.name, source.kind, source.channel_id, source.added_by),
            )
            (source_id,) = conn.execute(
                "SELECT id FROM knowledge_sources WHERE server_id = ? AND name = ?", (source.server_id, source.name)
            ).fetchone()
            for chunk, vector in zip(chunks, vectors, strict=True):
                cur = conn.execute(
                    "INSERT INTO knowledge_chunks (source_id, server_id, text, position, context, message_id, "
                    "channel_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        source_id,
                        source.server_id,
                        chunk.text,
                        chunk.position,
                        chunk.context,
                        chunk.message_id,
                        chunk.channel_id if chunk.channel_id is not None else source.channel_id,
                    ),
                )
                rowid = cur.lastrowid
                conn.execute(
                    "INSERT INTO knowledge_vectors (rowid, server_id, embedding) VALUES (?, ?, ?)",
                    (rowid, source.server_id, vector.tobytes()),
                )
                conn.execute(
                    "INSERT INTO knowledge_fts (rowid, text, context, server_id) VALUES (?, ?, ?, ?)",
                    (rowid, chunk.text, chunk.context, source.server_id),
                )

    def _delete_chunks(self, conn: Any, ids: list[int]) -> None:
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            marks = ",".join("?" * len(part))
            conn.execute(f"DELETE FROM knowledge_vectors WHERE rowid IN ({marks})", part)
            conn.execute(f"DELETE FROM knowledge_fts WHERE rowid IN ({marks})", part)
            conn.execute(f"DELETE FROM knowledge_chunks WHERE id IN ({marks})", part)

    async def remove(self, server_id: int, name: str) -> bool:
        return await self._run(self._remove, server_id, name)

    def _remove(self, server_id: int, name: str) -> bool:
        with self._tx() as conn:
            row = conn.execute(
                "SELECT id FROM knowledge_sources WHERE server_id = ? AND name = ?", (server_id, name)
            ).fetchone()
            if row is None:
                return False
            ids = [r[0] for r in conn.execute("SELECT id FROM knowledge_chunks WHERE source_id = ?", (row[0],))]
            self._delete_chunks(conn, ids)
            conn.execute("DELETE FROM knowledge_sources WHERE id = ?", (row[0],))
            return True

    async def remove_message(self, server_id: int, message_id: int) -> int:
        return await self._run(self._remove_message, server_id, message_id)

    def _remove_message(self, server_id: int, message_id: int) -> int:
        with self._tx() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM knowledge_chunks WHERE server_id = ? AND message_id = ?", (server_id, message_id)
                )
            ]
            self._delete_chunks(conn, ids)
            return len(ids)

    # --- reads --------------------------------------------------------------------------------------------

    async def sources(self, server_id: int) -> list[Source]:
        return await self._run(self._sources, server_id)

    def _sources(self, server_id: int) -> list[Source]:
        assert self._conn is not None
        rows = self._conn.execute(
            "SELECT s.name, s.kind, s.channel_id, s.added_by, "
            "(SELECT count(*) FROM knowledge_chunks c WHERE c.source_id = s.id) "
            "FROM knowledge_sources s WHERE s.server_id = ? ORDER BY s.name",
            (server_id,),
        ).fetchall()
        return [
            Source(server_id=server_id, name=n, kind=k, channel_id=ch, added_by=by, chunks=count)
            for n, k, ch, by, count in rows
        ]

    _HIT_COLUMNS = "c.id, s.name, c.text, c.position, c.context, c.message_id, c.channel_id"

    def _hits(self, conn: sqlite3.Connection, ranked: list[tuple[int, float]]) -> list[Hit]:
        if not ranked:
            return []
        marks = ",".join("?" * len(ranked))
        rows = {
            r[0]: r
            for r in conn.execute(
                f"SELECT {self._HIT_COLUMNS} FROM knowledge_chunks c JOIN knowledge_sources s ON s.id = c.source_id "
                f"WHERE c.id IN ({marks})",
                [rowid for rowid, _ in ranked],
            )
        }
        hits = []
        for rowid, score in ranked:
            if rowid not in rows:
                continue
            _, name, text, position, context, message_id, channel_id = rows[rowid]
            chunk = Chunk(text=text, position=position, context=context, message_id=message_id, channel_id=channel_id)
            hits.append(Hit(chunk=chunk, source=name, score=score))
        return hits

    async def vector_search(self, server_id: int, vector: np.ndarray, k: int) -> list[Hit]:
        vec = np.ascontiguousarray(vector, dtype=np.float32).reshape(-1)
        return await self._run(self._vector_search, server_id, vec, k)

    def _vector_search(self, server_id: int, vector: np.ndarray, k: int) -> list[Hit]:
        assert self._conn is not None
        ranked = self._conn.execute(
            "SELECT rowid, distance FROM knowledge_vectors WHERE embedding MATCH ? AND k = ? AND server_id = ? "
            "ORDER BY distance",
            (vector.tobytes(), k, server_id),
        ).fetchall()
        # cosine distance -> cosine similarity
        return self._hits(self._conn, [(rowid, 1.0 - float(distance)) for rowid, distance in ranked])

    async def keyword_search(self, server_id: int, query: str, k: int) -> list[Hit]:
        return await self._run(self._keyword_search, server_id, query, k)

    def _keyword_search(self, server_id: int, query: str, k: int) -> list[Hit]:
        assert self._conn is not None
        match = fts_query(query)
        if match is None:
            return []
        ranked = self._conn.execute(
            "SELECT rowid, bm25(knowledge_fts) FROM knowledge_fts WHERE knowledge_fts MATCH ? AND server_id = ? "
            "ORDER BY rank LIMIT ?",
            (match, server_id, k),
        ).fetchall()
        return self._hits(self._conn, [(rowid, -float(score)) for rowid, score in ranked])

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._pool, conn.close)
        self._pool.shutdown(wait=False)


class _Transaction:
    """``with`` block around BEGIN IMMEDIATE ... COMMIT/ROLLBACK on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
