"""The knowledge base on Discord: what the docs cog and the sync listeners call.

Converts Discord messages to :class:`~inference.knowledge.base.MessageText`, decides at question time which
channels the asking member may read (Discord's permissions now, not when the text was indexed), checks files
before they are downloaded and keeps message sources in sync with edits and deletions. The knowledge base
itself (:class:`inference.knowledge.service.KnowledgeBase`) knows nothing of Discord.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

import discord

from bot.answering import UserError, human_size
from inference.knowledge.base import CanRead, MessageText, Source, SourceKind

if TYPE_CHECKING:
    from inference.knowledge.service import KnowledgeBase

log = logging.getLogger(__name__)

#: File types a server may index, by extension, and the content types Discord may report for them.
FILE_TYPES: dict[str, tuple[str, ...]] = {
    ".txt": ("text/plain",),
    ".md": ("text/markdown", "text/plain", "text/x-markdown"),
    ".markdown": ("text/markdown", "text/plain", "text/x-markdown"),
    ".pdf": ("application/pdf",),
    ".html": ("text/html",),
    ".htm": ("text/html",),
}
#: How many messages of a channel's history one ``/docs add`` or ``/docs sync`` reads at most.
MAX_CHANNEL_MESSAGES = 2000
#: A progress message is edited at most this many times for one source (plus the final count).
PROGRESS_STEPS = 10

_LINK_RE = re.compile(
    r"https://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(?P<guild>\d+)/(?P<channel>\d+)/(?P<message>\d+)"
)

Progress = Callable[[int, int], Awaitable[None]]


def check_file(filename: str, content_type: str | None, size: int, limit: int) -> None:
    """Refuse (UserError) a file of an unsupported type or over ``limit`` bytes: before anything is downloaded."""
    suffix = PurePosixPath(filename).suffix.lower()
    ctype = (content_type or "").split(";")[0].strip().lower()
    allowed = FILE_TYPES.get(suffix)
    if allowed is None or (ctype and ctype not in allowed and ctype != "application/octet-stream"):
        raise UserError(
            f"`{filename}` has an unsupported type ({ctype or suffix or 'unknown'}): "
            "I can index .txt, .md, .pdf and .html files."
        )
    if size > limit:
        raise UserError(f"`{filename}` is too large ({human_size(size)}); files may be at most {human_size(limit)}.")


def parse_message_link(link: str) -> tuple[int, int, int]:
    """(guild id, channel id, message id) of a Discord message link; UserError when it is not one."""
    found = _LINK_RE.search(link.strip())
    if found is None:
        raise UserError("That is not a message link: right-click a message and choose **Copy Message Link**.")
    return int(found["guild"]), int(found["channel"]), int(found["message"])


def message_text(message: discord.Message) -> MessageText:
    """What the knowledge base keeps of a Discord message (its text, author and jump link)."""
    author = getattr(message.author, "display_name", None) or message.author.name
    return MessageText(
        id=message.id,
        channel_id=message.channel.id,
        author=author,
        content=message.content,
        jump_url=message.jump_url,
    )


def is_indexable(message: discord.Message) -> bool:
    """A human's or a bot's ordinary message with text (system messages and empty ones are not knowledge)."""
    return message.type in (discord.MessageType.default, discord.MessageType.reply) and bool(message.content.strip())


def source_name(kind: SourceKind, channel_id: int, message_id: int | None = None) -> str:
    """The unique name of a Discord source: ``channel:123``, ``pins:123`` or ``message:123/456``."""
    return f"message:{channel_id}/{message_id}" if kind == "message" else f"{kind}:{channel_id}"


def member_can_read(member: discord.abc.User, guild: discord.Guild | None) -> CanRead:
    """Whether ``member`` may read a channel now: View Channel and Read Message History there, from the guild
    cache. A channel the bot cannot see (or no longer exists) is never readable."""

    def can_read(channel_id: int) -> bool:
        if guild is None or not isinstance(member, discord.Member):
            return False
        channel = guild.get_channel_or_thread(channel_id)
        if channel is None:
            return False
        for who in (member, guild.me):
            perms = channel.permissions_for(who)
            if not (perms.view_channel and perms.read_message_history):
                return False
        if isinstance(channel, discord.Thread) and channel.is_private():
            # A private thread is for its members (and those who manage threads); the member list in the
            # cache may be incomplete, which only ever says no.
            perms = channel.permissions_for(member)
            return perms.manage_threads or any(m.id == member.id for m in channel.members)
        return True

    return can_read


def describe(source: Source) -> str:
    """One line of ``/docs list``: name, kind, chunk count and who added it."""
    where = f" in <#{source.channel_id}>" if source.channel_id is not None and source.kind != "message" else ""
    who = f", added by <@{source.added_by}>" if source.added_by is not None else ""
    return f"• `{source.name}` ({source.kind}{where}): {source.chunks} chunk{'s' * (source.chunks != 1)}{who}"


def progress_editor(edit: Callable[[str], Awaitable[None]], label: str) -> Progress:
    """A ``progress`` callback that edits a message ("indexed 120/560 chunks") about PROGRESS_STEPS times."""
    shown = -1

    async def progress(done: int, total: int) -> None:
        nonlocal shown
        step = max(1, total // PROGRESS_STEPS)
        if done == shown or (done < total and shown >= 0 and done - shown < step):
            return
        shown = done
        try:
            await edit(f"⏳ Indexing {label}: indexed {done}/{total} chunks")
        except discord.HTTPException as exc:  # the progress message is a courtesy: indexing goes on
            log.info("progress edit failed: %s", exc)

    return progress


@dataclass(frozen=True)
class Watched:
    """What is indexed of one channel: the whole channel, its pins, single messages (by id)."""

    channel: bool = False
    pins: bool = False


class KnowledgeService:
    """The Discord side of a server's knowledge base (the cog and the sync listeners call it)."""

    def __init__(self, knowledge: KnowledgeBase, *, max_file_bytes: int) -> None:
        self.kb = knowledge
        self.max_file_bytes = max_file_bytes
        #: Per server: channel id -> what of it is indexed (loaded on first use, refreshed on every change).
        self._watched: dict[int, dict[int, Watched]] = {}
        self._has: dict[int, bool] = {}
        #: One change at a time per server, in the order events arrive (an edit, then the pins re-read it
        #: caused, never interleaved). Questions take no lock: they are never held up by indexing.
        self._locks: dict[int, asyncio.Lock] = {}

    def _lock(self, guild_id: int) -> asyncio.Lock:
        return self._locks.setdefault(guild_id, asyncio.Lock())

    # -- sources ------------------------------------------------------------------------------------
    async def sources(self, guild_id: int) -> list[Source]:
        return await self.kb.sources(guild_id)

    async def add_file(
        self, guild_id: int, name: str, data: bytes, *, added_by: int, progress: Progress | None = None
    ) -> Source:
        return await self.kb.add_file(guild_id, name, data, added_by=added_by, progress=progress)

    async def add_messages(
        self,
        guild_id: int,
        kind: SourceKind,
        channel_id: int,
        messages: Sequence[discord.Message],
        *,
        added_by: int | None,
        message_id: int | None = None,
        progress: Progress | None = None,
    ) -> Source:
        texts = [message_text(m) for m in messages if is_indexable(m)]
        async with self._lock(guild_id):
            source = await self.kb.add_messages(
                guild_id,
                source_name(kind, channel_id, message_id),
                kind,
                texts,
                channel_id=channel_id,
                added_by=added_by,
                progress=progress,
            )
            self._forget(guild_id)
        return source

    async def remove(self, guild_id: int, name: str) -> bool:
        async with self._lock(guild_id):
            removed = await self.kb.remove(guild_id, name)
            self._forget(guild_id)
        return removed

    def _forget(self, guild_id: int) -> None:
        self._watched.pop(guild_id, None)
        self._has.pop(guild_id, None)

    # -- sync ---------------------------------------------------------------------------------------
    async def has_sources(self, guild_id: int) -> bool:
        """Whether the server indexed anything (cached: the listeners ask on every message)."""
        if guild_id not in self._has:
            self._has[guild_id] = bool(await self.kb.sources(guild_id))
        return self._has[guild_id]

    async def watched(self, guild_id: int) -> dict[int, Watched]:
        if guild_id not in self._watched:
            found: dict[int, Watched] = {}
            for source in await self.kb.sources(guild_id):
                if source.channel_id is None or source.kind not in ("channel", "pins"):
                    continue
                before = found.get(source.channel_id, Watched())
                found[source.channel_id] = Watched(
                    channel=before.channel or source.kind == "channel", pins=before.pins or source.kind == "pins"
                )
            self._watched[guild_id] = found
        return self._watched[guild_id]

    async def message_edited(self, guild_id: int, message: discord.Message) -> bool:
        """Re-index an edited message if it is indexed (an edit that empties it removes it)."""
        async with self._lock(guild_id):
            if not is_indexable(message):
                return await self.kb.remove_message(guild_id, message.id) > 0
            return await self.kb.update_message(guild_id, message_text(message))

    async def messages_deleted(self, guild_id: int, message_ids: Iterable[int]) -> int:
        removed = 0
        async with self._lock(guild_id):
            for message_id in message_ids:
                removed += await self.kb.remove_message(guild_id, message_id)
        return removed

    async def message_created(self, guild_id: int, message: discord.Message) -> bool:
        """A new message in a channel indexed as a whole is added to that channel's source."""
        if not is_indexable(message):
            return False
        channel_id = message.channel.id
        if not (await self.watched(guild_id)).get(channel_id, Watched()).channel:
            return False
        async with self._lock(guild_id):
            sources = await self.kb.sources(guild_id)
            source = next((s for s in sources if s.kind == "channel" and s.channel_id == channel_id), None)
            if source is None:
                return False
            await self.kb.append_message(source, message_text(message))
        return True

    def can_read(self, member: discord.abc.User, guild: discord.Guild | None) -> CanRead:
        return member_can_read(member, guild)
