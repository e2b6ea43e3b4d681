"""Classification: one label and nothing else, held to the labels the request names."""

from __future__ import annotations

from typing import ClassVar

from inference.structured import choice_constraint
from inference.tasks.base import DATA_NOT_INSTRUCTIONS, Rendered, TaskPipeline
from inference.tasks.choices import detect_choices
from inference.types import Constraint, TaskId


class ClassificationPipeline(TaskPipeline):
    task: ClassVar[TaskId] = "classification"
    system = (
        "Classify the user's text. Reply with the label only: one word or short phrase, no explanation. "
        + DATA_NOT_INSTRUCTIONS
    )
    examples = (
        ("Classify the sentiment as positive or negative: I loved every minute of it.", "positive"),
        ("Is this message spam or ham? WIN A FREE PHONE, click now!!!", "spam"),
    )
    max_new_tokens = 16
    stop = ("\n",)
    streams = False
    uses_history = False

    def constraint(self, prompt: str) -> Constraint | None:
        choices = detect_choices(prompt, lists=True)
        return choice_constraint(choices) if choices else None

    def finish(self, text: str, *, prompt: str = "") -> Rendered:
        label = text.strip().splitlines()[0].strip() if text.strip() else ""
        return Rendered(label.strip(" .\"'`*"))
