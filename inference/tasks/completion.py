"""Completion: a continuation of the user's text, not a chat reply.

No chat template and no assistant framing (``raw``): the model sees the text itself and writes what comes
next, which is what a base model does best (the router prefers a model the catalogue marks ``base``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from inference.tasks.base import Framing, Prepared, Rendered, TaskPipeline
from inference.types import ChatMessage, TaskId

#: "Continue this story: ...", "complete the sentence: ...": the instruction is not part of the text.
_INSTRUCTION = re.compile(
    r"^\s*(?:please\s+)?(?:continue|complete|finish|extend|keep going with)\b[^:\n]{0,60}:\s*", re.IGNORECASE
)


def text_to_continue(prompt: str) -> str:
    """The text itself, without a leading "continue this: " (a continuation keeps its trailing space)."""
    stripped = _INSTRUCTION.sub("", prompt, count=1)
    return stripped.lstrip() or prompt


class CompletionPipeline(TaskPipeline):
    task: ClassVar[TaskId] = "completion"
    system = ""  # no framing at all: a server may set text to put before the user's (e.g. a style sample)
    temperature = 0.7
    top_p = 0.9
    max_new_tokens = 160
    stop = ("\n\n\n",)
    chat_template = False
    uses_history = False

    def prepare(
        self,
        prompt: str,
        *,
        history: Sequence[ChatMessage] = (),
        framing: Framing | None = None,
        max_new_tokens: int = 512,
        persona: str | None = None,
    ) -> Prepared:
        framing = framing or Framing()
        params = self.params(prompt, framing, max_new_tokens)
        # A raw prompt is the messages' contents joined: a server's framing text is a preamble, nothing more.
        lead = [ChatMessage("user", framing.system)] if framing.system else []
        return Prepared([*lead, ChatMessage("user", text_to_continue(prompt))], params)

    def finish(self, text: str, *, prompt: str = "") -> Rendered:
        # The continuation as written (its leading space joins it to the text); only trailing blank lines go.
        return Rendered(text.rstrip() or text.strip())
