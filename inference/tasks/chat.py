"""Chat: the bot's persona, free text, the conversation so far."""

from __future__ import annotations

from typing import ClassVar

from inference.tasks.base import DATA_NOT_INSTRUCTIONS, Framing, TaskPipeline
from inference.types import TaskId

PERSONA = (
    "You are Switchboard, a helpful assistant in a Discord server. Answer concisely and accurately. "
    + DATA_NOT_INSTRUCTIONS
)


class ChatPipeline(TaskPipeline):
    task: ClassVar[TaskId] = "chat"
    system = PERSONA

    def system_text(self, framing: Framing, persona: str | None) -> str:
        # The persona *is* chat's framing: a channel's own system prompt replaces it, as it always did.
        return persona or framing.system or self.system
