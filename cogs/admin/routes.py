"""/route show|set|reset: which model serves each task on this server; /route corrections list|undo|export:
what users taught the router here with the buttons under answers (bot/corrections.py)."""

from __future__ import annotations

import io

import discord
from discord import app_commands

from bot.answering import AnswerService
from bot.app import SwitchboardBot
from bot.corrections import Corrections
from bot.storage import NotFound, Store
from cogs._autocomplete import route_model
from cogs._common import TASK_CHOICES
from cogs.admin.base import AdminBase, admin_group
from inference.catalogue import ImageToTextModel
from inference.types import TASK_LABELS, TASKS, Tier


class RouteCog(AdminBase):
    route = admin_group("route", "See and change which model serves each task")

    def __init__(self, bot: SwitchboardBot, *, answers: AnswerService, store: Store, corrections: Corrections) -> None:
        super().__init__(bot)
        self.answers = answers
        self.store = store
        self.memory = corrections

    # ---- /route -----------------------------------------------------------------------------------
    @route.command(name="show")
    async def route_show(self, interaction: discord.Interaction) -> None:
        """Show which tier and model serve each task here."""
        scope = await self.answers.scope(interaction.guild_id)
        policy = self.answers.policy(scope)
        lines = [
            f"Escalation threshold: **{policy.escalation.threshold:.2f}**"
            + (" (server setting)" if scope.overrides.threshold is not None else " (default)")
        ]
        if policy.escalation.task_thresholds:
            per_task = ", ".join(
                f"{TASK_LABELS[t]} {v:.2f}" for t, v in sorted(policy.escalation.task_thresholds.items())
            )
            lines.append(f"Per-task thresholds: {per_task}")
        for task in TASKS:
            tier = policy.tiers[task]
            model = policy.task_models.get(task)
            shown = f"**{model}** (set here)" if model else self.answers.tier_model(policy, tier)
            lines.append(f"{TASK_LABELS[task]} → {tier.value} · {shown}")
        await self._reply(interaction, "\n".join(lines))

    @route.command(name="set")
    @app_commands.choices(task=TASK_CHOICES)
    @app_commands.autocomplete(model=route_model)
    async def route_set(self, interaction: discord.Interaction, task: app_commands.Choice[str], model: str) -> None:
        """Serve a task with a given model."""
        assert interaction.guild_id is not None
        label = TASK_LABELS[task.value]  # type: ignore[index]
        scope = await self.answers.scope(interaction.guild_id)
        if model not in scope.catalogue.models:
            await self._reply(
                interaction,
                f"Unknown model `{model}`. Valid models: {', '.join(sorted(scope.catalogue.models))}",
            )
            return
        if isinstance(scope.catalogue.get(model), ImageToTextModel):
            await self._reply(
                interaction,
                f"Not changed: **{model}** is an image-to-text model: it describes images for the text models "
                "and cannot answer requests itself. Choose a chat model.",
            )
            return
        # The router only uses a task's model on that model's tier: say so rather than store a no-op.
        model_tier = scope.catalogue.get(model).tier
        task_tier = self.answers.policy(scope).tiers[task.value]  # type: ignore[index]
        if model_tier is Tier.SMALL and task_tier is Tier.LARGE:
            await self._reply(
                interaction,
                f"Not changed: **{model}** is a small-tier model and **{label}** always runs on the large "
                "tier, so it would never be used. Choose a large-tier model.",
            )
            return
        await self.store.set_task_model(interaction.guild_id, interaction.user.id, task.value, model)  # type: ignore[arg-type]
        if model_tier is task_tier:
            await self._reply(interaction, f"**{label}** is now served by **{model}**.")
        else:
            await self._reply(
                interaction,
                f"**{label}** is now served by **{model}** when a request escalates to the large tier; "
                f"it normally runs on the small tier.",
            )

    @route.command(name="reset")
    async def route_reset(self, interaction: discord.Interaction) -> None:
        """Back to the default routes and threshold."""
        assert interaction.guild_id is not None
        await self.store.reset_guild_routes(interaction.guild_id, interaction.user.id)
        await self._reply(interaction, "Routes and threshold are back to the defaults.")

    # ---- /route corrections ----------------------------------------------------------------------
    corrections = app_commands.Group(name="corrections", description="What users corrected here", parent=route)

    @corrections.command(name="list")
    async def corrections_list(self, interaction: discord.Interaction) -> None:
        """Users' corrections of routes on this server, newest first."""
        assert interaction.guild_id is not None
        rows = await self.memory.latest(interaction.guild_id, limit=50)
        if not rows:
            await self._reply(interaction, "No corrections yet: users correct routes with the buttons under answers.")
            return
        lines = ["Similar requests follow these corrections until one is undone (`/route corrections undo`)."]
        for c in rows:
            what = (
                f"wanted the larger model for **{c.routed_task}**"
                if c.kind == "larger"
                else f"**{c.routed_task}** → **{c.task}**"
            )
            text = " ".join(c.text.split())
            shown = text if len(text) <= 80 else text[:79] + "…"
            lines.append(f"`#{c.id}` {discord.utils.format_dt(c.at, 'R')} <@{c.user_id}> {what}: {shown!r}")
        await self._reply(interaction, "\n".join(lines))

    @corrections.command(name="undo")
    @app_commands.describe(number="The correction's number, as `/route corrections list` shows it")
    async def corrections_undo(self, interaction: discord.Interaction, number: int) -> None:
        """Undo one correction: similar requests are routed by the classifier again."""
        assert interaction.guild_id is not None
        try:
            removed = await self.memory.undo(interaction.guild_id, interaction.user.id, number)
        except NotFound:
            await self._reply(interaction, f"This server has no correction #{number}; see `/route corrections list`.")
            return
        await self._reply(interaction, f"Correction #{removed.id} undone.")

    @corrections.command(name="export")
    async def corrections_export(self, interaction: discord.Interaction) -> None:
        """This server's corrections as labelled data (JSON Lines, the classifier's training format)."""
        assert interaction.guild_id is not None
        data = await self.memory.export(interaction.guild_id)
        if not data:
            await self._reply(interaction, "No corrections to export yet.")
            return
        rows = data.count(b"\n")
        file = discord.File(io.BytesIO(data), filename=f"corrections-{interaction.guild_id}.jsonl")
        await interaction.followup.send(
            f"{rows} labelled requests (`text`, `task`, `hard`).", file=file, ephemeral=True
        )
