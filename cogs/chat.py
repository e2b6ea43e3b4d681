"""/chat: conversations in public threads that remember what was said (and survive restarts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import discord
from discord import app_commands
from discord.ext import commands

from bot.answering import UserError
from bot.app import SwitchboardBot
from bot.delivery import Ask, deliver
from bot.replies import SAFE_MENTIONS, split_message
from cogs._targets import message_target
from cogs.ask import to_attachment
from inference.types import Tier

log = logging.getLogger(__name__)


class ChatCog(commands.GroupCog, group_name="chat"):
    """Conversations in threads."""

    def __init__(self, bot: SwitchboardBot) -> None:
        self.bot = bot
        #: thread id -> (lock, tasks using it): turns in one thread run one after another.
        self._turns: dict[int, tuple[asyncio.Lock, int]] = {}
        super().__init__()

    @app_commands.command(name="start")
    @app_commands.describe(prompt="Your first message (optional)")
    async def start(self, interaction: discord.Interaction, prompt: str | None = None) -> None:
        """Open a conversation thread; every message you write there gets an answer."""
        await interaction.response.defer(thinking=True)
        channel = interaction.channel
        if interaction.guild is None or not isinstance(channel, discord.TextChannel):
            await interaction.edit_original_response(content="Conversations need a server text channel.")
            return
        config = await self.bot.store.guild_config(interaction.guild.id)
        if config.allowed_channels and channel.id not in config.allowed_channels:
            where = ", ".join(f"<#{c}>" for c in config.allowed_channels)
            await interaction.edit_original_response(content=f"I only answer in {where} on this server.")
            return
        if prompt:
            try:  # before the thread exists: a prompt that can't be answered opens nothing
                self.bot.answers.validate(prompt, [], config)
            except UserError as exc:
                await interaction.edit_original_response(content=str(exc), allowed_mentions=SAFE_MENTIONS)
                return
        title = " ".join((prompt or f"Chat with {interaction.user.display_name}").split())[:90].strip()
        thread = await channel.create_thread(name=title, type=discord.ChannelType.public_thread)
        await self.bot.store.create_conversation(
            thread_id=thread.id,
            guild_id=interaction.guild.id,
            channel_id=channel.id,
            user_id=interaction.user.id,
            tier=Tier.SMALL,
            model="",
            system_prompt=None,
        )
        await interaction.edit_original_response(
            content=f"Started a conversation in {thread.mention}. Write there; `/chat end` closes it."
        )
        if prompt:
            # Quote the opening prompt in the thread (a long one takes several messages).
            quote = f"**{discord.utils.escape_markdown(interaction.user.display_name)}:** {prompt}"
            for chunk in split_message(quote):
                await thread.send(chunk, allowed_mentions=SAFE_MENTIONS)
            await self._answer(thread, interaction.user.id, prompt, [])

    @app_commands.command(name="end")
    async def end(self, interaction: discord.Interaction) -> None:
        """Close the conversation in this thread."""
        await interaction.response.defer(ephemeral=True)
        channel = interaction.channel
        conversation = await self.bot.store.get_conversation(channel.id) if channel else None
        if conversation is None or conversation.closed:
            await interaction.edit_original_response(content="This isn't an open conversation thread.")
            return
        await self.bot.store.close_conversation(channel.id)  # type: ignore[union-attr]
        await interaction.edit_original_response(content="Conversation closed.")
        if isinstance(channel, discord.Thread):
            try:
                await channel.edit(archived=True)
            except discord.HTTPException as exc:
                log.info("could not archive thread %s: %s", channel.id, exc.status)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        # Never answer bots, this one included: the gateway echoes our own messages back.
        if message.author.bot or not isinstance(message.channel, discord.Thread):
            return
        conversation = await self.bot.store.get_conversation(message.channel.id)
        if conversation is None or conversation.closed:
            return
        await self._answer(message.channel, message.author.id, message.content, message.attachments, reply_to=message)

    @commands.Cog.listener()
    async def on_thread_update(self, before: discord.Thread, after: discord.Thread) -> None:
        if after.archived and not before.archived:
            conversation = await self.bot.store.get_conversation(after.id)
            if conversation is not None and not conversation.closed:
                await self.bot.store.close_conversation(after.id)

    @contextlib.asynccontextmanager
    async def _turn(self, thread_id: int) -> AsyncIterator[None]:
        """One turn at a time per thread, so each answer sees the previous exchange."""
        lock, users = self._turns.get(thread_id, (asyncio.Lock(), 0))
        self._turns[thread_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[thread_id]
            if users == 1:
                del self._turns[thread_id]
            else:
                self._turns[thread_id] = (lock, users - 1)

    async def _answer(
        self,
        thread: discord.Thread,
        user_id: int,
        prompt: str,
        attachments: list[discord.Attachment],
        reply_to: discord.Message | None = None,
    ) -> None:
        if reply_to is not None:
            placeholder = await reply_to.reply("⏳", mention_author=False, allowed_mentions=SAFE_MENTIONS)
        else:
            placeholder = await thread.send("⏳", allowed_mentions=SAFE_MENTIONS)
        target = message_target(placeholder, thread)
        # The whole turn, storing it included, is an in-flight job: shutdown waits for it.
        async with self.bot.job(), self._turn(thread.id):
            conversation = await self.bot.store.get_conversation(thread.id)
            if conversation is None or conversation.closed:
                await placeholder.edit(content="This conversation is closed.", allowed_mentions=SAFE_MENTIONS)
                return
            history = [m.as_chat() for m in await self.bot.store.history(thread.id)]
            outcome = await deliver(
                self.bot,
                target,
                Ask(
                    guild_id=conversation.guild_id,
                    channel_id=conversation.channel_id,
                    user_id=user_id,
                    prompt=prompt,
                    attachments=[to_attachment(a) for a in attachments],
                    history=history,
                    keep_tier=conversation.tier,
                ),
            )
            if outcome is None or not outcome.ok:
                return  # nothing answered: the turn is not kept, so a retry starts clean
            answer = outcome.prepared.answer
            count = (
                await self.bot.board.backend(answer.model, outcome.prepared.scope.catalogue, start=False)
            ).count_tokens
            await self.bot.store.add_message(thread.id, "user", prompt, count(prompt))
            await self.bot.store.add_message(thread.id, "assistant", outcome.text, count(outcome.text))
            if answer.tier is not conversation.tier or answer.model != conversation.model:
                await self.bot.store.set_conversation_tier(thread.id, answer.tier, answer.model)


async def setup(bot: SwitchboardBot) -> None:
    await bot.add_cog(ChatCog(bot))
