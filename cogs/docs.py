"""/docs: a server's own knowledge base. add, list, remove and sync are for admins (Manage Server, checked at run
time); ask is for everyone and answers only from what the asking member may read now.

The listeners keep message sources in sync: an edited message is re-indexed, a deleted one removed, a new message
in a channel indexed as a whole is added.
"""

from __future__ import annotations

import logging
from typing import cast

import discord
from discord import app_commands
from discord.ext import commands

from bot.answering import UserError
from bot.app import SwitchboardBot
from bot.delivery import Ask
from bot.knowledge import (
    MAX_CHANNEL_MESSAGES,
    KnowledgeService,
    Progress,
    Watched,
    check_file,
    describe,
    member_can_read,
    parse_message_link,
    progress_editor,
    source_name,
)
from bot.replies import SAFE_MENTIONS, footer, neutralize_mentions
from cogs._autocomplete import MAX_CHOICE_CHARS, MAX_CHOICES
from cogs._paging import send_paged
from cogs._targets import home_channel_id, interaction_target, role_ids
from cogs.admin.base import can_manage_server
from inference.errors import BadRequest, InferenceError
from inference.knowledge.base import KnowledgeAnswer, Source

log = logging.getLogger(__name__)

#: The subcommands only Manage Server holders may use.
ADMIN_COMMANDS = frozenset({"add", "list", "remove", "sync"})
NOT_SET_UP = "The knowledge base is not set up on this bot."
ADMIN_ONLY = "You need the **Manage Server** permission to use this command."
#: How much of a quoted chunk an answer shows under its sources.
QUOTE_CHARS = 180

Readable = discord.TextChannel | discord.Thread


