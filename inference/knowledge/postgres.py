"""The knowledge index on PostgreSQL: pgvector (HNSW, cosine distance) beside PostgreSQL full text (tsvector + GIN).

Two tables, created idempotently (``create extension if not exists vector`` first):

- ``knowledge_sources``: one row per (server, name);
- ``knowledge_chunks``: the chunk text, its citation position, its vector (``vector(dim)``, HNSW index with
  ``vector_cosine_ops``) and a generated ``tsvector`` column (GIN index), ``on delete cascade`` from its source, so
  removing a source removes every chunk, vector and keyword entry of it in one statement.

Every query filters on ``server_id``. A nearest-neighbour query with a filter can lose rows in an approximate index,
so each vector search turns on pgvector's iterative index scan (``hnsw.iterative_scan``, pgvector >= 0.8) for its
own transaction: the index keeps scanning until it has ``k`` rows of that server. (Older pgvector: a larger
``hnsw.ef_search`` only.) Large adds refresh the planner's statistics so it picks the HNSW index over an exact
ranking of the server's rows once the server has many.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Column,
    Computed,
    ForeignKey,
    Index,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    delete,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import TSVECTOR, insert
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from inference.knowledge.base import Chunk, Hit, KnowledgeIndex, Source

#: all-MiniLM-L6-v2's output size.
DEFAULT_DIM = 384
#: The text search configuration for the keyword column and the queries.
TS_CONFIG = "english"
#: After adding this many chunks at once, refresh the planner's statistics (``ANALYZE``) instead of waiting for
#: autovacuum: with stale counts the planner may rank a large server's rows exactly instead of using the HNSW index.
ANALYZE_AFTER = 500
#: How many candidates an HNSW scan keeps (pgvector's default is 40); raised to at least k per query.
EF_SEARCH = 64
MAX_EF_SEARCH = 1000  # pgvector's limit


def _version(value: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", value)[:3])


_TOKEN = re.compile(r"\w(?:[\w.\-]*\w)?")


def asyncpg_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` / ``postgresql+asyncpg://`` -> the URL SQLAlchemy's async engine needs."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {url.split('://')[0]}://...")
    return "postgresql+asyncpg://" + rest


def keyword_query(query: str) -> str:
    """A question in words -> a ``websearch_to_tsquery`` string matching ANY of its words.

    ``websearch_to_tsquery`` alone ANDs every word, so one word missing from a chunk ("when are the meetings held")
    loses it; OR-ing the words and ranking by ``ts_rank`` (how often the query's words occur) lets the chunks with the
    most matches come first. ``ts_rank_cd`` (cover density) ranks one-word matches of an OR query poorly: on
    bench/retrieval.py's FAQ set its keyword recall@5 was 0.69 against ``ts_rank``'s 0.74. Codes and rule numbers
    ("B12", "4.2", "x-ray") stay whole tokens.
    """
    words = [w for w in _TOKEN.findall(query) if w.lower() != "or"]
    return " or ".join(words)


def _tables(dim: int) -> tuple[MetaData, Table, Table]:
    metadata = MetaData()
    sources = Table(
        "knowledge_sources",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("server_id", BigInteger, nullable=False),
        Column("name", Text, nullable=False),
        Column("kind", Text, nullable=False),
        Column("channel_id", BigInteger),
        Column("added_by", BigInteger),
        UniqueConstraint("server_id", "name", name="uq_knowledge_sources_server_name"),
    )
    chunks = Table(
        "knowledge_chunks",
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("source_id", BigInteger, ForeignKey("knowledge_sources.id", ondelete="CASCADE"), nullable=False),
        Column("server_id", BigInteger, nullable=False),
        Column("text", Text, nullable=False),
        Column("position", Text, nullable=False),
        Column("context", Text, nullable=False, server_default=""),
        Column("message_id", BigInteger),
        Column("channel_id", BigInteger),
        Column("embedding", Vector(dim), nullable=False),
        Column(
            "tsv",
            TSVECTOR,
            Computed(f"to_tsvector('{TS_CONFIG}', coalesce(context, '') || ' ' || text)", persisted=True),
        ),
        Index("ix_knowledge_chunks_source", "source_id"),
        Index("ix_knowledge_chunks_message", "server_id", "message_id"),
        Index("ix_knowledge_chunks_tsv", "tsv", postgresql_using="gin"),
        Index(
            "ix_knowledge_chunks_embedding",
            "embedding",
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )
    return metadata, sources, chunks


class PostgresIndex(KnowledgeIndex):
    """:class:`KnowledgeIndex` on PostgreSQL + pgvector through SQLAlchemy's async engine and asyncpg."""

    def __init__(self, engine: AsyncEngine, dim: int = DEFAULT_DIM) -> None:
        self._engine = engine
        self.dim = dim
        self._metadata, self._sources, self._chunks = _tables(dim)
        #: pgvector >= 0.8 can keep scanning a filtered HNSW search until it has k rows (set by create_schema).
        self.iterative_scan = False

    @classmethod
    async def open(cls, database_url: str, *, dim: int = DEFAULT_DIM, **engine_options: Any) -> PostgresIndex:
        """Connect and create the extension, tables and indexes where they are missing."""
        engine = create_async_engine(asyncpg_url(database_url), **engine_options)
        index = cls(engine, dim)
        try:
            await index.create_schema()
        except BaseException:
            await engine.dispose()
            raise
        return index

    async def create_schema(self) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            version = (
                await conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'"))
            ).scalar()
            self.iterative_scan = _version(str(version)) >= (0, 8)
            await conn.run_sync(self._metadata.create_all)

    # -- writing ------------------------------------------------------------------------------------------------

    async def add(self, source: Source, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Store ``chunks`` under ``source`` (created, or updated and appended to when the name exists)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if len(chunks) and vectors.shape != (len(chunks), self.dim):
            raise ValueError(f"expected {len(chunks)} vectors of {self.dim} numbers, got shape {vectors.shape}")
        s = self._sources
        upsert = insert(s).values(
            server_id=source.server_id,
            name=source.name,
            kind=source.kind,
            channel_id=source.channel_id,
            added_by=source.added_by,
        )
        statement = upsert.on_conflict_do_update(
            constraint="uq_knowledge_sources_server_name",
            set_={
                "kind": upsert.excluded.kind,
                "channel_id": upsert.excluded.channel_id,
                "added_by": func.coalesce(upsert.excluded.added_by, s.c.added_by),
            },
        ).returning(s.c.id)
        async with self._engine.begin() as conn:
            source_id = (await conn.execute(statement)).scalar_one()
            rows = [
                {
                    "source_id": source_id,
                    "server_id": source.server_id,
                    "text": chunk.text,
                    "position": chunk.position,
                    "context": chunk.context,
                    "message_id": chunk.message_id,
                    "channel_id": chunk.channel_id if chunk.channel_id is not None else source.channel_id,
                    "embedding": vector,
                }
                for chunk, vector in zip(chunks, vectors, strict=True)
            ]
            for start in range(0, len(rows), 1000):
                await conn.execute(self._chunks.insert(), rows[start : start + 1000])
        if len(chunks) >= ANALYZE_AFTER:
            async with self._engine.connect() as conn:
                await conn.execute(text("ANALYZE knowledge_chunks"))
                await conn.commit()

    async def remove(self, server_id: int, name: str) -> bool:
        s = self._sources
        async with self._engine.begin() as conn:
            # Chunks go with their source (on delete cascade): vectors and tsvectors live in the same rows.
            result = await conn.execute(delete(s).where(s.c.server_id == server_id, s.c.name == name).returning(s.c.id))
            return result.first() is not None

    async def remove_message(self, server_id: int, message_id: int) -> int:
        c = self._chunks
        async with self._engine.begin() as conn:
            result = await conn.execute(
                delete(c).where(c.c.server_id == server_id, c.c.message_id == message_id).returning(c.c.id)
            )
            return len(result.all())

    # -- reading ------------------------------------------------------------------------------------------------

    async def sources(self, server_id: int) -> list[Source]:
        s, c = self._sources, self._chunks
        counts = select(c.c.source_id, func.count().label("n")).group_by(c.c.source_id).subquery()
        query = (
            select(s, func.coalesce(counts.c.n, 0).label("n"))
            .outerjoin(counts, counts.c.source_id == s.c.id)
            .where(s.c.server_id == server_id)
            .order_by(s.c.name)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [
            Source(
                server_id=row["server_id"],
                name=row["name"],
                kind=row["kind"],
                channel_id=row["channel_id"],
                chunks=int(row["n"]),
                added_by=row["added_by"],
            )
            for row in rows
        ]

    def _hit_columns(self) -> list[Any]:
        c = self._chunks
        return [c.c.text, c.c.position, c.c.context, c.c.message_id, c.c.channel_id, self._sources.c.name]

    @staticmethod
    def _chunk(row: Any) -> Chunk:
        return Chunk(
            text=row.text,
            position=row.position,
            context=row.context,
            message_id=row.message_id,
            channel_id=row.channel_id,
        )

    async def vector_search(self, server_id: int, vector: np.ndarray, k: int) -> list[Hit]:
        if k <= 0:
            return []
        c = self._chunks
        query_vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        distance = c.c.embedding.cosine_distance(query_vector).label("distance")
        query = (
            select(*self._hit_columns(), distance)
            .join(self._sources, self._sources.c.id == c.c.source_id)
            .where(c.c.server_id == server_id)
            .order_by(distance)
            .limit(k)
        )
        async with self._engine.begin() as conn:
            # Filtered approximate search: keep scanning the HNSW graph until k rows of this server are found.
            if self.iterative_scan:
                await conn.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
            await conn.execute(text(f"SET LOCAL hnsw.ef_search = {min(MAX_EF_SEARCH, max(EF_SEARCH, int(k)))}"))
            rows = (await conn.execute(query)).all()
        return [
            Hit(chunk=self._chunk(row), source=row.name, score=1.0 - float(row.distance), vector_rank=rank)
            for rank, row in enumerate(rows, start=1)
        ]

    async def keyword_search(self, server_id: int, query: str, k: int) -> list[Hit]:
        words = keyword_query(query)
        if k <= 0 or not words:
            return []
        c = self._chunks
        tsquery = func.websearch_to_tsquery(literal_column(f"'{TS_CONFIG}'::regconfig"), words)
        rank = func.ts_rank(c.c.tsv, tsquery).label("rank")
        statement = (
            select(*self._hit_columns(), rank)
            .join(self._sources, self._sources.c.id == c.c.source_id)
            .where(c.c.server_id == server_id, c.c.tsv.op("@@")(tsquery))
            .order_by(rank.desc(), c.c.id)
            .limit(k)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [
            Hit(chunk=self._chunk(row), source=row.name, score=float(row.rank), keyword_rank=position)
            for position, row in enumerate(rows, start=1)
        ]

    async def close(self) -> None:
        await self._engine.dispose()
