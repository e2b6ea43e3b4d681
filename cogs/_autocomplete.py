"""Autocomplete for options that name a model: this server's catalogue (the operator's models and its own),
filtered by what was typed.

Discord runs no cog check before autocomplete, so each callback checks Manage Server itself: a member who
may not use the admin commands learns nothing about the server's endpoints from typing into them.
"""

from __future__ import annotations

from typing import cast

import discord
from discord import app_commands

from bot.answering import AnswerService
from bot.app import SwitchboardBot
from cogs.admin.base import can_manage_server
from inference.catalogue import Catalogue
from inference.types import TASKS, Tier

#: Discord shows at most 25 choices, with names and values of at most 100 characters.
MAX_CHOICES = 25
MAX_CHOICE_CHARS = 100


def model_choices(
    catalogue: Catalogue, current: str, *, names: set[str] | None = None
) -> list[app_commands.Choice[str]]:
    """Models whose name contains ``current`` (case-insensitive), names starting with it first, then by name."""
    typed = current.strip().casefold()
    found = [
        name
        for name in catalogue.models
        if (names is None or name in names) and typed in name.casefold() and len(name) <= MAX_CHOICE_CHARS
    ]
    found.sort(key=lambda name: (not name.casefold().startswith(typed), name.casefold()))
    choices = []
    for name in found[:MAX_CHOICES]:
        spec = catalogue.models[name]
        origin = ", this server" if name in catalogue.untrusted else ""
        label = f"{name} ({spec.tier.value} tier{origin})"
        choices.append(app_commands.Choice(name=label if len(label) <= MAX_CHOICE_CHARS else name, value=name))
    return choices


def _answers(interaction: discord.Interaction) -> AnswerService:
    """Autocomplete callbacks run outside any cog: the bot is the one way to the service."""
    return cast(SwitchboardBot, interaction.client).answers


async def _catalogue(interaction: discord.Interaction) -> Catalogue:
    return (await _answers(interaction).scope(interaction.guild_id)).catalogue


async def any_model(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Every model this server can use (``/models test``)."""
    if not can_manage_server(interaction):
        return []
    return model_choices(await _catalogue(interaction), current)


async def own_model(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Only the models this server added: the built-in ones cannot be removed (``/models remove``)."""
    if not can_manage_server(interaction):
        return []
    catalogue = await _catalogue(interaction)
    return model_choices(catalogue, current, names=set(catalogue.untrusted))


async def route_model(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Models for ``/route set``: once the task is chosen, small-tier models are left out for a task that
    always runs on the large tier (the command would refuse them)."""
    if not can_manage_server(interaction):
        return []
    catalogue = await _catalogue(interaction)
    task = getattr(interaction.namespace, "task", None)
    names = None
    if task in TASKS and _answers(interaction).policy().tiers[task] is Tier.LARGE:
        names = {name for name, spec in catalogue.models.items() if spec.tier is Tier.LARGE}
    return model_choices(catalogue, current, names=names)
