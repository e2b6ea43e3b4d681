"""Reminders: the ``reminder`` job's handler, and ``/remind list`` and ``/remind cancel`` for their owners.

Reminders are set by asking ("remind me in 20 minutes to stretch": the ``remind`` tool, bot/reminders.py). They
are ``reminder`` jobs in the database (bot/scheduler.py), so they fire once, also after a restart, and only one
of several bot processes posts each.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import SwitchboardBot
from bot.reminders import REMINDER_KIND, reminder_mentions, reminder_text
from bot.replies import SAFE_MENTIONS
from bot.storage import Job, NotFound, Store

log = logging.getLogger(__name__)

#: Most reminders ``/remind list`` shows (the rest are counted).
MAX_LISTED = 20
_MAX_SHOWN_TEXT = 80


class RemindersCog(commands.Cog):
    remind = app_commands.Group(name="remind", description="Your reminders (set them by asking me)")

    def __init__(self, bot: SwitchboardBot, *, store: Store) -> None:
        self.bot = bot
        self.store = store

    async def cog_load(self) -> None:
        self.bot.scheduler.register(REMINDER_KIND, self.fire)

    async def cog_unload(self) -> None:
        self.bot.scheduler.unregister(REMINDER_KIND)

    async def fire(self, job: Job) -> None:
        """Post a due reminder in its channel, pinging only the one reminded (and saying it is late, if it is)."""
        channel = self.bot.messageable(job.channel_id)  # a partial channel when not cached (an archived thread)
        if channel is None:
            return
        try:
            await channel.send(reminder_text(job, self.bot.scheduler.now()), allowed_mentions=reminder_mentions(job))
        except discord.HTTPException as exc:  # the channel is gone or closed to the bot: nothing to retry
            log.warning("reminder #%s not posted in channel %s: %s %s", job.id, job.channel_id, exc.status, exc.code)

    @remind.command(name="list")
    async def list_(self, interaction: discord.Interaction) -> None:
        """The reminders you set here, or others set for you, that have not fired yet."""
        await interaction.response.defer(ephemeral=True)  # the database may be slow: answer within 3 s first
        jobs = await self.store.jobs(
            interaction.guild_id, kind=REMINDER_KIND, user_id=interaction.user.id, or_target=True
        )
        if not jobs:
            content = "You have no pending reminders here. Ask me, e.g. “remind me in 20 minutes to stretch”."
        else:
            lines = [_line(job) for job in jobs[:MAX_LISTED]]
            if len(jobs) > MAX_LISTED:
                lines.append(f"… and {len(jobs) - MAX_LISTED} more")
            content = "Your reminders:\n" + "\n".join(lines) + "\nCancel one with `/remind cancel id`."
        await interaction.edit_original_response(content=content, allowed_mentions=SAFE_MENTIONS)

    @remind.command(name="cancel")
    @app_commands.describe(id="The reminder's number, as /remind list shows it")
    async def cancel(self, interaction: discord.Interaction, id: app_commands.Range[int, 1]) -> None:
        """Cancel a reminder you set, or one someone set for you."""
        await interaction.response.defer(ephemeral=True)
        try:
            await self.store.cancel_job(
                interaction.guild_id, interaction.user.id, id, kind=REMINDER_KIND, or_target=True
            )
        except NotFound:
            content = f"You have no pending reminder #{id} here (see `/remind list`)."
        else:
            content = f"Cancelled reminder #{id}."
        await interaction.edit_original_response(content=content, allowed_mentions=SAFE_MENTIONS)


def _line(job: Job) -> str:
    text = " ".join(str(job.payload.get("text", "")).split())
    if len(text) > _MAX_SHOWN_TEXT:
        text = text[: _MAX_SHOWN_TEXT - 1] + "…"
    target = int(job.payload.get("target_user_id", job.user_id))
    who = f" for <@{target}>" if target != job.user_id else ""
    when = discord.utils.format_dt(job.next_run_at, "R")
    return f"`#{job.id}` {when}{who} in <#{job.channel_id}>: {discord.utils.escape_markdown(text)}"


async def setup(bot: SwitchboardBot) -> None:
    await bot.add_cog(RemindersCog(bot, store=bot.store))
