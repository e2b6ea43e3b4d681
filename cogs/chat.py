"""/chat: conversations in public threads that remember what was said (and survive restarts).

A conversation outlives its thread's archiving: Discord archives an idle thread after
``AUTO_ARCHIVE_MINUTES``, and the next message there unarchives it and carries on with the stored history.
It ends with ``/chat end`` (by its starter or a moderator) or when a moderator locks the thread.
"""

from __future__ import annotations

import logging
from typing import Final

import discord
from discord import app_commands
from discord.ext import commands

from bot.answering import PLACEHOLDER, AnswerService, UserError
from bot.app import SwitchboardBot
from bot.conversations import ConversationService
from bot.delivery import Ask, Delivery, wrong_channel_note
from bot.knowledge import member_can_read
from bot.replies import SAFE_MENTIONS, split_message
from bot.storage import Store
from cogs._common import to_attachment
from cogs._history import is_conversational
from cogs._targets import (
    forbidden_note,
    interaction_target,
    message_target,
    missing_permissions,
    permission_note,
    role_ids,
    tell_privately,
)

log = logging.getLogger(__name__)

#: Idle minutes before Discord archives a conversation thread (a day); a new message revives it.
AUTO_ARCHIVE_MINUTES: Final = 1440


class ChatCog(commands.GroupCog, group_name="chat"):
    """Conversations in threads."""

    def __init__(
        self,
        bot: SwitchboardBot,
        *,
        conversations: ConversationService,
        delivery: Delivery,
        answers: AnswerService,
        store: Store,
    ) -> None:
        self.bot = bot
        self.conversations = conversations
        self.delivery = delivery
        self.answers = answers
        self.store = store
        super().__init__()

    @app_commands.command(name="start")
    @app_commands.describe(prompt="Your first message (optional)")
    async def start(self, interaction: discord.Interaction, prompt: str | None = None) -> None:
        """Open a conversation thread; every message you write there gets an answer."""
        in_thread = isinstance(interaction.channel, discord.Thread)
        missing = missing_permissions(interaction.app_permissions, in_thread=in_thread, start_thread=True)
        if interaction.guild is not None and missing:  # said before any work, privately
            note = permission_note(interaction.channel_id, missing)
            await interaction.response.send_message(note, ephemeral=True, allowed_mentions=SAFE_MENTIONS)
            return
        await interaction.response.defer(thinking=True)
        channel = interaction.channel
        if interaction.guild is None or not isinstance(channel, discord.TextChannel):
            await interaction.edit_original_response(content="Conversations need a server text channel.")
            return
        config = await self.store.guild_config(interaction.guild.id)
        if not config.channel_allowed(channel.id):
            await interaction.edit_original_response(content=wrong_channel_note(config))
            return
        if prompt:
            try:  # before the thread exists: a prompt that can't be answered opens nothing
                self.answers.validate(prompt, [], config)
            except UserError as exc:
                await interaction.edit_original_response(content=str(exc), allowed_mentions=SAFE_MENTIONS)
                return
        title = " ".join((prompt or f"Chat with {interaction.user.display_name}").split())[:90].strip()
        try:
            thread = await channel.create_thread(
                name=title, type=discord.ChannelType.public_thread, auto_archive_duration=AUTO_ARCHIVE_MINUTES
            )
        except discord.Forbidden as exc:  # the permissions Discord sent with the command were out of date
            await interaction_target(interaction).refuse(forbidden_note(exc, channel.id, ["Create Public Threads"]))
            return
        try:  # the starter follows the thread, so its answers show up in their channel list
            await thread.add_user(interaction.user)
        except discord.HTTPException as exc:
            log.info("could not add user %s to thread %s: %s", interaction.user.id, thread.id, exc.status)
        await self.conversations.start(
            thread_id=thread.id, guild_id=interaction.guild.id, channel_id=channel.id, user_id=interaction.user.id
        )
        await interaction.edit_original_response(
            content=f"Started a conversation in {thread.mention}. Write there; `/chat end` closes it."
        )
        if prompt:
            # Quote the opening prompt in the thread (a long one takes several messages).
            quote = f"**{discord.utils.escape_markdown(interaction.user.display_name)}:** {prompt}"
            for chunk in split_message(quote):
                await thread.send(chunk, allowed_mentions=SAFE_MENTIONS)
            await self._answer(thread, interaction.user, prompt, [])

    @app_commands.command(name="end")
    async def end(self, interaction: discord.Interaction) -> None:
        """Close the conversation in this thread."""
        await interaction.response.defer(ephemeral=True)
        channel = interaction.channel
        conversation = await self.conversations.open(channel.id) if channel else None
        if conversation is None:
            await interaction.edit_original_response(content="This isn't an open conversation thread.")
            return
        perms = interaction.permissions
        if interaction.user.id != conversation.user_id and not (perms.manage_threads or perms.manage_messages):
            await interaction.edit_original_response(
                content="Only the person who started this conversation, or a moderator, can end it."
            )
            return
        await self.conversations.close(channel.id)  # type: ignore[union-attr]
        await interaction.edit_original_response(content="Conversation closed.")
        if isinstance(channel, discord.Thread):
            try:
                await channel.edit(archived=True)
            except discord.HTTPException as exc:
                log.info("could not archive thread %s: %s", channel.id, exc.status)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        # Never answer bots (this one included: the gateway echoes our own messages back) nor system
        # messages (pins, joins, renames of the thread).
        if not is_conversational(message) or not isinstance(message.channel, discord.Thread) or self.bot.closing:
            return
        # From the first read on, shutdown waits for this turn rather than closing the HTTP session under it.
        async with self.bot.job():
            if await self.conversations.open(message.channel.id) is None:
                return
            guild = message.channel.guild
            missing = missing_permissions(message.channel.permissions_for(guild.me), in_thread=True, reply=True)
            if missing:
                await tell_privately(message.author, permission_note(message.channel.id, missing))
                return
            await self._answer(message.channel, message.author, message.content, message.attachments, reply_to=message)

    @commands.Cog.listener()
    async def on_raw_thread_update(self, payload: discord.RawThreadUpdateEvent) -> None:
        # Archiving (Discord's idle timer, or anyone's) keeps the conversation: the next message revives it.
        # A moderator's lock ends it, as /chat end does. Raw: an archived thread is no longer cached.
        if not payload.data.get("thread_metadata", {}).get("locked"):
            return
        if await self.conversations.open(payload.thread_id) is not None:
            await self.conversations.close(payload.thread_id)

    async def _answer(
        self,
        thread: discord.Thread,
        user: discord.User | discord.Member,
        prompt: str,
        attachments: list[discord.Attachment],
        reply_to: discord.Message | None = None,
    ) -> None:
        try:
            if reply_to is not None:
                placeholder = await reply_to.reply(PLACEHOLDER, mention_author=False, allowed_mentions=SAFE_MENTIONS)
            else:
                placeholder = await thread.send(PLACEHOLDER, allowed_mentions=SAFE_MENTIONS)
        except discord.Forbidden as exc:  # our permission cache was stale: Discord has the last word
            await tell_privately(user, forbidden_note(exc, thread.id, ["Send Messages in Threads"]))
            return
        target = message_target(placeholder, thread)
        # The whole turn, storing it included, is an in-flight job: shutdown waits for it.
        async with self.bot.job(), self.conversations.turn(thread.id):
            conversation = await self.conversations.open(thread.id)
            if conversation is None:
                await placeholder.edit(content="This conversation is closed.", allowed_mentions=SAFE_MENTIONS)
                return
            history = await self.conversations.history(thread.id)
            outcome = await self.delivery.deliver(
                target,
                Ask(
                    guild_id=conversation.guild_id,
                    channel_id=conversation.channel_id,
                    reply_channel_id=thread.id,
                    user_id=user.id,
                    prompt=prompt,
                    attachments=[to_attachment(a) for a in attachments],
                    history=history,
                    keep_tier=conversation.tier,
                    role_ids=role_ids(user),
                    # A rag turn draws only on channels this member can read now, as in /ask.
                    can_read=member_can_read(user, thread.guild),
                ),
            )
            if outcome is None or not outcome.ok:
                return  # nothing answered: the turn is not kept, so a retry starts clean
            await self.conversations.record_turn(conversation, prompt, outcome.prepared, outcome.text)


async def setup(bot: SwitchboardBot) -> None:
    await bot.add_cog(
        ChatCog(bot, conversations=bot.conversations, delivery=bot.delivery, answers=bot.answers, store=bot.store)
    )
