"""A server's own OpenAI-compatible endpoints (``/models``): checked against the network guard before they
are stored, their API keys sealed by the key box, their health and a probe from the serving layer."""

from __future__ import annotations

from bot.keybox import KeyBox
from bot.storage import CustomModel, Store
from inference.catalogue import Catalogue, OpenAIModel
from inference.serving.resilience import ResilientBackend
from inference.serving.service import Switchboard


class EndpointService:
    def __init__(self, board: Switchboard, store: Store, keybox: KeyBox) -> None:
        self.board = board
        self.store = store
        self.keybox = keybox

    def is_builtin(self, name: str) -> bool:
        """Whether ``name`` is one of the operator's models (a server may not reuse the name)."""
        return name in self.board.catalogue.models

    async def check_url(self, url: str) -> None:
        """Raise :class:`~inference.serving.netguard.UnsafeURL` for an endpoint the guard refuses."""
        guard = self.board.guard
        if guard is not None:
            guard.check_url(url)
            await guard.check_resolved(url)

    async def add(self, guild_id: int, actor_id: int, name: str, spec: OpenAIModel) -> CustomModel:
        return await self.store.add_model(guild_id, actor_id, name, spec)

    async def own_names(self, guild_id: int) -> set[str]:
        return {m.name for m in await self.store.list_models(guild_id)}

    async def set_key(self, guild_id: int, actor_id: int, name: str, key: str) -> None:
        """Seal ``key`` for this server and model and store it; an empty key clears it."""
        sealed = self.keybox.seal(guild_id, name, key) if key else None
        await self.store.set_model_key(guild_id, actor_id, name, sealed)

    async def remove(self, guild_id: int, actor_id: int, name: str) -> None:
        await self.store.remove_model(guild_id, actor_id, name)

    def health(self, name: str, catalogue: Catalogue) -> str:
        return self.board.health(name, catalogue)

    def backend(self, name: str, catalogue: Catalogue) -> ResilientBackend:
        """The model's backend, not yet started (it starts inside the first request's timeouts)."""
        return self.board.backend_for(name, catalogue)
