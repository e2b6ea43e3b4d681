"""The knowledge base: what the Discord side and the command line call (see the package docstring).

- Adding a source replaces one of the same name (chunks, vectors and keyword rows); the text is chunked,
  embedded in batches off the event loop (``progress(done, total)`` after each batch) and written in one
  transaction, so a half-indexed source is never searched.
- ``search``: the vector and keyword rankings (each over the server's own chunks only, with extra candidates
  so that filtering still leaves ``k``), chunks from channels the asking user can't read now dropped, then
  reciprocal rank fusion.
- ``answer``: when nothing relevant is found (no keyword match and no chunk with a cosine similarity of at
  least :data:`MIN_SIMILARITY`) it says so and runs no model; otherwise the routed ``rag`` model answers from
  the quoted chunks, marked as data, and the answer carries their citations.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from inference.knowledge.base import (
    CanRead,
    Chunk,
    Citation,
    Hit,
    KnowledgeAnswer,
    KnowledgeIndex,
    MessageText,
    Source,
    SourceKind,
)
from inference.knowledge.chunking import chunk_file, chunk_messages, chunk_texts
from inference.knowledge.fusion import rrf
from inference.types import Request

if TYPE_CHECKING:
    from inference.catalogue import Catalogue, RoutingOverrides
    from inference.serving.service import Switchboard

log = logging.getLogger(__name__)

Progress = Callable[[int, int], Awaitable[None]]
#: Chunks embedded per progress step.
EMBED_STEP = 64
#: Below this cosine similarity a chunk found only by its vector is not relevant. Measured with the int8 MiniLM
#: on a small club-rules set: answerable questions scored 0.41-0.65 against their chunk, unrelated ones
#: ("who painted Guernica?", "capital of Peru?") 0.07-0.14.
MIN_SIMILARITY = 0.3
#: A keyword match counts at a lower similarity (names, codes and rule numbers), but not when unrelated.
KEYWORD_MIN_SIMILARITY = 0.15
#: Candidates taken from each ranking per hit wanted (room for the permission filter and fusion).
CANDIDATES = 4
#: Longest answer generated from the sources (they are quoted in the citations anyway).
ANSWER_TOKENS = 256
#: Longest quote in a citation.
QUOTE_CHARS = 300
NOTHING_FOUND = (
    "I couldn't find anything relevant in this server's indexed documents, so I won't guess. "
    "An admin can add documents with `/docs add`."
)


class Embeds(Protocol):
    async def aembed(self, texts: Sequence[str]) -> np.ndarray: ...


class KnowledgeBase:
    def __init__(self, index: KnowledgeIndex, embedder: Embeds) -> None:
        self.index = index
        self.embedder = embedder

    @classmethod
    async def open(cls, database_url: str, cache_dir: Path) -> KnowledgeBase:
        """The index for the bot's database URL (SQLite or PostgreSQL) and the packaged embedder."""
        import asyncio

        from inference.knowledge.embedder import Embedder

        embedder = await asyncio.to_thread(Embedder.load, cache_dir)
        return cls(await open_index(database_url), embedder)

    # --- adding and removing ------------------------------------------------------------------------------

    async def add_file(
        self,
        server_id: int,
        name: str,
        data: bytes,
        *,
        added_by: int | None = None,
        progress: Progress | None = None,
    ) -> Source:
        """Index a file (replacing one of the same name); ``DocumentRejected`` (a BadRequest) when it can't be."""
        import asyncio

        chunks = await asyncio.to_thread(chunk_file, name, data)
        source = Source(server_id=server_id, name=name, kind="file", added_by=added_by)
        return await self._add(source, chunks, progress)

    async def add_messages(
        self,
        server_id: int,
        name: str,
        kind: SourceKind,
        messages: Sequence[MessageText],
        *,
        channel_id: int | None,
        added_by: int | None = None,
        progress: Progress | None = None,
    ) -> Source:
        source = Source(server_id=server_id, name=name, kind=kind, channel_id=channel_id, added_by=added_by)
        return await self._add(source, chunk_messages(messages), progress)

    async def _add(self, source: Source, chunks: list[Chunk], progress: Progress | None) -> Source:
        vectors = await self._embed(chunk_texts(chunks), progress)
        await self.index.remove(source.server_id, source.name)
        await self.index.add(source, chunks, vectors)
        log.info("indexed %s for server %s: %d chunks", source.name, source.server_id, len(chunks))
        return Source(
            server_id=source.server_id,
            name=source.name,
            kind=source.kind,
            channel_id=source.channel_id,
            chunks=len(chunks),
            added_by=source.added_by,
        )

    async def _embed(self, texts: list[str], progress: Progress | None) -> np.ndarray:
        parts = []
        for start in range(0, len(texts), EMBED_STEP):
            parts.append(await self.embedder.aembed(texts[start : start + EMBED_STEP]))
            if progress is not None:
                await progress(min(start + EMBED_STEP, len(texts)), len(texts))
        if not parts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.concatenate(parts).astype(np.float32)

    async def update_message(self, server_id: int, message: MessageText) -> bool:
        """Re-index an edited message if it is indexed (False, and nothing done, when it is not)."""
        source = _owner(await self.index.sources(server_id), message)
        if source is None:
            return False
        chunks = chunk_messages([message])
        # Embedded before the old chunks go, so a failure here leaves the old text searchable, not nothing.
        vectors = await self._embed(chunk_texts(chunks), None)
        if await self.index.remove_message(server_id, message.id) == 0:
            return False
        await self.index.add(source, chunks, vectors)
        return True

    async def append_message(self, source: Source, message: MessageText) -> None:
        """Add one new message to an existing source (a watched channel), embedding only that message."""
        chunks = chunk_messages([message])
        await self.index.add(source, chunks, await self._embed(chunk_texts(chunks), None))

    async def remove_message(self, server_id: int, message_id: int) -> int:
        return await self.index.remove_message(server_id, message_id)

    async def remove(self, server_id: int, name: str) -> bool:
        return await self.index.remove(server_id, name)

    async def sources(self, server_id: int) -> list[Source]:
        return await self.index.sources(server_id)

    # --- searching and answering --------------------------------------------------------------------------

    async def search(self, server_id: int, query: str, *, can_read: CanRead, k: int = 5) -> list[Hit]:
        """The ``k`` best relevant chunks the asker may read, fused; empty when nothing relevant is indexed."""
        if not query.strip():
            return []
        vector = (await self.embedder.aembed([query]))[0]
        wanted = k * CANDIDATES
        by_vector = _readable(await self.index.vector_search(server_id, vector, wanted), can_read)
        by_keyword = _readable(await self.index.keyword_search(server_id, query, wanted), can_read)
        similarity = {_key(h): h.score for h in by_vector}
        return [h for h in rrf(by_vector, by_keyword) if _relevant(h, similarity.get(_key(h)))][:k]

    async def answer(
        self,
        server_id: int,
        question: str,
        *,
        can_read: CanRead,
        board: Switchboard,
        overrides: RoutingOverrides | None = None,
        catalogue: Catalogue | None = None,
    ) -> KnowledgeAnswer:
        from inference.tasks.pending import RagPipeline

        decision = board.route(Request(text=question), task="rag", overrides=overrides, catalogue=catalogue)
        hits = await self.search(server_id, question, can_read=can_read)
        if not hits:
            return KnowledgeAnswer(NOTHING_FOUND, [], route=decision.as_json(), nothing_found=True)
        limit = min(ANSWER_TOKENS, (catalogue or board.catalogue).get(decision.model).max_new_tokens)
        quoted = [(h.source, h.chunk.position, h.chunk.text) for h in hits]
        prepared = RagPipeline().prepare_sources(question, quoted, max_new_tokens=limit)
        answer = board.answer(
            decision, prepared.messages, params=prepared.params, overrides=overrides, catalogue=catalogue
        )
        text = "".join([piece async for piece in answer]).strip()
        route = decision.as_json() | {"model": answer.model, "tier": answer.tier.value, "notes": list(answer.notes)}
        return KnowledgeAnswer(text, citations(hits), route=route)

    async def close(self) -> None:
        await self.index.close()


