"""Admin commands: /models, /route, /settings. Manage Server is checked at run time, not only by
Discord's default permissions (admins can change those)."""

from __future__ import annotations

import logging
import time

import discord
from discord import app_commands
from discord.ext import commands
from pydantic import ValidationError

from bot.app import SwitchboardBot
from bot.replies import SAFE_MENTIONS
from bot.storage import AlreadyExists, NotFound
from inference.catalogue import OpenAIModel, format_validation_error
from inference.errors import InferenceError
from inference.netguard import UnsafeURL
from inference.types import TASKS, ChatMessage, GenerationParams, Tier

log = logging.getLogger(__name__)

ADMIN = discord.Permissions(manage_guild=True)
TASK_CHOICES = [app_commands.Choice(name=t.replace("_", " "), value=t) for t in TASKS]
TIER_CHOICES = [app_commands.Choice(name=t.value, value=t.value) for t in Tier]


def _pydantic_message(exc: ValidationError) -> str:
    return format_validation_error(exc)


class AdminCog(commands.Cog):
    models = app_commands.Group(
        name="models",
        description="See and manage this server's models",
        default_permissions=ADMIN,
        guild_only=True,
    )
    route = app_commands.Group(
        name="route",
        description="See and change which model serves each task",
        default_permissions=ADMIN,
        guild_only=True,
    )
    settings = app_commands.Group(
        name="settings",
        description="Switchboard settings for this server",
        default_permissions=ADMIN,
        guild_only=True,
    )

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

    # ---- /models ----------------------------------------------------------------------------------
    @models.command(name="list")
    async def models_list(self, interaction: discord.Interaction) -> None:
        """List the models this server can use, with their health."""
        scope = await self.bot.answers.scope(interaction.guild_id)
        lines = []
        for name, spec in scope.catalogue.models.items():
            where = getattr(spec, "base_url", None) or f"{spec.kind} {getattr(spec, 'source', '')}"
            origin = "server" if name in scope.catalogue.untrusted else "built-in"
            lines.append(
                f"**{name}** · {spec.tier.value} tier · {origin} · `{where}` · "
                f"{self.bot.board.health(name, scope.catalogue)}"
            )
        await self._reply(interaction, "\n".join(lines))

    @models.command(name="add")
    @app_commands.describe(
        name="A short name for the model",
        url="Base URL of an OpenAI-compatible API, e.g. https://host/v1",
        model_id="The model id the server expects",
        key_env="Environment variable holding its API key",
        tier="Which tier it serves",
    )
    @app_commands.choices(tier=TIER_CHOICES)
    async def models_add(
        self,
        interaction: discord.Interaction,
        name: str,
        url: str,
        model_id: str,
        tier: app_commands.Choice[str],
        key_env: str | None = None,
    ) -> None:
        """Add an OpenAI-compatible endpoint (vLLM, TGI, Ollama, llama.cpp, OpenAI ...)."""
        assert interaction.guild_id is not None
        if name in self.bot.board.catalogue.models:
            await self._reply(interaction, f"`{name}` is a built-in model's name; choose another.")
            return
        try:
            spec = OpenAIModel(base_url=url, model=model_id, api_key_env=key_env, tier=Tier(tier.value))
        except ValidationError as exc:
            await self._reply(interaction, f"Invalid model: {_pydantic_message(exc)}")
            return
        guard = self.bot.board.guard
        try:
            if guard is not None:
                guard.check_url(spec.base_url)
                await guard.check_resolved(spec.base_url)
        except UnsafeURL as exc:
            await self._reply(interaction, f"Refused `{url}`: {exc}")
            return
        try:
            await self.bot.store.add_model(interaction.guild_id, interaction.user.id, name, spec)
        except (AlreadyExists, ValueError) as exc:
            await self._reply(interaction, f"Not added: {exc}")
            return
        await self._reply(
            interaction,
            f"Added **{name}** ({tier.value} tier, `{spec.base_url}`). Try it with `/models test {name}`.",
        )

    @models.command(name="remove")
    async def models_remove(self, interaction: discord.Interaction, name: str) -> None:
        """Remove a model this server added."""
        assert interaction.guild_id is not None
        try:
            await self.bot.store.remove_model(interaction.guild_id, interaction.user.id, name)
        except NotFound as exc:
            await self._reply(interaction, f"Nothing removed: {exc}.")
            return
        await self._reply(interaction, f"Removed **{name}**.")

    @models.command(name="test")
    async def models_test(self, interaction: discord.Interaction, name: str) -> None:
        """Send a tiny probe to a model and report its latency."""
        scope = await self.bot.answers.scope(interaction.guild_id)
        if name not in scope.catalogue.models:
            await self._reply(
                interaction, f"Unknown model `{name}`. Known: {', '.join(sorted(scope.catalogue.models))}"
            )
            return
        started = time.perf_counter()
        try:
            backend = await self.bot.board.backend(name, scope.catalogue)
            stream = backend.stream(
                [ChatMessage("user", "Reply with the word OK.")], GenerationParams(max_new_tokens=4)
            )
            await stream.text()
        except InferenceError as exc:
            await self._reply(interaction, f"❌ **{name}** failed: {type(exc).__name__}: {exc}")
            return
        total = (time.perf_counter() - started) * 1000
        ttft = stream.timings.first_token_s
        first = f", first token {ttft * 1000:.0f} ms" if ttft is not None else ""
        await self._reply(interaction, f"✅ **{name}** answered in {total:.0f} ms{first} via `{stream.provider}`.")

    # ---- /route -----------------------------------------------------------------------------------
    @route.command(name="show")
    async def route_show(self, interaction: discord.Interaction) -> None:
        """Show which tier and model serve each task here."""
        scope = await self.bot.answers.scope(interaction.guild_id)
        policy = scope.overrides.apply(self.bot.board.router.policy)
        lines = [
            f"Escalation threshold: **{policy.escalation.threshold:.2f}**"
            + (" (server setting)" if scope.overrides.threshold is not None else " (default)")
        ]
        for task in TASKS:
            tier = policy.tiers[task]
            model = policy.task_models.get(task)
            shown = f"**{model}** (set here)" if model else self.bot.board.resolve(policy.models[tier])
            lines.append(f"`{task}` → {tier.value} · {shown}")
        await self._reply(interaction, "\n".join(lines))

    @route.command(name="set")
    @app_commands.choices(task=TASK_CHOICES)
    async def route_set(self, interaction: discord.Interaction, task: app_commands.Choice[str], model: str) -> None:
        """Serve a task with a given model."""
        assert interaction.guild_id is not None
        scope = await self.bot.answers.scope(interaction.guild_id)
        if model not in scope.catalogue.models:
            await self._reply(
                interaction,
                f"Unknown model `{model}`. Valid models: {', '.join(sorted(scope.catalogue.models))}",
            )
            return
        # The router only uses a task's model on that model's tier: say so rather than store a no-op.
        model_tier = scope.catalogue.get(model).tier
        task_tier = scope.overrides.apply(self.bot.board.router.policy).tiers[task.value]  # type: ignore[index]
        if model_tier is Tier.SMALL and task_tier is Tier.LARGE:
            await self._reply(
                interaction,
                f"Not changed: **{model}** is a small-tier model and `{task.value}` always runs on the large "
                "tier, so it would never be used. Choose a large-tier model.",
            )
            return
        await self.bot.store.set_task_model(interaction.guild_id, interaction.user.id, task.value, model)  # type: ignore[arg-type]
        if model_tier is task_tier:
            await self._reply(interaction, f"`{task.value}` is now served by **{model}**.")
        else:
            await self._reply(
                interaction,
                f"`{task.value}` is now served by **{model}** when a request escalates to the large tier; "
                f"it normally runs on the small tier.",
            )

    @route.command(name="reset")
    async def route_reset(self, interaction: discord.Interaction) -> None:
        """Back to the default routes and threshold."""
        assert interaction.guild_id is not None
        await self.bot.store.reset_guild_routes(interaction.guild_id, interaction.user.id)
        await self._reply(interaction, "Routes and threshold are back to the defaults.")

    # ---- /settings --------------------------------------------------------------------------------
    async def _update(self, interaction: discord.Interaction, action: str, done: str, **changes: object) -> None:
        assert interaction.guild_id is not None
        try:
            await self.bot.store.update_guild_config(interaction.guild_id, interaction.user.id, action, **changes)
        except ValidationError as exc:
            await self._reply(interaction, f"Not changed: {_pydantic_message(exc)}")
            return
        await self._reply(interaction, done)

    @settings.command(name="show")
    async def settings_show(self, interaction: discord.Interaction) -> None:
        """Show this server's settings."""
        config = (await self.bot.answers.scope(interaction.guild_id)).config
        channels = ", ".join(f"<#{c}>" for c in config.allowed_channels) or "everywhere"
        prompts = "\n".join(f"<#{c}>: {p[:80]}" for c, p in config.channel_system_prompts.items()) or "default"
        await self._reply(
            interaction,
            (
                f"Threshold: {config.threshold if config.threshold is not None else 'default'}\n"
                f"Answers in: {channels}\nRate limit: {config.rate_limit_per_minute}/min per user, "
                f"burst {config.rate_limit_burst}\nMax prompt: {config.max_prompt_chars} characters\n"
                f"System prompts: {prompts}"
            ),
        )

    @settings.command(name="threshold")
    @app_commands.describe(value="Difficulty (0 to 1) at which small-tier requests escalate")
    async def settings_threshold(
        self, interaction: discord.Interaction, value: app_commands.Range[float, 0.0, 1.0]
    ) -> None:
        """Set the escalation threshold."""
        # Discord's client enforces the range too, but only as a hint: check it here as well.
        if not 0.0 <= value <= 1.0:
            await self._reply(interaction, f"Not changed: the threshold must be between 0 and 1 (you gave {value:g}).")
            return
        await self._update(
            interaction, "settings.threshold", f"Escalation threshold set to {value:.2f}.", threshold=value
        )

    @settings.command(name="system-prompt")
    @app_commands.describe(channel="The channel", prompt="The system prompt; leave out to restore the default")
    async def settings_system_prompt(
        self, interaction: discord.Interaction, channel: discord.TextChannel, prompt: str | None = None
    ) -> None:
        """Set or clear a channel's system prompt."""
        assert interaction.guild_id is not None
        try:
            await self.bot.store.set_channel_prompt(
                interaction.guild_id, interaction.user.id, channel.id, prompt or None
            )
        except ValidationError as exc:
            await self._reply(interaction, f"Not changed: {_pydantic_message(exc)}")
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
        config = (await self.bot.answers.scope(interaction.guild_id)).config
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

    @settings.command(name="audit")
    async def settings_audit(self, interaction: discord.Interaction) -> None:
        """Show recent configuration changes."""
        assert interaction.guild_id is not None
        entries = await self.bot.store.audit(interaction.guild_id)
        lines = [f"{discord.utils.format_dt(e.at, 'R')} <@{e.actor_id}> `{e.action}` {e.details}" for e in entries[:15]]
        await self._reply(interaction, "\n".join(lines) or "No changes yet.")


async def setup(bot: SwitchboardBot) -> None:
    await bot.add_cog(AdminCog(bot))
