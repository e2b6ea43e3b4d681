"""rag, tool_use, agent, multimodal: each needs something Switchboard does not have yet (an index of the
server's documents, tools, an agent loop, a model that sees media). Until their issues fill them, they say
so and run no model, rather than let a text model guess an answer it cannot know. The notice says how to
get the model's general answer instead, so the user is never stuck.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from inference.tasks.base import Framing, Prepared, TaskPipeline
from inference.types import ChatMessage, GenerationParams, TaskId

#: How to get an answer anyway: the chat task answers from the model's own knowledge.
ANYWAY = "To get the model's general answer instead, ask again with the task set to **chat**."


class PendingPipeline(TaskPipeline):
    """A task that cannot be served honestly yet: :meth:`prepare` returns only a notice."""

    system = ""
    notice: str

    def prepare(
        self,
        prompt: str,
        *,
        history: Sequence[ChatMessage] = (),
        framing: Framing | None = None,
        max_new_tokens: int = 512,
        persona: str | None = None,
    ) -> Prepared:
        return Prepared([], GenerationParams(max_new_tokens=max_new_tokens), notice=f"{self.notice} {ANYWAY}")


class RagPipeline(PendingPipeline):
    task: ClassVar[TaskId] = "rag"
    notice = "No documents are indexed on this server yet, so I can't answer from them."


class ToolUsePipeline(PendingPipeline):
    task: ClassVar[TaskId] = "tool_use"
    notice = "I can't look things up or run tools yet, so I can't do this for you."


class AgentPipeline(PendingPipeline):
    task: ClassVar[TaskId] = "agent"
    notice = "I can't carry out multi-step tasks with tools yet, so I can't do this for you."


class MultimodalPipeline(PendingPipeline):
    task: ClassVar[TaskId] = "multimodal"
    notice = "I can't see images, audio or video yet, so I can't answer about them."
