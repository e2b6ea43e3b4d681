"""The everyday commands (/classify, /translate, /summarize, /rewrite, /json) and the message context menus
(Translate, Summarize, Fix spelling and grammar, Explain); the logic is in :mod:`bot.everyday`."""

from __future__ import annotations

from bot.app import SwitchboardBot
from cogs.everyday.commands import EverydayCommands
from cogs.everyday.menus import EverydayMenus


async def setup(bot: SwitchboardBot) -> None:
    await bot.add_cog(EverydayCommands(bot, bot.everyday))
    await bot.add_cog(EverydayMenus(bot, bot.everyday))
