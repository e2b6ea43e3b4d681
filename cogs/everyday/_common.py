"""What the everyday commands and menus share: who asks, where to answer, refusing before any work."""

from __future__ import annotations

import discord

from bot.answering import UserError, assistant_text
from bot.delivery import Ask, Target
from bot.everyday import MessageLink
from bot.replies import SAFE_MENTIONS
from cogs._targets import home_channel_id, interaction_target, role_ids


def requester(interaction: discord.Interaction) -> Ask:
    """Who asks and where (the prompt is filled in by the service)."""
    return Ask(
        guild_id=interaction.guild_id,
        channel_id=home_channel_id(interaction.channel, interaction.channel_id),
        user_id=interaction.user.id,
        prompt="",
        role_ids=role_ids(interaction.user),
    )


async def refuse_now(interaction: discord.Interaction, text: str) -> None:
    """Bad input caught before any work: a private answer, nothing deferred."""
    await interaction.response.send_message(text, ephemeral=True, allowed_mentions=SAFE_MENTIONS)


async def deferred(interaction: discord.Interaction, *, private: bool = False) -> Target:
    # Acknowledge before any work: Discord drops interactions not answered within 3 seconds.
    await interaction.response.defer(ephemeral=private, thinking=True)
    return interaction_target(interaction, ephemeral=private)


def message_text(message: discord.Message, me: discord.abc.User | None) -> str:
    """A message's text as people read it (one of the bot's answers without its footer)."""
    if me is not None and message.author.id == me.id:
        return assistant_text(message.content)
    return message.content.strip()


async def linked_message(interaction: discord.Interaction, link: MessageLink) -> discord.Message:
    """The linked message, when it is on this server (or in this DM) and the requester may read it there."""
    if link.guild_id != interaction.guild_id or (link.guild_id is None and link.channel_id != interaction.channel_id):
        raise UserError("That message is in another server or conversation: I only read messages from here.")
    channel: object
    if interaction.guild is None:
        channel = interaction.channel
    else:
        channel = interaction.guild.get_channel_or_thread(link.channel_id)
        if channel is None:
            raise UserError(f"I can't see <#{link.channel_id}>.")
        if not isinstance(interaction.user, discord.Member) or not _can_read_history(
            channel.permissions_for(interaction.user)
        ):
            raise UserError(f"You can't read the message history of <#{link.channel_id}>, so I won't read it for you.")
    if not isinstance(channel, discord.abc.Messageable):
        raise UserError("I can't read messages there.")
    try:
        return await channel.fetch_message(link.message_id)
    except discord.NotFound:
        raise UserError("That message doesn't exist any more.") from None
    except discord.Forbidden:
        raise UserError(f"I can't read messages in <#{link.channel_id}> (I need **Read Message History**).") from None


async def recent_messages(interaction: discord.Interaction, count: int) -> list[tuple[str, str]]:
    """The channel's last ``count`` messages with text, oldest first, as (author, text)."""
    if interaction.guild is not None and not _can_read_history(interaction.permissions):
        raise UserError("You need **Read Message History** in this channel to summarize it.")
    channel = interaction.channel
    if not isinstance(channel, discord.abc.Messageable):
        raise UserError("I can't read messages here.")
    me = interaction.client.user
    try:
        # Before the interaction: its own "thinking..." reply is not part of what is summarized.
        found = [m async for m in channel.history(limit=count, before=discord.Object(interaction.id))]
    except discord.Forbidden:
        raise UserError("I can't read this channel's history (I need **Read Message History**).") from None
    lines = [(m.author.display_name, text) for m in reversed(found) if (text := message_text(m, me))]
    if not lines:
        raise UserError("There are no messages with text here to summarize.")
    return lines


def _can_read_history(perms: discord.Permissions) -> bool:
    return perms.view_channel and perms.read_message_history
