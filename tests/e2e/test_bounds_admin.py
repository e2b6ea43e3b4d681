"""`/models add` with host names DNS cannot hold, and refusals that never name an internal address."""

from __future__ import annotations

import pytest

from tests.e2e.bot_harness import REBINDING_HOST, Harness
from tests.fakes.discord import FakeDiscord, InteractionSummary

MANAGE_SERVER = "32"


async def add(fake: FakeDiscord, url: str) -> InteractionSummary:
    options = {"name": "long", "url": url, "model_id": "m", "tier": "large"}
    it = await fake.send_interaction("models", options, subcommand="add", permissions=MANAGE_SERVER)
    return await fake.wait_for_response(it)


@pytest.mark.parametrize(
    ("host", "said"),
    [
        (f"{'a' * 64}.example.com", "over 63 characters"),  # one label past the DNS limit
        (".".join(["b" * 63] * 4) + ".com", "too long"),  # the whole name past 253 characters
    ],
    ids=["label", "name"],
)
async def test_overlong_host_is_refused_clearly(switchboard: Harness, host: str, said: str) -> None:
    async with switchboard.running():
        store = switchboard.store
        assert store is not None
        reply = await add(switchboard.fake, f"https://{host}/v1")
        assert reply.content.startswith("Refused `https://"), reply.content
        assert said in reply.content
        assert await store.list_models(int(switchboard.fake.guild_id)) == []


async def test_refusal_names_the_host_but_not_its_internal_address(switchboard: Harness) -> None:
    async with switchboard.running():
        reply = await add(switchboard.fake, f"https://{REBINDING_HOST}/v1")  # resolves to 10.0.0.5
    assert "resolves to a private address" in reply.content
    assert "10.0.0.5" not in reply.content
