"""/ask and @mentions: one-shot questions answered through the router."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.answering import PLACEHOLDER
from bot.app import SwitchboardBot
from bot.conversations import ConversationService
from bot.delivery import DMS_OFF, Ask, Delivery
from bot.knowledge import member_can_read
from bot.replies import SAFE_MENTIONS
from bot.settings import Settings
from bot.storage import Store
from cogs._common import TASK_CHOICES, to_attachment
from cogs._history import is_conversational, is_reply_to_me, mentions_me, parent_of, reply_chain, without_mentions_of
from cogs._targets import (
    forbidden_note,
    home_channel_id,
    interaction_target,
    message_target,
    missing_permissions,
    permission_note,
    role_ids,
    tell_privately,
)

log = logging.getLogger(__name__)


class AskCog(commands.Cog):
    def __init__(
        self,
        bot: SwitchboardBot,
        *,
        delivery: Delivery,
        conversations: ConversationService,
        store: Store,
        settings: Settings,
    ) -> None:
        self.bot = bot
        self.delivery = delivery
        self.conversations = conversations
        self.store = store
        self.settings = settings

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
            await self.delivery.deliver(
                interaction_target(interaction, ephemeral=private),
                Ask(
                    guild_id=interaction.guild_id,
                    channel_id=home_channel_id(interaction.channel, interaction.channel_id),
                    reply_channel_id=interaction.channel_id,
                    user_id=interaction.user.id,
                    prompt=prompt,
                    attachments=[to_attachment(file)] if file else [],
                    task=task.value if task else None,  # type: ignore[arg-type]
                    role_ids=role_ids(interaction.user),
                    can_read=member_can_read(interaction.user, interaction.guild),
                    private=private,
                ),
            )

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """Mentions, replies to the bot's answers (the reply chain is the history) and direct messages."""
        if self.bot.closing:
            return  # shutting down: a new question is not started, only those in flight are finished
        # From the first read on, shutdown waits for this (within its grace period) instead of closing the HTTP
        # session under it.
        async with self.bot.job():
            await self._answer_message(message)

    async def _answer_message(self, message: discord.Message) -> None:
        me = self.bot.user
        if me is None or not is_conversational(message):
            return  # bots (this one included: the gateway echoes our messages) and system messages
        dm = message.guild is None
        parent = await parent_of(message) if message.reference is not None else None
        if not (dm or mentions_me(message, me) or is_reply_to_me(parent, me)):
            return
        if isinstance(message.channel, discord.Thread):
            if await self.conversations.open(message.channel.id) is not None:
                return  # an open conversation: the chat cog answers every message there
        if dm and not self.settings.allow_dms:
            await message.channel.send(DMS_OFF, allowed_mentions=SAFE_MENTIONS)
            return
        channel_id = home_channel_id(message.channel)
        if message.guild is not None:
            config = await self.store.guild_config(message.guild.id)
            if not config.channel_allowed(channel_id):
                return  # not a channel this server wants answers in: stay silent
            in_thread = isinstance(message.channel, discord.Thread)
            missing = missing_permissions(
                message.channel.permissions_for(message.guild.me), in_thread=in_thread, reply=True
            )
            if missing:
                await tell_privately(message.author, permission_note(message.channel.id, missing))
                return
        role = message.guild.self_role if message.guild is not None else None
        prompt = without_mentions_of(message.content, me.id, role.id if role is not None else None)
        history = await reply_chain(message, me, first=parent) if parent is not None else []
        try:
            placeholder = await message.reply(PLACEHOLDER, mention_author=False, allowed_mentions=SAFE_MENTIONS)
        except discord.Forbidden as exc:  # our permission cache was stale: Discord has the last word
            guess = ["Send Messages in Threads" if isinstance(message.channel, discord.Thread) else "Send Messages"]
            await tell_privately(message.author, forbidden_note(exc, message.channel.id, guess))
            return
        await self.delivery.deliver(
            message_target(placeholder, message.channel),
            Ask(
                guild_id=message.guild.id if message.guild is not None else None,
                channel_id=channel_id,
                reply_channel_id=message.channel.id,
                user_id=message.author.id,
                prompt=prompt,
                attachments=[to_attachment(a) for a in message.attachments],
                history=history,
                role_ids=role_ids(message.author),
                can_read=member_can_read(message.author, message.guild),
            ),
        )


async def setup(bot: SwitchboardBot) -> None:
    await bot.add_cog(
        AskCog(bot, delivery=bot.delivery, conversations=bot.conversations, store=bot.store, settings=bot.settings)
    )
