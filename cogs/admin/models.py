"""/models list|add|remove|test: the server's view of the catalogue and its own endpoints."""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import discord
from discord import app_commands
from pydantic import ValidationError

from bot.answering import AnswerService
from bot.app import SwitchboardBot
from bot.endpoints import EndpointService
from bot.storage import AlreadyExists, NotFound
from cogs._autocomplete import any_model, own_model
from cogs._common import TIER_CHOICES
from cogs.admin.base import AdminBase, admin_group, can_manage_server
from inference.catalogue import OpenAIModel, format_validation_error
from inference.errors import InferenceError
from inference.serving.netguard import UnsafeURL
from inference.types import ChatMessage, GenerationParams, Tier


class ModelsCog(AdminBase):
    models = admin_group("models", "See and manage this server's models")

    def __init__(self, bot: SwitchboardBot, *, answers: AnswerService, endpoints: EndpointService) -> None:
        super().__init__(bot)
        self.answers = answers
        self.endpoints = endpoints

    # ---- /models ----------------------------------------------------------------------------------
    @models.command(name="list")
    async def models_list(self, interaction: discord.Interaction) -> None:
        """List the models this server can use, with their health."""
        scope = await self.answers.scope(interaction.guild_id)
        lines = []
        for name, spec in scope.catalogue.models.items():
            health = self.endpoints.health(name, scope.catalogue)
            if name not in scope.catalogue.untrusted:
                # The operator's models: name, kind and health only. Their URLs, hosts and keys are the
                # operator's business, not every server admin's.
                lines.append(f"**{name}** · {spec.tier.value} tier · built-in · {spec.kind} · {health}")
                continue
            assert isinstance(spec, OpenAIModel)
            key = "key set" if spec.api_key is not None else "no key"
            lines.append(
                f"**{name}** · {spec.tier.value} tier · this server · `{masked_url(spec.base_url)}` · "
                f"model `{spec.model}` · {key} · {health}"
            )
        await self._reply(interaction, "\n".join(lines))

    @models.command(name="add")
    @app_commands.describe(
        name="A short name for the model",
        url="Base URL of an OpenAI-compatible API, e.g. https://host/v1",
        model_id="The model id the server expects",
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
    ) -> None:
        """Add an OpenAI-compatible endpoint (vLLM, TGI, Ollama, llama.cpp, OpenAI ...)."""
        assert interaction.guild_id is not None
        if self.endpoints.is_builtin(name):
            await self._reply(interaction, f"`{name}` is a built-in model's name; choose another.")
            return
        try:
            spec = OpenAIModel(base_url=url, model=model_id, tier=Tier(tier.value))
        except ValidationError as exc:
            await self._reply(interaction, f"Invalid model: {format_validation_error(exc)}")
            return
        try:
            await self.endpoints.check_url(spec.base_url)
        except UnsafeURL as exc:
            await self._reply(interaction, f"Refused `{url}`: {exc}")
            return
        try:
            await self.endpoints.add(interaction.guild_id, interaction.user.id, name, spec)
        except (AlreadyExists, ValueError) as exc:
            await self._reply(interaction, f"Not added: {exc}")
            return
        await self._reply(
            interaction,
            f"Added **{name}** ({tier.value} tier, `{masked_url(spec.base_url)}`). If it needs an API key, give it "
            f"with `/models key {name}`; try it with `/models test {name}`.",
        )

    @models.command(name="key", extras={"opens_modal": True})
    @app_commands.describe(name="One of this server's own models")
    @app_commands.autocomplete(name=own_model)
    async def models_key(self, interaction: discord.Interaction, name: str) -> None:
        """Set or clear the API key of one of this server's endpoints (typed into a private form)."""
        assert interaction.guild_id is not None
        if name not in await self.endpoints.own_names(interaction.guild_id):
            await interaction.response.send_message(
                f"`{name}` is not one of this server's models; keys can be set only for models added with "
                "`/models add`.",
                ephemeral=True,
            )
            return
        await interaction.response.send_modal(KeyForm(self, name))

    async def save_key(self, interaction: discord.Interaction, name: str, key: str) -> None:
        """The form's answer: sealed with this server's id and the model's name, never echoed or logged."""
        assert interaction.guild_id is not None
        if not can_manage_server(interaction):  # the form is only shown to admins; check again all the same
            await interaction.response.send_message("You need the **Manage Server** permission.", ephemeral=True)
            return
        key = key.strip()
        if any(c.isspace() for c in key) or not key.isprintable():
            await interaction.response.send_message(
                "That key has spaces or unprintable characters; paste the key alone.", ephemeral=True
            )
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            await self.endpoints.set_key(interaction.guild_id, interaction.user.id, name, key)
        except NotFound as exc:
            await interaction.edit_original_response(content=f"Not saved: {exc}.")
            return
        done = f"Saved the key of **{name}** (stored encrypted)." if key else f"Cleared the key of **{name}**."
        await interaction.edit_original_response(content=f"{done} Try it with `/models test {name}`.")

    @models.command(name="remove")
    @app_commands.autocomplete(name=own_model)
    async def models_remove(self, interaction: discord.Interaction, name: str) -> None:
        """Remove a model this server added."""
        assert interaction.guild_id is not None
        try:
            await self.endpoints.remove(interaction.guild_id, interaction.user.id, name)
        except NotFound as exc:
            await self._reply(interaction, f"Nothing removed: {exc}.")
            return
        await self._reply(interaction, f"Removed **{name}**.")

    @models.command(name="test")
    @app_commands.autocomplete(name=any_model)
    async def models_test(self, interaction: discord.Interaction, name: str) -> None:
        """Send a tiny probe to a model and report its latency."""
        scope = await self.answers.scope(interaction.guild_id)
        if name not in scope.catalogue.models:
            await self._reply(
                interaction, f"Unknown model `{name}`. Known: {', '.join(sorted(scope.catalogue.models))}"
            )
            return
        started = time.perf_counter()
        try:
            backend = self.endpoints.backend(name, scope.catalogue)  # started inside the timeouts
            stream = backend.stream(
                [ChatMessage("user", "Reply with the word OK.")], GenerationParams(max_new_tokens=4)
            )
            await stream.text()
        except InferenceError as exc:
            # A server's own endpoint: the whole error helps its admin. The operator's: the kind of failure
            # only, since its text can name the operator's hosts.
            own = name in scope.catalogue.untrusted
            detail = f"{type(exc).__name__}: {exc}" if own else f"{type(exc).__name__} (details are in the bot's log)"
            await self._reply(interaction, f"❌ **{name}** failed: {detail}")
            return
        total = (time.perf_counter() - started) * 1000
        ttft = stream.timings.first_token_s
        first = f", first token {ttft * 1000:.0f} ms" if ttft is not None else ""
        await self._reply(interaction, f"✅ **{name}** answered in {total:.0f} ms{first} via `{stream.provider}`.")


class KeyForm(discord.ui.Modal, title="Endpoint API key"):
    """A private form: the key is typed here, never in a command option (which Discord shows in the channel's
    command history and which audit logs and bots may record)."""

    key: discord.ui.TextInput[KeyForm] = discord.ui.TextInput(
        label="API key (leave empty to remove it)",
        style=discord.TextStyle.short,
        required=False,
        max_length=512,
    )

    def __init__(self, cog: ModelsCog, name: str) -> None:
        super().__init__(timeout=600)
        self.cog = cog
        self.model_name = name

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.cog.save_key(interaction, self.model_name, self.key.value)


def masked_url(url: str) -> str:
    """The URL with any query string masked (keys are often passed as ``?key=``)."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = "&".join(f"{p.partition('=')[0]}=***" for p in parts.query.split("&"))
    return urlunsplit(parts._replace(query=query))
