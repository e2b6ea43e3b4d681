"""The knowledge base's records and the one interface every index implements (see the package docstring)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

SourceKind = Literal["file", "message", "pins", "channel"]


@dataclass(frozen=True)
class Source:
    """One indexed thing a server added: a file, a message, a channel's pins or a whole channel."""

    server_id: int
    #: Unique per server: a file name, or a Discord reference such as ``channel:123`` / ``message:123/456``.
    name: str
    kind: SourceKind
    #: The Discord channel the text comes from (None for files): a chunk is used only for users who can read it.
    channel_id: int | None = None
    chunks: int = 0
    added_by: int | None = None


@dataclass(frozen=True)
class Chunk:
    """A piece of a source, small enough to embed and to quote."""

    text: str
    #: Where it is, for a citation: "section 'Meetings', lines 3-5", "page 2", or a message jump link.
    position: str
    #: Heading path or message author, kept with the text for retrieval and display.
    context: str = ""
    #: The Discord message the chunk came from (message sources; edits and deletes update it).
    message_id: int | None = None
    channel_id: int | None = None


@dataclass(frozen=True)
class MessageText:
    """A Discord message as the knowledge base sees it (the bot converts; nothing here imports discord)."""

    id: int
    channel_id: int
    author: str
    content: str
    jump_url: str


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    source: str
    score: float
    #: Ranks in each list before fusion (None when absent from that list).
    vector_rank: int | None = None
    keyword_rank: int | None = None


@dataclass(frozen=True)
class Citation:
    source: str
    position: str
    quote: str


@dataclass
class KnowledgeAnswer:
    text: str
    citations: list[Citation] = field(default_factory=list)
    #: The route that answered (an inference.types.RouteDecision as JSON), for the CLI's stderr line.
    route: dict[str, object] = field(default_factory=dict)
    #: True when nothing relevant was indexed: the text says so and no model invented an answer.
    nothing_found: bool = False


#: Decides whether the asking user may read a channel now (checked at question time, not at indexing time).
CanRead = Callable[[int], bool]


class KnowledgeIndex(abc.ABC):
    """Storage and search for one database; every method is scoped to one server."""

    @abc.abstractmethod
    async def add(self, source: Source, chunks: Sequence[Chunk], vectors: np.ndarray) -> None: ...

    @abc.abstractmethod
    async def remove(self, server_id: int, name: str) -> bool:
        """Every chunk, vector and keyword entry of the source goes; False when there was no such source."""

    @abc.abstractmethod
    async def sources(self, server_id: int) -> list[Source]: ...

    @abc.abstractmethod
    async def vector_search(self, server_id: int, vector: np.ndarray, k: int) -> list[Hit]: ...

    @abc.abstractmethod
    async def keyword_search(self, server_id: int, query: str, k: int) -> list[Hit]: ...

    @abc.abstractmethod
    async def remove_message(self, server_id: int, message_id: int) -> int:
        """Drop the chunks of one Discord message (deleted, or about to be re-indexed after an edit)."""

    @abc.abstractmethod
    async def close(self) -> None: ...
