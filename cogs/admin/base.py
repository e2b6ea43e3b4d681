"""Shared base of the admin cogs: Manage Server is checked at run time, not only by Discord's
default permissions (admins can change those)."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import SwitchboardBot
from bot.replies import SAFE_MENTIONS
from inference.types import TASKS, Tier

log = logging.getLogger(__name__)

ADMIN = discord.Permissions(manage_guild=True)
TASK_CHOICES = [app_commands.Choice(name=t.replace("_", " "), value=t) for t in TASKS]
TIER_CHOICES = [app_commands.Choice(name=t.value, value=t.value) for t in Tier]


def admin_group(name: str, description: str) -> app_commands.Group:
    """A command group Discord shows to Manage Server holders only (the run-time check is AdminBase's)."""
    return app_commands.Group(name=name, description=description, default_permissions=ADMIN, guild_only=True)


class AdminBase(commands.Cog):
    """Refuses non-admins privately; defers (ephemeral) for admins before any database work."""

    def __init__(self, bot: SwitchboardBot) -> None:
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        perms = interaction.permissions
        if interaction.guild is None or not (perms.manage_guild or perms.administrator):
            await interaction.response.send_message(
                "You need the **Manage Server** permission to use this command.", ephemeral=True
            )
            return False
        await interaction.response.defer(ephemeral=True, thinking=True)
        return True

    async def _reply(self, interaction: discord.Interaction, content: str) -> None:
        await interaction.edit_original_response(content=content[:2000], allowed_mentions=SAFE_MENTIONS)
