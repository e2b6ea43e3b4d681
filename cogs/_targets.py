"""Adapters from Discord surfaces (an interaction, a message) to a delivery Target."""

from __future__ import annotations

import logging

import discord

from bot.delivery import Edit, Target
from bot.replies import SAFE_MENTIONS

log = logging.getLogger(__name__)


def home_channel_id(channel: object, fallback: int | None = None) -> int | None:
    """The channel whose settings apply: a thread's parent, else the channel itself.

    Allowed channels and per-channel system prompts are set on text channels; a thread inherits them.
    """
    if isinstance(channel, discord.Thread):
        return channel.parent_id
    channel_id = getattr(channel, "id", None)
    return channel_id if isinstance(channel_id, int) else fallback


def _message_editor(message: discord.Message | discord.WebhookMessage) -> Edit:
    async def edit(content: str) -> None:
        await message.edit(content=content, allowed_mentions=SAFE_MENTIONS)

    return edit


def interaction_target(interaction: discord.Interaction, *, ephemeral: bool = False) -> Target:
    """Edits the deferred reply; follow-ups for overflow. Past the token's 15 minutes, posts in the channel
    (a private answer goes to the user's direct messages instead, never to the channel)."""
    channel: object = interaction.user if ephemeral else interaction.channel
    fallback: list[discord.Message] = []

    async def edit(content: str) -> None:
        if not interaction.is_expired():
            await interaction.edit_original_response(content=content, allowed_mentions=SAFE_MENTIONS)
            return
        # The interaction token lasted 15 minutes; the channel still takes a normal message.
        if not fallback and isinstance(channel, discord.abc.Messageable):
            fallback.append(await channel.send(content, allowed_mentions=SAFE_MENTIONS))
        elif fallback:
            await fallback[0].edit(content=content, allowed_mentions=SAFE_MENTIONS)

    async def send(content: str) -> Edit:
        if not interaction.is_expired():
            msg = await interaction.followup.send(
                content, ephemeral=ephemeral, allowed_mentions=SAFE_MENTIONS, wait=True
            )
        elif isinstance(channel, discord.abc.Messageable):
            msg = await channel.send(content, allowed_mentions=SAFE_MENTIONS)  # type: ignore[assignment]
        else:
            raise RuntimeError("interaction expired and its channel is unreachable")
        return _message_editor(msg)

    async def refuse(content: str) -> None:
        if interaction.is_expired():
            log.info("interaction %s expired before its refusal could be sent", interaction.id)
            return
        if ephemeral:
            # The deferred "thinking" reply is already private: it becomes the note.
            await interaction.edit_original_response(content=content, allowed_mentions=SAFE_MENTIONS)
            return
        # The deferred "thinking" reply is public; replace it with a private note.
        try:
            await interaction.delete_original_response()
        except discord.NotFound:
            pass
        await interaction.followup.send(content, ephemeral=True, allowed_mentions=SAFE_MENTIONS)

    return Target(edit=edit, send=send, refuse=refuse)


def message_target(reply: discord.Message, channel: discord.abc.Messageable) -> Target:
    """Streams into ``reply`` (the bot's placeholder), follow-ups in the same channel."""

    async def send(content: str) -> Edit:
        msg = await channel.send(content, allowed_mentions=SAFE_MENTIONS)
        return _message_editor(msg)

    return Target(edit=_message_editor(reply), send=send, refuse=_message_editor(reply))
