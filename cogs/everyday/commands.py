"""/classify, /translate, /summarize, /rewrite and /json: validate, defer, hand plain strings to the service."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.answering import UserError
from bot.app import SwitchboardBot
from bot.everyday import (
    MAX_LAST,
    MAX_SCHEMA_BYTES,
    ONE_FORMAT,
    STYLES,
    EverydayService,
    check_text_file,
    constraint_from,
    language,
    lines_of,
    parse_labels,
    parse_message_link,
    transcript,
)
from cogs.everyday._common import deferred, linked_message, message_text, recent_messages, refuse_now, requester
from inference.languages import matching

STYLE_CHOICES = [app_commands.Choice(name=style, value=style) for style in STYLES]


async def language_choices(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """At most 25 languages matching what was typed (name or code)."""
    return [app_commands.Choice(name=f"{lang.name} ({lang.code})", value=lang.code) for lang in matching(current)]


class EverydayCommands(commands.Cog):
    def __init__(self, bot: SwitchboardBot, service: EverydayService) -> None:
        self.bot = bot
        self.service = service

    @app_commands.command(name="classify")
    @app_commands.describe(
        labels="The labels to choose from, separated by commas",
        text="The text to label",
        multi="Several labels may apply",
        file="A text file: one item per line, each labelled (at most 50 lines)",
    )
    async def classify(
        self,
        interaction: discord.Interaction,
        labels: str,
        text: str | None = None,
        multi: bool = False,
        file: discord.Attachment | None = None,
    ) -> None:
        """Label a text with one of your labels"""
        try:
            choices = parse_labels(labels)
            if (text is None) == (file is None):
                raise UserError("Give the `text` to label or a `file` with one item per line (one of the two).")
            if file is not None:
                check_text_file(file.filename, file.content_type, file.size)
        except UserError as exc:
            await refuse_now(interaction, str(exc))
            return
        target = await deferred(interaction)
        async with self.bot.job():
            try:
                texts = lines_of(file.filename, await file.read()) if file is not None else [text or ""]
            except UserError as exc:
                await target.refuse(str(exc))
                return
            await self.service.classify(target, requester(interaction), texts, choices, multi)

    @app_commands.command(name="translate")
    @app_commands.describe(text="What to translate", to="The language to translate into")
    @app_commands.autocomplete(to=language_choices)
    async def translate(self, interaction: discord.Interaction, text: str, to: str) -> None:
        """Translate a text"""
        try:
            lang = language(to)
        except UserError as exc:
            await refuse_now(interaction, str(exc))
            return
        target = await deferred(interaction)
        async with self.bot.job():
            await self.service.translate(target, requester(interaction), text, lang)

    @app_commands.command(name="summarize")
    @app_commands.describe(
        text="The text to summarize",
        message="A message link (Copy Message Link) to summarize",
        last=f"Summarize the last N messages of this channel (1-{MAX_LAST})",
    )
    async def summarize(
        self,
        interaction: discord.Interaction,
        text: str | None = None,
        message: str | None = None,
        last: int | None = None,
    ) -> None:
        """Summarize a text, a message or this channel"""
        try:
            if sum(v is not None for v in (text, message, last)) != 1:
                raise UserError("Give one of `text`, `message` (a message link) or `last` (a number of messages).")
            if last is not None and not 1 <= last <= MAX_LAST:
                raise UserError(f"`last` must be between 1 and {MAX_LAST} (you gave {last}).")
            link = parse_message_link(message) if message is not None else None
        except UserError as exc:
            await refuse_now(interaction, str(exc))
            return
        target = await deferred(interaction)
        async with self.bot.job():
            ask = requester(interaction)
            try:
                if link is not None:
                    found = await linked_message(interaction, link)
                    text = message_text(found, self.bot.user)
                    if not text:
                        raise UserError("That message has no text to summarize.")
                elif last is not None:
                    budget = await self.service.prompt_budget(interaction.guild_id) - 200  # room for the request
                    text, _dropped = transcript(await recent_messages(interaction, last), budget)
            except UserError as exc:
                await target.refuse(str(exc))
                return
            await self.service.summarize(target, ask, text or "", conversation=last is not None)

    @app_commands.command(name="rewrite")
    @app_commands.describe(text="The text to rewrite", style="How to rewrite it")
    @app_commands.choices(style=STYLE_CHOICES)
    async def rewrite(self, interaction: discord.Interaction, text: str, style: app_commands.Choice[str]) -> None:
        """Rewrite a text in another style"""
        target = await deferred(interaction)
        async with self.bot.job():
            await self.service.rewrite(target, requester(interaction), text, style.value)

    @app_commands.command(name="json")
    @app_commands.describe(
        prompt="What the document should contain",
        schema="A JSON Schema the answer must be valid against (JSON text)",
        schema_file="A JSON Schema as a .json file",
        choices="Instead of a schema: the answer is exactly one of these words (comma-separated)",
        regex="Instead of a schema: the answer matches this regular expression",
    )
    async def json(
        self,
        interaction: discord.Interaction,
        prompt: str,
        schema: str | None = None,
        schema_file: discord.Attachment | None = None,
        choices: str | None = None,
        regex: str | None = None,
    ) -> None:
        """Output that always validates: JSON Schema, fixed words or a pattern"""
        try:
            if sum(v is not None for v in (schema, schema_file, choices, regex)) != 1:
                raise UserError(ONE_FORMAT)
            if schema_file is None:
                constraint = constraint_from(schema=schema, choices=choices, regex=regex)
            else:  # read after deferring: a download is work
                check_text_file(schema_file.filename, schema_file.content_type, schema_file.size, MAX_SCHEMA_BYTES)
        except UserError as exc:
            await refuse_now(interaction, str(exc))
            return
        target = await deferred(interaction)
        async with self.bot.job():
            if schema_file is not None:
                try:
                    constraint = constraint_from(schema_file=(schema_file.filename, await schema_file.read()))
                except UserError as exc:
                    await target.refuse(str(exc))
                    return
            await self.service.generate(target, requester(interaction), prompt, constraint)
