"""/ask and @mentions: one-shot questions answered through the router."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import SwitchboardBot
from bot.delivery import Ask, deliver
from bot.replies import SAFE_MENTIONS
from cogs._targets import home_channel_id, interaction_target, message_target
from inference.types import TASKS, Attachment

log = logging.getLogger(__name__)

TASK_CHOICES = [app_commands.Choice(name=t.replace("_", " "), value=t) for t in TASKS]


def to_attachment(a: discord.Attachment) -> Attachment:
    return Attachment(filename=a.filename, content_type=a.content_type or "", size=a.size)


class AskCog(commands.Cog):
    def __init__(self, bot: SwitchboardBot) -> None:
        self.bot = bot

    @app_commands.command(name="ask")
    @app_commands.describe(
        prompt="What you want to ask",
        task="Skip the classifier: treat the request as this task",
        private="Only you see the answer",
        file="An image, audio, text or other file the question is about",
    )
    @app_commands.choices(task=TASK_CHOICES)
    async def ask(
        self,
        interaction: discord.Interaction,
        prompt: str,
        task: app_commands.Choice[str] | None = None,
        private: bool = False,
        file: discord.Attachment | None = None,
    ) -> None:
        """Ask a question; Switchboard picks the smallest model that can answer it."""
        # Acknowledge before any work: Discord drops interactions not answered within 3 seconds.
        await interaction.response.defer(ephemeral=private, thinking=True)
        async with self.bot.job():
            await deliver(
                self.bot,
                interaction_target(interaction, ephemeral=private),
                Ask(
                    guild_id=interaction.guild_id,
                    channel_id=home_channel_id(interaction.channel, interaction.channel_id),
                    user_id=interaction.user.id,
                    prompt=prompt,
                    attachments=[to_attachment(file)] if file else [],
                    task=task.value if task else None,  # type: ignore[arg-type]
                ),
            )

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot or self.bot.user is None or message.guild is None:
            return
        if self.bot.user not in message.mentions:
            return
        if isinstance(message.channel, discord.Thread):
            conversation = await self.bot.store.get_conversation(message.channel.id)
            if conversation is not None and not conversation.closed:
                return  # an open conversation: the chat cog answers every message there
        channel_id = home_channel_id(message.channel)
        config = await self.bot.store.guild_config(message.guild.id)
        if config.allowed_channels and channel_id not in config.allowed_channels:
            return  # not a channel this server wants answers in: stay silent
        prompt = message.content.replace(self.bot.user.mention, "").replace(f"<@!{self.bot.user.id}>", "")
        placeholder = await message.reply("⏳", mention_author=False, allowed_mentions=SAFE_MENTIONS)
        async with self.bot.job():
            await deliver(
                self.bot,
                message_target(placeholder, message.channel),
                Ask(
                    guild_id=message.guild.id,
                    channel_id=channel_id,
                    user_id=message.author.id,
                    prompt=prompt,
                    attachments=[to_attachment(a) for a in message.attachments],
                ),
            )


async def setup(bot: SwitchboardBot) -> None:
    await bot.add_cog(AskCog(bot))
