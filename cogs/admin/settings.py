"""/settings: threshold, per-channel system prompts, channels, rate limit and exempt roles, audit log."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from pydantic import ValidationError

from bot.answering import AnswerService
from bot.app import SwitchboardBot
from bot.storage import GuildConfig, Store
from cogs._common import TASK_CHOICES
from cogs.admin.base import AdminBase, admin_group
from inference.catalogue import format_validation_error
from inference.types import TASK_LABELS

log = logging.getLogger(__name__)


class SettingsCog(AdminBase):
    settings = admin_group("settings", "Switchboard settings for this server")

    def __init__(self, bot: SwitchboardBot, *, answers: AnswerService, store: Store) -> None:
        super().__init__(bot)
        self.answers = answers
        self.store = store

    # ---- /settings --------------------------------------------------------------------------------
    async def _update(self, interaction: discord.Interaction, action: str, done: str, **changes: object) -> None:
        assert interaction.guild_id is not None
        try:
            await self.store.update_guild_config(interaction.guild_id, interaction.user.id, action, **changes)
        except ValidationError as exc:
            await self._reply(interaction, f"Not changed: {format_validation_error(exc)}")
            return
        await self._reply(interaction, done)

    @settings.command(name="show")
    async def settings_show(self, interaction: discord.Interaction) -> None:
        """Show this server's settings."""
        config = (await self.answers.scope(interaction.guild_id)).config
        channels = ", ".join(f"<#{c}>" for c in config.allowed_channels) or "everywhere"
        prompts = "\n".join(f"<#{c}>: {p[:80]}" for c, p in config.channel_system_prompts.items()) or "default"
        exempt = "; never for " + ", ".join(f"<@&{r}>" for r in config.exempt_roles) if config.exempt_roles else ""
        await self._reply(
            interaction,
            (
                f"Threshold: {config.threshold if config.threshold is not None else 'default'}\n"
                f"Answers in: {channels}\nRate limit: {config.rate_limit_per_minute}/min per user, "
                f"burst {config.rate_limit_burst}{exempt}\nMax prompt: {config.max_prompt_chars} characters\n"
                f"System prompts: {prompts}\n"
                f"Answer buttons: {_buttons(config)}"
            ),
        )

    @settings.command(name="feedback")
    @app_commands.describe(
        enabled="Show the buttons (Ask the larger model, Wrong task?) under answers",
        channel="Only in this channel; leave out for the whole server",
    )
    async def settings_feedback(
        self, interaction: discord.Interaction, enabled: bool, channel: discord.TextChannel | None = None
    ) -> None:
        """Turn the buttons under answers on or off, for the server or one channel."""
        assert interaction.guild_id is not None
        await self.store.set_feedback_buttons(
            interaction.guild_id, interaction.user.id, enabled, channel.id if channel else None
        )
        where = f"in {channel.mention}" if channel else "on this server"
        await self._reply(interaction, f"Answer buttons are {'on' if enabled else 'off'} {where}.")

    @settings.command(name="threshold")
    @app_commands.describe(
        value="Difficulty (0 to 1) at which small-tier requests escalate",
        task="Only for this task (e.g. where /stats shows users often ask for the larger model)",
    )
    @app_commands.choices(task=TASK_CHOICES)
    async def settings_threshold(
        self,
        interaction: discord.Interaction,
        value: app_commands.Range[float, 0.0, 1.0],
        task: app_commands.Choice[str] | None = None,
    ) -> None:
        """Set the escalation threshold, for every task or one."""
        # Discord's client enforces the range too, but only as a hint: check it here as well.
        if not 0.0 <= value <= 1.0:
            await self._reply(interaction, f"Not changed: the threshold must be between 0 and 1 (you gave {value:g}).")
            return
        if task is None:
            await self._update(
                interaction, "settings.threshold", f"Escalation threshold set to {value:.2f}.", threshold=value
            )
            return
        assert interaction.guild_id is not None
        await self.store.set_task_threshold(interaction.guild_id, interaction.user.id, task.value, value)  # type: ignore[arg-type]
        await self._reply(
            interaction,
            f"Escalation threshold for **{TASK_LABELS[task.value]}** set to {value:.2f}.",  # type: ignore[index]
        )

    @settings.command(name="system-prompt")
    @app_commands.describe(channel="The channel", prompt="The system prompt; leave out to restore the default")
    async def settings_system_prompt(
        self, interaction: discord.Interaction, channel: discord.TextChannel, prompt: str | None = None
    ) -> None:
        """Set or clear a channel's system prompt."""
        assert interaction.guild_id is not None
        try:
            await self.store.set_channel_prompt(interaction.guild_id, interaction.user.id, channel.id, prompt or None)
        except ValidationError as exc:
            await self._reply(interaction, f"Not changed: {format_validation_error(exc)}")
            return
        done = "set" if prompt else "reset to the default"
        await self._reply(interaction, f"System prompt for {channel.mention} {done}.")

    @settings.command(name="channels")
    @app_commands.describe(action="add, remove, or clear (answer everywhere)", channel="The channel")
    @app_commands.choices(action=[app_commands.Choice(name=a, value=a) for a in ("add", "remove", "clear")])
    async def settings_channels(
        self,
        interaction: discord.Interaction,
        action: app_commands.Choice[str],
        channel: discord.TextChannel | None = None,
    ) -> None:
        """Choose the channels where the bot answers."""
        config = (await self.answers.scope(interaction.guild_id)).config
        allowed = list(config.allowed_channels)
        if action.value != "clear" and channel is None:
            await self._reply(interaction, f"Name a channel to {action.value}.")
            return
        if action.value == "clear":
            allowed = []
        elif action.value == "add" and channel is not None and channel.id not in allowed:
            allowed.append(channel.id)
        elif action.value == "remove" and channel is not None and channel.id in allowed:
            allowed.remove(channel.id)
        shown = ", ".join(f"<#{c}>" for c in allowed) or "every channel"
        await self._update(
            interaction, "settings.channels", f"The bot now answers in {shown}.", allowed_channels=allowed
        )

    @settings.command(name="rate-limit")
    @app_commands.describe(per_minute="Requests per user per minute", burst="Requests allowed at once")
    async def settings_rate_limit(
        self, interaction: discord.Interaction, per_minute: int, burst: int | None = None
    ) -> None:
        """Set the per-user rate limit."""
        changes: dict[str, object] = {"rate_limit_per_minute": per_minute}
        if burst is not None:
            changes["rate_limit_burst"] = burst
        await self._update(
            interaction, "settings.rate_limit", f"Rate limit set to {per_minute}/min per user.", **changes
        )

    @settings.command(name="exempt-role")
    @app_commands.describe(action="add, remove, or clear (nobody exempt)", role="The role")
    @app_commands.choices(action=[app_commands.Choice(name=a, value=a) for a in ("add", "remove", "clear")])
    async def settings_exempt_role(
        self,
        interaction: discord.Interaction,
        action: app_commands.Choice[str],
        role: discord.Role | None = None,
    ) -> None:
        """Choose roles whose members are never rate limited."""
        config = (await self.answers.scope(interaction.guild_id)).config
        exempt = list(config.exempt_roles)
        if action.value != "clear" and role is None:
            await self._reply(interaction, f"Name a role to {action.value}.")
            return
        if action.value == "clear":
            exempt = []
        elif action.value == "add" and role is not None and role.id not in exempt:
            exempt.append(role.id)
        elif action.value == "remove" and role is not None and role.id in exempt:
            exempt.remove(role.id)
        shown = ", ".join(f"<@&{r}>" for r in exempt) or "nobody"
        await self._update(interaction, "settings.exempt_roles", f"Never rate limited: {shown}.", exempt_roles=exempt)

    @settings.command(name="audit")
    async def settings_audit(self, interaction: discord.Interaction) -> None:
        """Show recent configuration changes."""
        assert interaction.guild_id is not None
        entries = await self.store.audit(interaction.guild_id)
        lines = [f"{discord.utils.format_dt(e.at, 'R')} <@{e.actor_id}> `{e.action}` {e.details}" for e in entries[:15]]
        await self._reply(interaction, "\n".join(lines) or "No changes yet.")


def _buttons(config: GuildConfig) -> str:
    if not config.feedback_buttons:
        return "off"
    off = ", ".join(f"<#{c}>" for c in config.feedback_off_channels)
    return f"on, except in {off}" if off else "on"