def _key(hit: Hit) -> tuple[str, str, str]:
    return (hit.source, hit.chunk.position, hit.chunk.text)


def _relevant(hit: Hit, similarity: float | None) -> bool:
    """Close in meaning, or a keyword match that is not plainly unrelated in meaning (a keyword match outside
    the vector candidates, in a large index, is trusted: exact names and codes are what vectors miss)."""
    if similarity is None:
        return hit.keyword_rank is not None
    return similarity >= MIN_SIMILARITY or (hit.keyword_rank is not None and similarity >= KEYWORD_MIN_SIMILARITY)


def citations(hits: Sequence[Hit]) -> list[Citation]:
    out = []
    for hit in hits:
        quote = " ".join(hit.chunk.text.split())
        if len(quote) > QUOTE_CHARS:
            quote = quote[: QUOTE_CHARS - 1].rsplit(" ", 1)[0] + "…"
        out.append(Citation(source=hit.source, position=hit.chunk.position, quote=quote))
    return out


def citation_lines(hits: Sequence[Hit]) -> str:
    """The citations as a block shown after an answer: ``[n] source, position: "quote"`` per line."""
    lines = [f'[{n}] {c.source}, {c.position}: "{c.quote}"' for n, c in enumerate(citations(hits), start=1)]
    return "\n\nSources:\n" + "\n".join(lines) if lines else ""


def _readable(hits: list[Hit], can_read: CanRead) -> list[Hit]:
    """Hits the asking user may see now: file chunks, and channel chunks of channels they can read."""
    allowed: dict[int, bool] = {}
    out = []
    for hit in hits:
        channel = hit.chunk.channel_id
        if channel is not None:
            if channel not in allowed:
                allowed[channel] = bool(can_read(channel))
            if not allowed[channel]:
                continue
        out.append(hit)
    return out


def _owner(sources: list[Source], message: MessageText) -> Source | None:
    """The source an indexed message belongs to: its own ``message:`` source, else its channel's."""
    same_channel = [s for s in sources if s.channel_id == message.channel_id]
    for kinds in (("message",), ("channel",), ("pins",)):
        for source in same_channel:
            if source.kind in kinds and (kinds != ("message",) or source.name.endswith(f"/{message.id}")):
                return source
    return None


async def open_index(database_url: str) -> KnowledgeIndex:
    """SQLite (sqlite-vec + FTS5) for ``sqlite`` URLs, PostgreSQL (pgvector + full text) for ``postgresql`` ones."""
    scheme = database_url.split(":", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":
        from inference.knowledge.sqlite import SqliteIndex

        return await SqliteIndex.open(database_url)
    if scheme in ("postgresql", "postgres"):
        from inference.knowledge.postgres import PostgresIndex

        return await PostgresIndex.open(database_url)
    raise ValueError(f"no knowledge index for database URLs of kind {scheme!r}")
