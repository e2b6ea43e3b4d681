"""Shared base of the admin cogs: Manage Server is checked at run time, not only by Discord's
default permissions (admins can change those)."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import SwitchboardBot
from cogs._paging import send_paged

log = logging.getLogger(__name__)

ADMIN = discord.Permissions(manage_guild=True)


def admin_group(name: str, description: str) -> app_commands.Group:
    """A command group Discord shows to Manage Server holders only (the run-time check is AdminBase's)."""
    return app_commands.Group(name=name, description=description, default_permissions=ADMIN, guild_only=True)


def can_manage_server(interaction: discord.Interaction) -> bool:
    """Manage Server (or Administrator) in a server: who may use, see and autocomplete admin commands."""
    perms = interaction.permissions
    return interaction.guild is not None and (perms.manage_guild or perms.administrator)


class AdminBase(commands.Cog):
    """Refuses non-admins privately; defers (ephemeral) for admins before any database work."""

    def __init__(self, bot: SwitchboardBot) -> None:
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction) -> bool:  # type: ignore[override]
        if not can_manage_server(interaction):
            await interaction.response.send_message(
                "You need the **Manage Server** permission to use this command.", ephemeral=True
            )
            return False
        # A command that answers with a form (a modal) must not be deferred: the form is its first response.
        if not (interaction.command and interaction.command.extras.get("opens_modal")):
            await interaction.response.defer(ephemeral=True, thinking=True)
        return True

    async def _reply(self, interaction: discord.Interaction, content: str) -> None:
        # Long answers (a big catalogue, a long audit) go out as several messages, never cut mid-line.
        await send_paged(interaction, content)
