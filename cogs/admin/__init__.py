"""Admin commands (Manage Server): /models, /route, /settings, /tasks, /tools, one cog each."""

from __future__ import annotations

from bot.app import SwitchboardBot
from cogs.admin.models import ModelsCog
from cogs.admin.routes import RouteCog
from cogs.admin.settings import SettingsCog
from cogs.admin.tasks import TasksCog
from cogs.admin.tools import ToolsCog


async def setup(bot: SwitchboardBot) -> None:
    for cog in (
        ModelsCog(bot, answers=bot.answers, endpoints=bot.endpoints),
        RouteCog(bot, answers=bot.answers, store=bot.store, corrections=bot.corrections),
        SettingsCog(bot, answers=bot.answers, store=bot.store),
        TasksCog(bot, answers=bot.answers, store=bot.store),
        ToolsCog(bot, answers=bot.answers, store=bot.store, tools=bot.tools),
    ):
        await bot.add_cog(cog)
