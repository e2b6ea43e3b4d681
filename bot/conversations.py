"""Thread conversations that remember: their rows, their stored turns and one turn at a time per thread.

Discord-agnostic like :mod:`bot.answering` (thread ids in, records out): the chat cog decides when a
conversation starts, is answered or ends; this keeps what it said.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bot.answering import Prepared
from bot.storage import Conversation, Store
from inference.serving.service import Switchboard
from inference.types import ChatMessage, Tier


class ConversationService:
    def __init__(self, store: Store, board: Switchboard) -> None:
        self.store = store
        self.board = board
        #: thread id -> (lock, tasks using it): turns in one thread run one after another.
        self._turns: dict[int, tuple[asyncio.Lock, int]] = {}

    async def start(self, thread_id: int, guild_id: int, channel_id: int, user_id: int) -> Conversation:
        """A new conversation in ``thread_id``; it starts on the small tier (a hard message moves it up)."""
        return await self.store.create_conversation(
            thread_id=thread_id,
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=user_id,
            tier=Tier.SMALL,
            model="",
            system_prompt=None,
        )

    async def open(self, thread_id: int) -> Conversation | None:
        """The thread's conversation while it is open; None when there is none or it was closed."""
        conversation = await self.store.get_conversation(thread_id)
        return None if conversation is None or conversation.closed else conversation

    async def history(self, thread_id: int) -> list[ChatMessage]:
        """Every stored turn, oldest first (trimmed to the model's context when answering)."""
        return [m.as_chat() for m in await self.store.history(thread_id)]

    async def record_turn(self, conversation: Conversation, prompt: str, prepared: Prepared, text: str) -> None:
        """Keep an answered turn: the prompt and the answer, counted in the answering model's tokens, and the
        tier and model that answered when they changed."""
        thread_id = conversation.thread_id
        answer = prepared.answer
        count = (await self.board.backend(answer.model, prepared.scope.catalogue, start=False)).count_tokens
        await self.store.add_message(thread_id, "user", prompt, count(prompt))
        await self.store.add_message(thread_id, "assistant", text, count(text))
        if answer.tier is not conversation.tier or answer.model != conversation.model:
            await self.store.set_conversation_tier(thread_id, answer.tier, answer.model)

    async def close(self, thread_id: int) -> None:
        await self.store.close_conversation(thread_id)

    @contextlib.asynccontextmanager
    async def turn(self, thread_id: int) -> AsyncIterator[None]:
        """One turn at a time per thread, so each answer sees the previous exchange."""
        lock, users = self._turns.get(thread_id, (asyncio.Lock(), 0))
        self._turns[thread_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[thread_id]
            if users == 1:
                del self._turns[thread_id]
            else:
                self._turns[thread_id] = (lock, users - 1)
