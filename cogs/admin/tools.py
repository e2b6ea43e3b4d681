"""/tools list|enable|disable: which tools a tool_use request may call on this server (bot/tools.py)."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.answering import AnswerService
from bot.app import SwitchboardBot
from bot.storage import Store
from bot.tools import ToolService
from cogs._autocomplete import MAX_CHOICE_CHARS, MAX_CHOICES
from cogs.admin.base import AdminBase, admin_group, can_manage_server

#: A description longer than this is shortened in /tools list.
_SHOWN = 120


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SHOWN else flat[: _SHOWN - 1] + "…"


class ToolsCog(AdminBase):
    tools = admin_group("tools", "See and choose the tools the bot may use on this server")

    def __init__(self, bot: SwitchboardBot, *, answers: AnswerService, store: Store, tools: ToolService) -> None:
        super().__init__(bot)
        self.answers = answers
        self.store = store
        self.service = tools

    async def _disabled(self, guild_id: int | None) -> list[str]:
        return (await self.answers.scope(guild_id)).config.disabled_tools

    @tools.command(name="list")
    async def tools_list(self, interaction: discord.Interaction) -> None:
        """Show every tool and whether it is enabled here."""
        off = set(await self._disabled(interaction.guild_id))
        lines = ["Tools a tool-use request may call here (`/tools enable` / `/tools disable`):"]
        for name in self.service.names:
            state = "❌ disabled" if name in off else "✅ enabled"
            lines.append(f"{state} · `{name}`: {_short(self.service.describe(name))}")
        await self._reply(interaction, "\n".join(lines))

    @tools.command(name="enable")
    @app_commands.describe(name="The tool's name, as `/tools list` shows it")
    async def tools_enable(self, interaction: discord.Interaction, name: str) -> None:
        """Let the bot call a tool on this server."""
        await self._set(interaction, name, enabled=True)

    @tools.command(name="disable")
    @app_commands.describe(name="The tool's name, as `/tools list` shows it")
    async def tools_disable(self, interaction: discord.Interaction, name: str) -> None:
        """Stop the bot from calling a tool on this server."""
        await self._set(interaction, name, enabled=False)

    async def _set(self, interaction: discord.Interaction, name: str, *, enabled: bool) -> None:
        assert interaction.guild_id is not None
        name = name.strip()
        if name not in self.service.names:
            await self._reply(
                interaction, f"Unknown tool `{name}`. Tools: {', '.join(f'`{n}`' for n in self.service.names)}"
            )
            return
        await self.store.set_tool_enabled(interaction.guild_id, interaction.user.id, name, enabled)
        if enabled:
            await self._reply(interaction, f"`{name}` is enabled: the bot may call it here.")
        else:
            await self._reply(interaction, f"`{name}` is disabled: the bot will neither offer nor call it here.")

    @tools_enable.autocomplete("name")
    @tools_disable.autocomplete("name")
    async def _tool_names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """Tool names containing what was typed (names starting with it first); admins only, like the command."""
        if not can_manage_server(interaction):
            return []
        typed = current.strip().casefold()
        found = [n for n in self.service.names if typed in n.casefold() and len(n) <= MAX_CHOICE_CHARS]
        found.sort(key=lambda n: (not n.casefold().startswith(typed), n.casefold()))
        return [app_commands.Choice(name=n, value=n) for n in found[:MAX_CHOICES]]
