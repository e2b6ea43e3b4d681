"""/stats: how this server's requests were routed, as text and a chart."""

from __future__ import annotations

import asyncio
import io

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import SwitchboardBot
from bot.charts import render_stats_chart
from bot.storage import Store
from inference.types import TASK_LABELS


class StatsCog(commands.Cog):
    def __init__(self, bot: SwitchboardBot, *, store: Store) -> None:
        self.bot = bot
        self.store = store

    @app_commands.command(name="stats")
    @app_commands.guild_only()
    async def stats(self, interaction: discord.Interaction) -> None:
        """Requests by task and tier, the small tier's share, and latency per model."""
        await interaction.response.defer(thinking=True)
        assert interaction.guild_id is not None
        stats = await self.store.stats(interaction.guild_id)
        # People read plain task names ("structured output", not "grammar"), in the text and the chart.
        by_label_tier: dict[tuple[str, str], int] = {}
        for (task, tier), n in stats.by_task_tier.items():
            key = (TASK_LABELS.get(task, task), tier)  # type: ignore[call-overload]
            by_label_tier[key] = by_label_tier.get(key, 0) + n
        if stats.total == 0:
            summary = "No requests yet on this server."
        else:
            by_task: dict[str, int] = {}
            for (label, _tier), n in by_label_tier.items():
                by_task[label] = by_task.get(label, 0) + n
            busiest = sorted(by_task.items(), key=lambda kv: (-kv[1], kv[0]))
            tasks = " · ".join(f"{label} {n}" for label, n in busiest)
            latency = ", ".join(f"{m} {ms:.0f} ms" for m, ms in sorted(stats.median_latency_ms.items()))
            summary = (
                f"**{stats.total}** requests · **{stats.small_share:.0%}** answered by the small tier · "
                f"{stats.fallbacks} fell back · {stats.failures} failed\nMedian latency: {latency or '-'}\n"
                f"By task: {tasks}"
            )
            summary += preference_line(await self.store.preference(interaction.guild_id))
        # Rendering is CPU work: keep it off the event loop.
        png = await asyncio.to_thread(
            render_stats_chart,
            by_label_tier,
            stats.median_latency_ms,
            f"Switchboard · {interaction.guild.name if interaction.guild else 'this server'}",
        )
        await interaction.edit_original_response(
            content=summary, attachments=[discord.File(io.BytesIO(png), filename="stats.png")]
        )


#: A task's preference rate counts once it has this many answers; at this rate /stats suggests a lower threshold.
SUGGEST_AFTER = 10
SUGGEST_RATE = 0.2


def preference_line(preference: dict[str, tuple[int, int]]) -> str:
    """Per task, how often users asked for the larger model: a high rate says the threshold is wrong there."""
    parts = [
        f"{TASK_LABELS.get(task, task)} {asked}/{answers} ({asked / answers:.0%})"  # type: ignore[call-overload]
        for task, (answers, asked) in preference.items()
        if asked and answers
    ]
    if not parts:
        return ""
    # Enough answers and a high rate: the threshold is too high for that task here.
    often = [
        TASK_LABELS.get(task, task)  # type: ignore[call-overload]
        for task, (answers, asked) in preference.items()
        if answers >= SUGGEST_AFTER and asked / answers >= SUGGEST_RATE
    ]
    hint = (
        f"\nUsers often want a larger model for {', '.join(often)}: an admin can lower that task's threshold "
        "(`/settings threshold value task`)."
        if often
        else ""
    )
    return "\nAsked for the larger model: " + " · ".join(parts) + hint


async def setup(bot: SwitchboardBot) -> None:
    await bot.add_cog(StatsCog(bot, store=bot.store))
