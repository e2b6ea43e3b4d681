"""Admin commands (Manage Server): /models, /route, /settings, /tasks, one cog each."""

from __future__ import annotations

from bot.app import SwitchboardBot
from cogs.admin.models import ModelsCog
from cogs.admin.routes import RouteCog
from cogs.admin.settings import SettingsCog
from cogs.admin.tasks import TasksCog


async def setup(bot: SwitchboardBot) -> None:
    for cog in (
        ModelsCog(bot, answers=bot.answers, endpoints=bot.endpoints),
        RouteCog(bot, answers=bot.answers, store=bot.store),
        SettingsCog(bot, answers=bot.answers, store=bot.store),
        TasksCog(bot, answers=bot.answers, store=bot.store),
    ):
        await bot.add_cog(cog)
