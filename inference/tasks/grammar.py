"""Structured output (JSON, a fixed format): held to the requested shape while decoding.

"Answer only yes or no", "only the letter A-D", "reply with true or false" become a fixed choice; a request
for JSON becomes a JSON document (any object). A JSON answer is shown pretty-printed in a json block.
"""

from __future__ import annotations

import json
import re
from typing import ClassVar

from inference.structured import SchemaError, choice_constraint, json_constraint
from inference.tasks.base import DATA_NOT_INSTRUCTIONS, Rendered, TaskPipeline
from inference.tasks.choices import detect_choices
from inference.types import Constraint, TaskId

_WANTS_JSON = re.compile(r"\bjson\b", re.IGNORECASE)
_FENCE = re.compile(r"^```[\w-]*\n(.*?)\n?```$", re.DOTALL)


class GrammarPipeline(TaskPipeline):
    task: ClassVar[TaskId] = "grammar"
    system = (
        "Reply in exactly the format the user asks for and nothing else: no greeting, no explanation. "
        "JSON must be valid JSON. " + DATA_NOT_INSTRUCTIONS
    )
    examples = (("Is water wet? Answer only yes or no.", "yes"),)
    max_new_tokens = 384
    streams = False
    uses_history = False

    def constraint(self, prompt: str) -> Constraint | None:
        choices = detect_choices(prompt)
        if choices:
            return choice_constraint(choices)
        if _WANTS_JSON.search(prompt):
            try:
                return json_constraint({"type": "object"})
            except SchemaError:  # the backends' subset may not take an open object: free text, validated later
                return None
        return None

    def finish(self, text: str, *, prompt: str = "") -> Rendered:
        body = text.strip()
        if m := _FENCE.match(body):
            body = m.group(1).strip()
        try:
            value = json.loads(body)
        except ValueError:
            return Rendered(body)
        if isinstance(value, (dict, list)):
            return Rendered("```json\n" + json.dumps(value, indent=2, ensure_ascii=False) + "\n```")
        return Rendered(body)
