"""A server's memory of corrections: built from the store, rebuilt after a change or after REFRESH_S, and
embedding each stored request once (a refresh embeds only the corrections it has not seen)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from bot.corrections import REFRESH_S, Corrections
from bot.storage import Store
from inference.types import Request, Tier

GUILD, OTHER = 1, 2


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    yield opened
    await opened.close()


async def test_memory_embeds_each_request_once_and_follows_changes(store: Store) -> None:
    embedded: list[str] = []

    def embed(request: Request) -> np.ndarray:
        embedded.append(request.text)
        return np.asarray([1.0, float(len(request.text))], dtype=np.float32)

    clock = Clock()
    corrections = Corrections(store, embed, clock=clock)
    assert await corrections.memory(GUILD) is None and await corrections.memory(None) is None
    first = await corrections.record(
        GUILD, 7, "a", kind="larger", routed_task="chat", routed_tier=Tier.SMALL, task="chat"
    )
    bank = await corrections.memory(GUILD)
    assert bank is not None and len(bank) == 1 and embedded == ["a"]
    await corrections.record(GUILD, 7, "bb", kind="task", routed_task="chat", routed_tier=Tier.SMALL, task="code")
    bank = await corrections.memory(GUILD)
    assert bank is not None and len(bank) == 2 and embedded == ["a", "bb"]  # "a" was not embedded again
    await corrections.undo(GUILD, 9, first.id)
    bank = await corrections.memory(GUILD)
    assert bank is not None and len(bank) == 1 and embedded == ["a", "bb"]
    # Another process's correction arrives once the memory is older than REFRESH_S.
    await store.add_correction(GUILD, 8, "ccc", kind="larger", routed_task="chat", routed_tier=Tier.SMALL, task="chat")
    assert len(await corrections.memory(GUILD) or []) == 1
    clock.now += REFRESH_S
    assert len(await corrections.memory(GUILD) or []) == 2 and embedded == ["a", "bb", "ccc"]
    assert await corrections.memory(OTHER) is None


async def test_a_classifier_without_embeddings_gives_no_memory(store: Store) -> None:
    corrections = Corrections(store, lambda _request: None, clock=Clock())
    await corrections.record(GUILD, 7, "a", kind="larger", routed_task="chat", routed_tier=Tier.SMALL, task="chat")
    assert await corrections.memory(GUILD) is None
