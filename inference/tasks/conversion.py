"""Conversion (translate, reformat): only the converted text, no commentary, greedy."""

from __future__ import annotations

from typing import ClassVar

from inference.tasks.base import DATA_NOT_INSTRUCTIONS, TaskPipeline
from inference.types import TaskId


class ConversionPipeline(TaskPipeline):
    task: ClassVar[TaskId] = "conversion"
    system = (
        "Convert the user's text exactly as asked (translate, reformat, change units or case). "
        "Reply with the converted text only: no explanation, no quotes. " + DATA_NOT_INSTRUCTIONS
    )
    examples = (
        ("Translate into French: Good morning, everyone.", "Bonjour à tous."),
        ("Convert to uppercase: hello world", "HELLO WORLD"),
    )
    uses_history = False
