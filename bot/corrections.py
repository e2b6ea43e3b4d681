"""What each server teaches the router: users' corrections of routes, as a nearest-neighbour memory.

"Ask the larger model" and "Wrong task?" under an answer store a :class:`~bot.storage.Correction`. Each server's
corrections become an :class:`~inference.classifier.bank.ExampleBank` over the task classifier's own embedding of
the request, which the router consults before its global decision (``Router.route(memory=...)``): a new request
close enough to a corrected one takes the corrected task, or the large tier. Corrections never cross servers;
an admin sees and undoes them (``/route corrections``) and exports them as labelled data for the next global
training (the format of ``config/classifier/train.jsonl``).

Banks are built lazily per server (embedding each stored request off the event loop) and rebuilt after
``REFRESH_S`` so corrections made through another bot process on the same database arrive too.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bot.storage import Correction, Store
from inference.classifier.bank import ExampleBank
from inference.types import Request, TaskId, Tier

log = logging.getLogger(__name__)

#: A server's memory holds its newest corrections, at most this many.
MAX_PER_SERVER = 500
#: Seconds a built memory is used before it is rebuilt from the database (other processes' corrections).
REFRESH_S = 60.0

Embed = Callable[[Request], "np.ndarray | None"]


@dataclass
class _Memory:
    bank: ExampleBank | None
    built_at: float
    #: Correction id -> its request's embedding: a rebuild embeds only corrections it has not seen.
    vectors: dict[int, np.ndarray]


class Corrections:
    """Record, list, undo and export a server's corrections; give the router its memory of them."""

    def __init__(self, store: Store, embed: Embed, *, clock: Callable[[], float]) -> None:
        self.store = store
        #: The task classifier's embedding of a request (None where the classifier has none, e.g. a test stand-in).
        self.embed = embed
        self.clock = clock
        self._memories: dict[int, _Memory] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    async def memory(self, guild_id: int | None) -> ExampleBank | None:
        """The server's corrected examples for the router (None: none, or in direct messages)."""
        if guild_id is None:
            return None
        cached = self._memories.get(guild_id)
        if cached is not None and self.clock() - cached.built_at < REFRESH_S:
            return cached.bank
        async with self._locks.setdefault(guild_id, asyncio.Lock()):
            cached = self._memories.get(guild_id)
            if cached is not None and self.clock() - cached.built_at < REFRESH_S:
                return cached.bank
            rows = await self.store.corrections(guild_id, limit=MAX_PER_SERVER)
            known = cached.vectors if cached is not None else {}
            vectors = await asyncio.to_thread(self._embed_new, rows, known) if rows else {}
            bank = _bank(rows, vectors)
            self._memories[guild_id] = _Memory(bank, self.clock(), vectors)
            return bank

    def _embed_new(self, rows: list[Correction], known: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        """Each row's embedding: reused where already computed, else embedded now (off the event loop)."""
        out: dict[int, np.ndarray] = {}
        for row in rows:
            vector = known.get(row.id)
            if vector is None:
                vector = self.embed(Request(text=row.text))
                if vector is None:  # a classifier without embeddings: no memory at all
                    return {}
            out[row.id] = vector
        return out

    async def record(
        self,
        guild_id: int,
        user_id: int,
        text: str,
        *,
        kind: Literal["larger", "task"],
        routed_task: TaskId,
        routed_tier: Tier,
        task: TaskId,
        channel_id: int | None = None,
    ) -> Correction:
        """Store a correction; the server's memory has it from the next request on."""
        correction = await self.store.add_correction(
            guild_id,
            user_id,
            text,
            kind=kind,
            routed_task=routed_task,
            routed_tier=routed_tier,
            task=task,
            channel_id=channel_id,
        )
        self._stale(guild_id)
        log.info("server %s: %s correction #%s (%s -> %s)", guild_id, kind, correction.id, routed_task, task)
        return correction

    async def undo(self, guild_id: int, actor_id: int, correction_id: int) -> Correction:
        removed = await self.store.remove_correction(guild_id, actor_id, correction_id)
        self._stale(guild_id)
        return removed

    def _stale(self, guild_id: int) -> None:
        """The next request rebuilds the server's memory (keeping the embeddings it already has)."""
        if (cached := self._memories.get(guild_id)) is not None:
            cached.built_at = -REFRESH_S

    async def latest(self, guild_id: int, limit: int = MAX_PER_SERVER) -> list[Correction]:
        return await self.store.corrections(guild_id, limit=limit)

    async def export(self, guild_id: int) -> bytes:
        """JSON Lines in the training file's format (``text``, ``task``, ``hard``), oldest first."""
        rows = reversed(await self.store.corrections(guild_id, limit=None))
        lines = []
        for row in rows:
            task, large = example(row)
            lines.append(json.dumps({"text": row.text, "task": task, "hard": large}, ensure_ascii=False))
        return ("\n".join(lines) + "\n").encode() if lines else b""


def _bank(rows: list[Correction], vectors: dict[int, np.ndarray]) -> ExampleBank | None:
    """The rows that have an embedding, as a bank (None when none has)."""
    rows = [r for r in rows if r.id in vectors]
    if not rows:
        return None
    labels = [example(r) for r in rows]
    bank = ExampleBank(len(vectors[rows[0].id]))
    bank.add_many(np.stack([vectors[r.id] for r in rows]), [t for t, _ in labels], [h for _, h in labels])
    return bank


def example(row: Correction) -> tuple[TaskId, bool]:
    """What a correction teaches: the task the request should take, and whether it needs the large tier.

    "Ask the larger model" keeps the task and says large; "Wrong task?" gives the task and keeps the tier the
    request was answered on (the user said nothing about the tier)."""
    task: TaskId = row.task  # type: ignore[assignment]
    if row.kind == "larger":
        return task, True
    return task, row.routed_tier == Tier.LARGE.value
