"""/models list|add|remove|test: the server's view of the catalogue and its own endpoints."""

from __future__ import annotations

import time

import discord
from discord import app_commands
from pydantic import ValidationError

from bot.storage import AlreadyExists, NotFound
from cogs.admin.base import TIER_CHOICES, AdminBase, admin_group
from inference.catalogue import OpenAIModel, format_validation_error
from inference.errors import InferenceError
from inference.netguard import UnsafeURL
from inference.types import ChatMessage, GenerationParams, Tier


class ModelsCog(AdminBase):
    models = admin_group("models", "See and manage this server's models")

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
            await self._reply(interaction, f"Invalid model: {format_validation_error(exc)}")
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
