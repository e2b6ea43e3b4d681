"""Message context menus (right-click a message -> Apps): Translate, Summarize, Fix spelling and grammar, Explain.

The answers are private: the person who asked reads them, the channel is not filled with them. discord.py
does not take context menus as cog methods, so the cog adds them to the tree on load and removes them on unload.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import SwitchboardBot
from bot.delivery import Ask, Target
from bot.everyday import EverydayService
from cogs.everyday._common import deferred, message_text, refuse_now, requester
from inference.languages import for_locale

Action = Callable[[Target, Ask, str], Awaitable[None]]


class EverydayMenus(commands.Cog):
    def __init__(self, bot: SwitchboardBot, service: EverydayService) -> None:
        self.bot = bot
        self.service = service
        self.menus = [
            app_commands.ContextMenu(name="Translate", callback=self.translate),
            app_commands.ContextMenu(name="Summarize", callback=self.summarize),
            app_commands.ContextMenu(name="Fix spelling and grammar", callback=self.fix),
            app_commands.ContextMenu(name="Explain", callback=self.explain),
        ]

    async def cog_load(self) -> None:
        for menu in self.menus:
            self.bot.tree.add_command(menu)

    async def cog_unload(self) -> None:
        for menu in self.menus:
            self.bot.tree.remove_command(menu.name, type=menu.type)

    async def translate(self, interaction: discord.Interaction, message: discord.Message) -> None:
        """Into the language your Discord client is set to."""
        to = for_locale(interaction.locale.value)

        async def run(target: Target, ask: Ask, text: str) -> None:
            await self.service.translate(target, ask, text, to)

        await self._answer(interaction, message, run, "translate")

    async def summarize(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await self._answer(interaction, message, self.service.summarize, "summarize")

    async def fix(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await self._answer(interaction, message, self.service.fix, "correct")

    async def explain(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await self._answer(interaction, message, self.service.explain, "explain")

    async def _answer(self, interaction: discord.Interaction, message: discord.Message, run: Action, verb: str) -> None:
        text = message_text(message, self.bot.user)
        if not text:
            await refuse_now(interaction, f"That message has no text to {verb}.")
            return
        target = await deferred(interaction, private=True)
        async with self.bot.job():
            await run(target, requester(interaction), text)
