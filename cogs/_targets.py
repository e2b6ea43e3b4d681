"""Adapters from Discord surfaces (an interaction, a message) to a delivery Target."""

from __future__ import annotations

import io
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

    async def upload(content: str, filename: str, data: bytes) -> None:
        file = discord.File(io.BytesIO(data), filename=filename)
        if not interaction.is_expired():
            await interaction.followup.send(content, file=file, ephemeral=ephemeral, allowed_mentions=SAFE_MENTIONS)
        elif isinstance(channel, discord.abc.Messageable):
            await channel.send(content, file=file, allowed_mentions=SAFE_MENTIONS)

    async def attach_view(view: discord.ui.View | None) -> None:
        if not interaction.is_expired():  # past the token's life the answer is a channel message (no buttons)
            await interaction.edit_original_response(view=view, allowed_mentions=SAFE_MENTIONS)

    return Target(edit=edit, send=send, refuse=refuse, upload=upload, attach_view=attach_view)


def component_target(interaction: discord.Interaction) -> Target:
    """Streams into the message a deferred button or menu click was on (its ``@original``), follow-ups after it;
    refusals go privately to the one who clicked and never touch the message."""

    async def edit(content: str) -> None:
        await interaction.edit_original_response(content=content, allowed_mentions=SAFE_MENTIONS)

    async def send(content: str) -> Edit:
        msg = await interaction.followup.send(content, allowed_mentions=SAFE_MENTIONS, wait=True)
        return _message_editor(msg)

    async def refuse(content: str) -> None:
        await interaction.followup.send(content, ephemeral=True, allowed_mentions=SAFE_MENTIONS)

    async def upload(content: str, filename: str, data: bytes) -> None:
        file = discord.File(io.BytesIO(data), filename=filename)
        await interaction.followup.send(content, file=file, allowed_mentions=SAFE_MENTIONS)

    async def attach_view(view: discord.ui.View | None) -> None:
        await interaction.edit_original_response(view=view, allowed_mentions=SAFE_MENTIONS)

    return Target(edit=edit, send=send, refuse=refuse, upload=upload, attach_view=attach_view)


def message_target(reply: discord.Message, channel: discord.abc.Messageable) -> Target:
    """Streams into ``reply`` (the bot's placeholder), follow-ups in the same channel."""
    parts = [reply]

    async def send(content: str) -> Edit:
        # Each follow-up replies to the part before it, so replying to any part continues the whole answer.
        previous = parts[-1].to_reference(fail_if_not_exists=False)
        msg = await channel.send(content, reference=previous, mention_author=False, allowed_mentions=SAFE_MENTIONS)
        parts.append(msg)
        return _message_editor(msg)

    async def upload(content: str, filename: str, data: bytes) -> None:
        file = discord.File(io.BytesIO(data), filename=filename)
        await channel.send(content, file=file, allowed_mentions=SAFE_MENTIONS)

    async def attach_view(view: discord.ui.View | None) -> None:
        await reply.edit(view=view, allowed_mentions=SAFE_MENTIONS)

    return Target(
        edit=_message_editor(reply), send=send, refuse=_message_editor(reply), upload=upload, attach_view=attach_view
    )


# --- what the bot may do where it is asked ------------------------------------------------------------

#: Permission attribute -> the name Discord's client shows (and the note to the user uses).
PERMISSION_NAMES = {
    "view_channel": "View Channel",
    "send_messages": "Send Messages",
    "send_messages_in_threads": "Send Messages in Threads",
    "read_message_history": "Read Message History",
    "create_public_threads": "Create Public Threads",
}


def missing_permissions(
    perms: discord.Permissions, *, in_thread: bool, reply: bool = False, start_thread: bool = False
) -> list[str]:
    """Names of the permissions the bot lacks to answer: post (in a thread: Send Messages in Threads), reply
    to a message (Read Message History) or open a conversation thread."""
    if not perms.view_channel:
        return [PERMISSION_NAMES["view_channel"]]  # without it Discord shows nothing else
    needed = ["send_messages_in_threads" if in_thread else "send_messages"]
    if reply:
        needed.append("read_message_history")
    if start_thread:
        needed += ["create_public_threads", "send_messages_in_threads"]
    return [PERMISSION_NAMES[p] for p in dict.fromkeys(needed) if not getattr(perms, p)]


def permission_note(channel_id: int | None, missing: list[str]) -> str:
    where = f"<#{channel_id}>" if channel_id else "that channel"
    names = " and ".join(f"**{m}**" for m in missing)
    plural = "s" if len(missing) > 1 else ""
    return f"I can't answer in {where}: I'm missing the {names} permission{plural} there. A server admin can grant it."


def forbidden_note(exc: discord.HTTPException, channel_id: int | None, guess: list[str]) -> str:
    """Discord's 403 as a note naming what is missing (50001: the channel is hidden from the bot;
    160002: replying needs the history; 50013: ``guess``, what the failed call needs)."""
    if exc.code == 50001:
        return permission_note(channel_id, [PERMISSION_NAMES["view_channel"]])
    if exc.code == 160002:
        return permission_note(channel_id, [PERMISSION_NAMES["read_message_history"]])
    return permission_note(channel_id, guess)


async def tell_privately(user: discord.User | discord.Member, content: str) -> None:
    """A direct message to ``user``; where they accept none, the note is only logged (INFO)."""
    try:
        await user.send(content, allowed_mentions=SAFE_MENTIONS)
    except discord.HTTPException as exc:
        log.info("could not tell user %s privately (%s %s)", user.id, exc.status, exc.code)


def role_ids(user: discord.abc.User) -> tuple[int, ...]:
    """The user's role ids on the server (none outside one): exempt roles skip the rate limit."""
    return tuple(r.id for r in user.roles) if isinstance(user, discord.Member) else ()
