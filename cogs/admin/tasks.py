"""/tasks show|set|reset: how each task is framed on this server (system text, temperature, length)."""

from __future__ import annotations

import discord
from discord import app_commands
from pydantic import ValidationError

from bot.answering import AnswerService
from bot.app import SwitchboardBot
from bot.storage import Store
from cogs._common import TASK_CHOICES
from cogs.admin.base import AdminBase, admin_group
from inference.catalogue import format_validation_error
from inference.tasks.base import pipeline_for
from inference.types import TASK_LABELS, TASKS, TaskId

#: A system text longer than this is shortened in /tasks show (the whole of it is what the model gets).
_SHOWN = 300


def _quote(text: str) -> str:
    text = text if len(text) <= _SHOWN else text[:_SHOWN].rstrip() + "…"
    return "\n".join(f"> {line}" for line in text.splitlines() or [""])


class TasksCog(AdminBase):
    tasks = admin_group("tasks", "See and adjust how each task is framed on this server")

    def __init__(self, bot: SwitchboardBot, *, answers: AnswerService, store: Store) -> None:
        super().__init__(bot)
        self.answers = answers
        self.store = store

    async def _framing(self, interaction: discord.Interaction) -> dict[TaskId, dict[str, object]]:
        config = (await self.answers.scope(interaction.guild_id)).config
        return {t: config.framing_for(t) for t in TASKS}

    @tasks.command(name="show")
    @app_commands.describe(task="One task in detail; leave out for all of them")
    @app_commands.choices(task=TASK_CHOICES)
    async def tasks_show(self, interaction: discord.Interaction, task: app_commands.Choice[str] | None = None) -> None:
        """Show how each task is framed here."""
        framing = await self._framing(interaction)
        if task is None:
            lines = []
            for t in TASKS:
                changed = ", ".join(sorted(framing[t])) if framing[t] else "default"
                lines.append(f"{TASK_LABELS[t]} → {changed}")
            await self._reply(interaction, "\n".join(lines))
            return
        tid: TaskId = task.value  # type: ignore[assignment]
        pipeline, own = pipeline_for(tid), framing[tid]
        defaults = pipeline.defaults()

        def mark(key: str) -> str:
            return " (set here)" if key in own else ""

        system = str(own.get("system") or defaults.system or "")
        limit = own.get("max_new_tokens", defaults.max_new_tokens)
        lines = [
            f"**{TASK_LABELS[tid]}**",
            f"System text{mark('system')}:",
            _quote(system) if system else "> (none: the text is continued as it is)",
            f"Temperature: {own.get('temperature', defaults.temperature)}{mark('temperature')}",
            f"Max tokens: {limit if limit else 'the model’s limit'}{mark('max_new_tokens')}",
            f"Examples shown to the model: {len(defaults.examples)}",
            f"Chat template: {'yes' if pipeline.chat_template else 'no (a plain continuation)'}",
        ]
        await self._reply(interaction, "\n".join(lines))

    @tasks.command(name="set")
    @app_commands.describe(
        task="The task",
        system="The task's instructions to the model (replaces the default)",
        temperature="0 (always the likeliest words) to 2 (most varied)",
        max_tokens="Longest answer, in tokens",
    )
    @app_commands.choices(task=TASK_CHOICES)
    async def tasks_set(
        self,
        interaction: discord.Interaction,
        task: app_commands.Choice[str],
        system: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> None:
        """Adjust a task's framing here."""
        assert interaction.guild_id is not None
        tid: TaskId = task.value  # type: ignore[assignment]
        changes = {
            k: v
            for k, v in (("system", system), ("temperature", temperature), ("max_new_tokens", max_tokens))
            if v is not None
        }
        if not changes:
            await self._reply(interaction, "Nothing to change: give a system text, a temperature or a max tokens.")
            return
        try:
            await self.store.set_task_framing(interaction.guild_id, interaction.user.id, tid, changes)
        except ValidationError as exc:
            await self._reply(interaction, f"Not changed: {format_validation_error(exc)}")
            return
        await self._reply(interaction, f"**{TASK_LABELS[tid]}** framing set here: {', '.join(sorted(changes))}.")

    @tasks.command(name="reset")
    @app_commands.choices(task=TASK_CHOICES)
    async def tasks_reset(self, interaction: discord.Interaction, task: app_commands.Choice[str]) -> None:
        """Back to a task's default framing."""
        assert interaction.guild_id is not None
        tid: TaskId = task.value  # type: ignore[assignment]
        await self.store.set_task_framing(interaction.guild_id, interaction.user.id, tid, None)
        await self._reply(interaction, f"**{TASK_LABELS[tid]}** is back to its default framing.")
