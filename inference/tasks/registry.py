"""Every task's pipeline, by task id (read by :func:`inference.tasks.base.pipeline_for`)."""

from __future__ import annotations

from inference.tasks.base import TaskPipeline
from inference.tasks.chat import ChatPipeline
from inference.tasks.classification import ClassificationPipeline
from inference.tasks.code import CodePipeline
from inference.tasks.completion import CompletionPipeline
from inference.tasks.conversion import ConversionPipeline
from inference.tasks.grammar import GrammarPipeline
from inference.tasks.multimodal import MultimodalPipeline
from inference.tasks.pending import AgentPipeline, RagPipeline
from inference.tasks.tool_use import ToolUsePipeline
from inference.types import TaskId

PIPELINES: dict[TaskId, TaskPipeline] = {
    p.task: p
    for p in (
        ClassificationPipeline(),
        ConversionPipeline(),
        CompletionPipeline(),
        ChatPipeline(),
        RagPipeline(),
        CodePipeline(),
        GrammarPipeline(),
        ToolUsePipeline(),
        AgentPipeline(),
        MultimodalPipeline(),
    )
}
