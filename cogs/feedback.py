"""The two small buttons under every answer: "Ask the larger model" and "Wrong task?".

A click re-answers in place (the same message is edited, through the click's own interaction) and records the
correction for the server (bot/corrections.py), which the router applies at once to similar requests. Only the
person who asked may use an answer's buttons; a re-answer passes the same checks as any request, the rate limit
included. Admins turn the buttons off for the server or a channel with ``/settings feedback``.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import discord
from discord.ext import commands

from bot.answering import Prepared
from bot.app import SwitchboardBot
from bot.corrections import Corrections
from bot.delivery import Ask, Delivery
from bot.replies import SAFE_MENTIONS
from bot.tools import ToolAnswer
from cogs._targets import component_target
from inference.types import TASK_LABELS, TASKS, TaskId, Tier

log = logging.getLogger(__name__)

#: Seconds an answer's buttons keep working (they are held in memory: a restart or this long removes them).
BUTTONS_TIMEOUT_S = 15 * 60
ONLY_THE_ASKER = "Only the person who asked can use these buttons."


class FeedbackCog(commands.Cog):
    def __init__(self, bot: SwitchboardBot, *, delivery: Delivery, corrections: Corrections) -> None:
        self.bot = bot
        self.delivery = delivery
        self.corrections = corrections

    async def cog_load(self) -> None:
        self.delivery.feedback = self.view_for

    async def cog_unload(self) -> None:
        self.delivery.feedback = None

    def view_for(self, ask: Ask, prepared: Prepared) -> discord.ui.View | None:
        """The buttons for a delivered answer; None where the server or channel turned them off, in DMs, and on a
        private answer (a correction keeps the request's text where the server's admins can read it)."""
        config = prepared.scope.config
        if ask.guild_id is None or ask.private or not config.feedback_buttons_on(ask.channel_id):
            return None
        if isinstance(prepared.answer, ToolAnswer) and prepared.answer.had_effects:
            return None  # answering again would run the reminder or poll a second time
        return FeedbackView(self, ask, prepared)

    async def reanswer(
        self, interaction: discord.Interaction, view: FeedbackView, *, task: TaskId | None, larger: bool
    ) -> None:
        """Answer the same request again into the same message: on the large tier, or as ``task``."""
        ask = view.ask
        again = replace(ask, prefer_large=larger or ask.prefer_large, task=task or ask.task)
        try:
            # No clicks on an answer that is being replaced.
            await interaction.edit_original_response(view=None, allowed_mentions=SAFE_MENTIONS)
        except discord.HTTPException as exc:
            log.info("buttons not removed: %s", exc)
        outcome = await self.delivery.deliver(component_target(interaction), again)
        if outcome is None:
            await _restore(interaction, view)  # refused (e.g. the rate limit): the old answer and its buttons stay
            return
        if ask.guild_id is None:
            return
        routed = view.prepared.decision
        await self.corrections.record(
            ask.guild_id,
            ask.user_id,
            ask.prompt,
            kind="larger" if larger else "task",
            routed_task=routed.task,
            routed_tier=routed.tier,
            task=task or routed.task,
            channel_id=ask.channel_id,
        )


class FeedbackView(discord.ui.View):
    """ "Ask the larger model" (when a small model answered) and "Wrong task?" under one answer."""

    def __init__(self, cog: FeedbackCog, ask: Ask, prepared: Prepared) -> None:
        super().__init__(timeout=BUTTONS_TIMEOUT_S)
        self.cog = cog
        self.ask = ask
        self.prepared = prepared
        if prepared.answer.tier is not Tier.SMALL:
            self.remove_item(self.larger)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.ask.user_id:
            await interaction.response.send_message(ONLY_THE_ASKER, ephemeral=True)
            return False
        return True

    @discord.ui.button(label="Ask the larger model", style=discord.ButtonStyle.secondary)
    async def larger(self, interaction: discord.Interaction, _button: discord.ui.Button[FeedbackView]) -> None:
        await interaction.response.defer()  # the answer's own message is edited in place
        self.stop()
        await self.cog.reanswer(interaction, self, task=None, larger=True)

    @discord.ui.button(label="Wrong task?", style=discord.ButtonStyle.secondary)
    async def wrong_task(self, interaction: discord.Interaction, _button: discord.ui.Button[FeedbackView]) -> None:
        # The buttons give way to a menu of the other tasks, on the same message.
        await interaction.response.edit_message(view=TaskPicker(self))


class TaskPicker(discord.ui.View):
    """Pick the task the request really was; it is answered again as that task."""

    def __init__(self, feedback: FeedbackView) -> None:
        super().__init__(timeout=BUTTONS_TIMEOUT_S)
        self.feedback = feedback
        routed = feedback.prepared.decision.task
        self.choose.options = [  # type: ignore[assignment]
            discord.SelectOption(label=TASK_LABELS[t].capitalize(), value=t) for t in TASKS if t != routed
        ]

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        return await self.feedback.interaction_check(interaction)

    @discord.ui.select(placeholder="Which task was it?", min_values=1, max_values=1)
    async def choose(self, interaction: discord.Interaction, select: discord.ui.Select[TaskPicker]) -> None:
        task = select.values[0]
        if task not in TASKS:  # only the options above can come back from Discord; never trust it blindly
            await interaction.response.send_message("That is not a task I know.", ephemeral=True)
            return
        await interaction.response.defer()
        self.stop()
        await self.feedback.cog.reanswer(interaction, self.feedback, task=task, larger=False)  # type: ignore[arg-type]

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, _button: discord.ui.Button[TaskPicker]) -> None:
        await interaction.response.edit_message(view=self.feedback)


async def _restore(interaction: discord.Interaction, view: FeedbackView) -> None:
    """Put the answer's buttons back after a refused re-answer."""
    fresh = FeedbackView(view.cog, view.ask, view.prepared)
    try:
        await interaction.edit_original_response(view=fresh, allowed_mentions=SAFE_MENTIONS)
    except discord.HTTPException as exc:
        log.info("buttons not restored: %s", exc)


async def setup(bot: SwitchboardBot) -> None:
    await bot.add_cog(FeedbackCog(bot, delivery=bot.delivery, corrections=bot.corrections))
