"""Which messages are addressed to the bot, and the reply chain a message continues (llmcord's way).

Replying to one of the bot's answers continues that conversation: the history is the chain of replies
above the new message, each parent found through ``message.reference`` (resolved, cached, else fetched),
the bot's messages as ``assistant`` turns and everyone else's as ``user`` turns. The chain is bounded in
count here and trimmed to the model's context by :func:`bot.answering.trim_history`.
"""

from __future__ import annotations

import logging
import re

import discord

from bot.answering import assistant_text
from inference.types import ChatMessage

log = logging.getLogger(__name__)

#: At most this many earlier messages are walked (each may cost a REST call when it is not cached).
MAX_CHAIN = 20
#: Messages people write; pins, joins, renames, thread notices and other system messages are never answered.
ANSWERED_TYPES = frozenset({discord.MessageType.default, discord.MessageType.reply})


def is_conversational(message: discord.Message) -> bool:
    return message.type in ANSWERED_TYPES and not message.author.bot


def mentions_me(message: discord.Message, me: discord.abc.User) -> bool:
    """A mention of the bot, or of the role Discord manages for it (``role.tags.bot_id``): people pick
    either from the client's list and mean the same."""
    if any(u.id == me.id for u in message.mentions):
        return True
    role = message.guild.self_role if message.guild is not None else None
    return role is not None and any(r.id == role.id for r in message.role_mentions)


def without_mentions_of(text: str, me_id: int, role_id: int | None) -> str:
    """The prompt without the bot's (and its role's) mention, which only addressed the bot."""
    pattern = rf"<@!?{me_id}>" + (rf"|<@&{role_id}>" if role_id is not None else "")
    return re.sub(pattern, "", text).strip()


async def parent_of(message: discord.Message) -> discord.Message | None:
    """The message ``message`` replies to, or None (no reply, deleted, elsewhere or unreadable)."""
    ref = message.reference
    if ref is None or ref.message_id is None or ref.type is not discord.MessageReferenceType.reply:
        return None  # forwards quote other channels: they start nothing
    if isinstance(ref.resolved, discord.Message):
        return ref.resolved
    if ref.cached_message is not None:
        return ref.cached_message
    if isinstance(ref.resolved, discord.DeletedReferencedMessage) or ref.channel_id != message.channel.id:
        return None
    try:
        return await message.channel.fetch_message(ref.message_id)
    except (discord.NotFound, discord.Forbidden):
        return None  # deleted, or history hidden from the bot: the chain ends there
    except discord.HTTPException as exc:
        log.info("could not fetch message %s of a reply chain: %s", ref.message_id, exc.status)
        return None


def is_reply_to_me(parent: discord.Message | None, me: discord.abc.User) -> bool:
    return parent is not None and parent.author.id == me.id


def as_turn(message: discord.Message, me: discord.abc.User, role_id: int | None) -> ChatMessage | None:
    if message.author.id == me.id:
        text = assistant_text(message.content)
        return ChatMessage("assistant", text) if text else None
    text = without_mentions_of(message.content, me.id, role_id)
    if not text and message.attachments:
        text = "(see attachment)"
    return ChatMessage("user", text) if text else None


async def reply_chain(
    message: discord.Message,
    me: discord.abc.User,
    *,
    first: discord.Message | None = None,
    limit: int = MAX_CHAIN,
) -> list[ChatMessage]:
    """The turns above ``message`` in its reply chain, oldest first (``first``: its parent, if known).

    The parts of one long answer (each follow-up replies to the part before it) become one turn."""
    role = message.guild.self_role if message.guild is not None else None
    role_id = role.id if role is not None else None
    turns: list[ChatMessage] = []  # newest first while walking
    seen = {message.id}
    parent = first if first is not None else await parent_of(message)
    while parent is not None and parent.id not in seen and len(seen) <= limit:
        seen.add(parent.id)
        if (turn := as_turn(parent, me, role_id)) is not None:
            if turns and turn.role == "assistant" == turns[-1].role:
                turns[-1] = ChatMessage("assistant", f"{turn.content}\n{turns[-1].content}")
            else:
                turns.append(turn)
        parent = await parent_of(parent)
    turns.reverse()
    return turns