class DocsCog(commands.Cog):
    docs = app_commands.Group(name="docs", description="This server's knowledge base", guild_only=True)

    def __init__(self, bot: SwitchboardBot) -> None:
        self.bot = bot

    @property
    def service(self) -> KnowledgeService | None:
        return cast("KnowledgeService | None", getattr(self.bot, "knowledge", None))

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        name = interaction.command.name if interaction.command else ""
        if name in ADMIN_COMMANDS and not can_manage_server(interaction):
            await interaction.response.send_message(ADMIN_ONLY, ephemeral=True)
            return False
        if self.service is None:
            await interaction.response.send_message(NOT_SET_UP, ephemeral=True)
            return False
        if name in ADMIN_COMMANDS:
            await interaction.response.defer(ephemeral=True, thinking=True)
        return True

    async def _say(self, interaction: discord.Interaction, content: str) -> None:
        await interaction.edit_original_response(content=content, allowed_mentions=SAFE_MENTIONS)

    # -- add ----------------------------------------------------------------------------------------
    @docs.command(name="add")
    @app_commands.describe(
        file="A .txt, .md, .pdf or .html file",
        link="A message link (right-click a message, Copy Message Link)",
        channel="A channel to index: its whole history, or only its pins",
        pins_only="With a channel: index only its pinned messages",
    )
    async def add(
        self,
        interaction: discord.Interaction,
        file: discord.Attachment | None = None,
        link: str | None = None,
        channel: Readable | None = None,
        pins_only: bool = False,
    ) -> None:
        """Add a file, a message, a channel's pins or a whole channel to this server's knowledge base."""
        service = self.service
        assert service is not None and interaction.guild is not None
        given = [x for x in (file, link, channel) if x is not None]
        if len(given) != 1:
            await self._say(interaction, "Give exactly one of `file`, `link` or `channel`.")
            return
        async with self.bot.job():
            try:
                if file is not None:
                    source = await self._add_file(interaction, service, file)
                elif link is not None:
                    source = await self._add_link(interaction, service, link)
                else:
                    assert channel is not None
                    source = await self._add_channel(interaction, service, channel, pins_only=pins_only)
            except UserError as exc:
                await self._say(interaction, str(exc))
                return
            except BadRequest as exc:
                await self._say(interaction, _bad_request_text(exc))
                return
            await self._say(interaction, f"✅ Indexed `{source.name}`: {_chunks(source.chunks)}.")

    def _progress(self, interaction: discord.Interaction, label: str) -> Progress:
        return progress_editor(lambda text: self._say(interaction, text), label)

    async def _add_file(
        self, interaction: discord.Interaction, service: KnowledgeService, file: discord.Attachment
    ) -> Source:
        assert interaction.guild_id is not None
        # Type and size come with the interaction: nothing is downloaded for a file that would be refused.
        check_file(file.filename, file.content_type, file.size, service.max_file_bytes)
        await self._say(interaction, f"⏳ Reading `{file.filename}`…")
        data = await file.read()
        return await service.add_file(
            interaction.guild_id,
            file.filename,
            data,
            added_by=interaction.user.id,
            progress=self._progress(interaction, f"`{file.filename}`"),
        )

    def _readable_channel(self, interaction: discord.Interaction, channel_id: int) -> discord.abc.Messageable:
        guild = interaction.guild
        assert guild is not None
        channel = guild.get_channel_or_thread(channel_id)
        if channel is None or not isinstance(channel, discord.abc.Messageable):
            raise UserError("I can't see that channel.")
        me = channel.permissions_for(guild.me)
        if not (me.view_channel and me.read_message_history):
            raise UserError(f"I need **View Channel** and **Read Message History** in <#{channel_id}> to index it.")
        if not member_can_read(interaction.user, guild)(channel_id):
            raise UserError(f"You can't read <#{channel_id}> yourself, so you can't index it.")
        return channel

    async def _add_link(self, interaction: discord.Interaction, service: KnowledgeService, link: str) -> Source:
        guild_id, channel_id, message_id = parse_message_link(link)
        if guild_id != interaction.guild_id:
            raise UserError("That message is on another server: only this server's messages can be indexed here.")
        channel = self._readable_channel(interaction, channel_id)
        try:
            message = await channel.fetch_message(message_id)
        except discord.NotFound:
            raise UserError("That message no longer exists.") from None
        except discord.Forbidden:
            raise UserError(f"I can't read messages in <#{channel_id}>.") from None
        return await service.add_messages(
            guild_id, "message", channel_id, [message], added_by=interaction.user.id, message_id=message_id
        )

    async def _add_channel(
        self, interaction: discord.Interaction, service: KnowledgeService, channel: Readable, *, pins_only: bool
    ) -> Source:
        assert interaction.guild_id is not None
        readable = self._readable_channel(interaction, channel.id)
        what = f"the pins of <#{channel.id}>" if pins_only else f"<#{channel.id}>"
        await self._say(interaction, f"⏳ Reading {what}…")
        messages = await _read(readable, pins_only=pins_only)
        return await service.add_messages(
            interaction.guild_id,
            "pins" if pins_only else "channel",
            channel.id,
            messages,
            added_by=interaction.user.id,
            progress=self._progress(interaction, what),
        )

    # -- list, remove, sync -------------------------------------------------------------------------
    @docs.command(name="list")
    async def list_(self, interaction: discord.Interaction) -> None:
        """List this server's indexed sources."""
        service = self.service
        assert service is not None and interaction.guild_id is not None
        sources = await service.sources(interaction.guild_id)
        if not sources:
            await self._say(interaction, "Nothing is indexed on this server yet: add a source with `/docs add`.")
            return
        lines = [f"**{len(sources)} indexed source{'s' * (len(sources) != 1)}**", *map(describe, sources)]
        await send_paged(interaction, "\n".join(lines))

    @docs.command(name="remove")
    @app_commands.describe(name="The source to remove (see /docs list)")
    async def remove(self, interaction: discord.Interaction, name: str) -> None:
        """Remove a source: every chunk of it is gone from the knowledge base."""
        service = self.service
        assert service is not None and interaction.guild_id is not None
        if await service.remove(interaction.guild_id, name):
            await self._say(interaction, f"🗑️ Removed `{name}` and everything indexed from it.")
        else:
            await self._say(interaction, f"There is no source named `{name}` on this server (see `/docs list`).")

    @remove.autocomplete("name")
    async def _source_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        service = self.service
        if service is None or interaction.guild_id is None or not can_manage_server(interaction):
            return []
        typed = current.strip().casefold()
        names = [s.name for s in await service.sources(interaction.guild_id)]
        found = sorted(
            (n for n in names if typed in n.casefold() and len(n) <= MAX_CHOICE_CHARS),
            key=lambda n: (not n.casefold().startswith(typed), n.casefold()),
        )
        return [app_commands.Choice(name=n, value=n) for n in found[:MAX_CHOICES]]

    @docs.command(name="sync")
    async def sync(self, interaction: discord.Interaction) -> None:
        """Re-read the channels, pins and messages this server indexed."""
        service = self.service
        assert service is not None and interaction.guild_id is not None
        done: list[str] = []
        async with self.bot.job():
            for source in await service.sources(interaction.guild_id):
                if source.channel_id is None or source.kind == "file":
                    continue
                try:
                    done.append(await self._resync(interaction, service, source))
                except UserError as exc:
                    done.append(f"• `{source.name}`: {exc}")
        await self._say(interaction, "\n".join(["🔄 Synced:", *done]) if done else "No channel or message sources.")

    async def _resync(self, interaction: discord.Interaction, service: KnowledgeService, source: Source) -> str:
        assert source.channel_id is not None and interaction.guild_id is not None
        channel = self._readable_channel(interaction, source.channel_id)
        if source.kind == "message":
            message_id = int(source.name.rsplit("/", 1)[1])
            try:
                message = await channel.fetch_message(message_id)
            except discord.NotFound:
                await service.remove(interaction.guild_id, source.name)
                return f"• `{source.name}`: the message was deleted, so the source was removed"
            fresh = await service.add_messages(
                interaction.guild_id, "message", source.channel_id, [message], added_by=source.added_by,
                message_id=message_id,
            )  # fmt: skip
        else:
            messages = await _read(channel, pins_only=source.kind == "pins")
            fresh = await service.add_messages(
                interaction.guild_id, source.kind, source.channel_id, messages, added_by=source.added_by,
                progress=self._progress(interaction, f"`{source.name}`"),
            )  # fmt: skip
        return f"• `{fresh.name}`: {_chunks(fresh.chunks)}"

    # -- ask ----------------------------------------------------------------------------------------
    @docs.command(name="ask")
    @app_commands.describe(question="What you want to know", private="Only you see the answer")
    async def ask(self, interaction: discord.Interaction, question: str, private: bool = False) -> None:
        """Ask this server's knowledge base: the answer quotes and cites what it found."""
        service = self.service
        assert service is not None and interaction.guild_id is not None
        await interaction.response.defer(ephemeral=private, thinking=True)
        ask = Ask(
            guild_id=interaction.guild_id,
            channel_id=home_channel_id(interaction.channel, interaction.channel_id),
            user_id=interaction.user.id,
            prompt=question,
            role_ids=role_ids(interaction.user),
        )
        admitted = await self.bot.delivery.admit(interaction_target(interaction, ephemeral=private), ask, [question])
        if admitted is None:
            return
        scope, (request,) = admitted
        can_read = member_can_read(interaction.user, interaction.guild)
        started = self.bot.clock()
        async with self.bot.job():
            try:
                answer = await service.kb.answer(
                    interaction.guild_id,
                    request.text,
                    can_read=can_read,
                    board=self.bot.board,
                    overrides=scope.overrides,
                    catalogue=scope.catalogue,
                )
            except BadRequest as exc:
                await self._say(interaction, f"⚠️ {_bad_request_text(exc)}")
                return
            except InferenceError as exc:  # the model failed: say so, as /ask does
                log.warning("/docs ask failed: %s: %s", type(exc).__name__, exc)
                await self._say(interaction, f"⚠️ {exc.user_text}")
                return
            drawn: list[Source] | None = None
            if can_manage_server(interaction):
                drawn = [
                    s
                    for s in await service.sources(interaction.guild_id)
                    if s.channel_id is None or can_read(s.channel_id)
                ]
            content = render_answer(answer, self.bot.clock() - started, drawn=drawn)
            await send_paged(interaction, content, ephemeral=private)

    # -- sync listeners -----------------------------------------------------------------------------
    def _ours(self, author_id: int | None) -> bool:
        return self.bot.user is not None and author_id == self.bot.user.id

    @commands.Cog.listener()
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        service = self.service
        if service is None or payload.guild_id is None or self._ours(payload.message.author.id):
            return
        if await service.has_sources(payload.guild_id):
            await service.message_edited(payload.guild_id, payload.message)

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        service = self.service
        if service is None or payload.guild_id is None:
            return
        if await service.has_sources(payload.guild_id):
            await service.messages_deleted(payload.guild_id, [payload.message_id])

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        service = self.service
        if service is None or payload.guild_id is None:
            return
        if await service.has_sources(payload.guild_id):
            await service.messages_deleted(payload.guild_id, sorted(payload.message_ids))

    @commands.Cog.listener()
    async def on_guild_channel_pins_update(
        self, channel: discord.abc.GuildChannel | discord.Thread, last_pin: object
    ) -> None:
        """A pin or unpin in a channel whose pins are indexed: its pins are read again."""
        service = self.service
        guild = channel.guild
        if service is None or not await service.has_sources(guild.id):
            return
        if not (await service.watched(guild.id)).get(channel.id, Watched()).pins:
            return
        if not isinstance(channel, discord.abc.Messageable):
            return
        try:
            messages = await _read(channel, pins_only=True)
        except UserError as exc:
            log.info("pins of %s not re-read: %s", channel.id, exc)
            return
        old = next((s for s in await service.sources(guild.id) if s.name == source_name("pins", channel.id)), None)
        added_by = old.added_by if old is not None else None
        await service.add_messages(guild.id, "pins", channel.id, messages, added_by=added_by)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        service = self.service
        if service is None or message.guild is None or self._ours(message.author.id):
            return
        if await service.has_sources(message.guild.id):
            await service.message_created(message.guild.id, message)


async def _read(channel: discord.abc.Messageable, *, pins_only: bool) -> list[discord.Message]:
    """A channel's pins, or its history (oldest first, at most MAX_CHANNEL_MESSAGES)."""
    try:
        if pins_only:
            pinned: list[discord.Message] = [m async for m in channel.pins(limit=None)]
            return pinned[::-1]  # oldest pin first
        return [m async for m in channel.history(limit=MAX_CHANNEL_MESSAGES, oldest_first=True)]
    except discord.Forbidden:
        raise UserError("I can't read that channel's messages (View Channel, Read Message History).") from None


def _chunks(n: int) -> str:
    return f"{n} chunk{'s' * (n != 1)}"


def _bad_request_text(exc: BadRequest) -> str:
    text = str(exc).strip()
    return text or exc.user_text


def _quote(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= QUOTE_CHARS else flat[: QUOTE_CHARS - 1].rstrip() + "…"


def render_answer(answer: KnowledgeAnswer, seconds: float, *, drawn: list[Source] | None = None) -> str:
    """The answer, its numbered sources with the quoted text, what an admin's question may draw on, the footer."""
    lines = [neutralize_mentions(answer.text.strip())]
    if answer.citations:
        lines.append("")
        lines.append("**Sources**")
        for n, c in enumerate(answer.citations, 1):
            lines.append(f"[{n}] `{c.source}` · {c.position}")
            lines.append(f"> {neutralize_mentions(_quote(c.quote))}")
    if drawn is not None:
        names = ", ".join(f"`{s.name}`" for s in drawn) or "none"
        lines.append(f"-# This question may draw on: {names}")
    route = answer.route
    model = route.get("model")
    if answer.nothing_found or not model:
        lines.append("-# rag · no model was run")
    else:
        note = "; ".join(str(n) for n in cast(list[object], route.get("notes") or [])) or None
        lines.append(footer(str(route.get("task", "rag")), str(route.get("tier", "")), str(model), seconds, note))
    return "\n".join(lines)


async def setup(bot: SwitchboardBot) -> None:
    await bot.add_cog(DocsCog(bot))
