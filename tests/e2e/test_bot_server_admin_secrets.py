"""A hostile server admin against the operator's secrets, through the fake Discord.

A server admin is anyone who invites the bot to a server they own. Nothing they configure may send the
operator's secrets (the bot token, the large tier's key) to their endpoint, show the operator's endpoints, or
tell them whether a variable exists. Their own key is typed into a private form, stored encrypted, and used
only for their own endpoint.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from bot.storage import guild_models
from tests.e2e.bot_harness import Harness
from tests.e2e.test_bot_admin import MANAGE_SERVER, admin
from tests.fakes.discord import FakeDiscord, InteractionSummary
from tests.fakes.openai_server import FakeOpenAIServer, ok

TOKEN = "discord-token-SENTINEL-0123456789"
LARGE_KEY = "sk-operator-SENTINEL-0123456789"
THEIR_KEY = "sk-server-SENTINEL-abcdefghij"
SENTINELS = (TOKEN, LARGE_KEY, THEIR_KEY)


@pytest.fixture
async def endpoint() -> Any:
    async with FakeOpenAIServer() as server:
        server.default = ok("OK")
        yield server


@pytest.fixture
def operator_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv("SWITCHBOARD_LARGE_API_KEY", LARGE_KEY)


def everything_said(fake: FakeDiscord) -> str:
    """Every body the bot sent to Discord (replies, edits, followups, modals)."""
    return "\n".join(json.dumps(r.json) for r in fake.requests if r.json is not None)


def assert_no_secret(text: str) -> None:
    for secret in SENTINELS:
        assert secret not in text


async def add_endpoint(fake: FakeDiscord, endpoint: FakeOpenAIServer, name: str = "mine") -> None:
    added = await admin(fake, "models add", {"name": name, "url": endpoint.base_url, "model_id": "m", "tier": "small"})
    assert added.content.startswith(f"Added **{name}**"), added.content


async def open_key_form(fake: FakeDiscord, name: str) -> InteractionSummary:
    it = await fake.send_interaction("models", {"name": name}, subcommand="key", permissions=MANAGE_SERVER)
    await fake.wait_for(lambda: fake.interaction_response(it).callback_type is not None)
    return fake.interaction_response(it)


async def submit_key(fake: FakeDiscord, form: InteractionSummary, key: str) -> InteractionSummary:
    assert form.modal is not None
    (row,) = form.modal["components"]
    text_input = row["components"][0] if row["type"] == 1 else row["component"]
    it = await fake.submit_modal(form.modal["custom_id"], {text_input["custom_id"]: key})
    return await fake.wait_for_response(it)


async def test_a_server_endpoint_never_receives_the_operators_secrets(
    switchboard: Harness, endpoint: FakeOpenAIServer, operator_secrets: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = switchboard.fake
    switchboard.allowed_hosts = ("127.0.0.1",)
    async with switchboard.running():
        store = switchboard.store
        assert store is not None
        await add_endpoint(fake, endpoint)
        # However the row came to name a variable (an older version allowed `key_env:DISCORD_TOKEN`), it is
        # never read for a server's endpoint.
        async with store.engine.begin() as conn:
            (row,) = (await conn.execute(guild_models.select())).mappings().all()
            for variable in ("DISCORD_TOKEN", "SWITCHBOARD_LARGE_API_KEY", "NOT_SET_ANYWHERE"):
                spec = {**row["spec"], "api_key_env": variable}
                await conn.execute(guild_models.update().values(spec=spec))
                tested = await admin(fake, "models test", {"name": "mine"})
                assert tested.content.startswith("✅ **mine** answered"), tested.content
        routed = await admin(fake, "route set", {"task": "chat", "model": "mine"})
        assert "mine" in routed.content
        it = await fake.send_interaction("ask", {"prompt": "hello"})
        await switchboard.wait_answered(it)
    assert len(endpoint.completions) == 4
    for request in endpoint.requests:
        assert "Authorization" not in request.headers
        assert_no_secret(json.dumps(dict(request.headers)) + json.dumps(request.body))
    assert_no_secret(everything_said(fake))
    assert_no_secret(caplog.text)


async def test_an_admins_key_is_typed_in_a_private_form_stored_sealed_and_used_only_for_its_server(
    switchboard: Harness, endpoint: FakeOpenAIServer, operator_secrets: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = switchboard.fake
    switchboard.allowed_hosts = ("127.0.0.1",)
    other_guild = fake.add_guild("Other server")
    other_channel = fake.guilds[other_guild].channel_ids[0]
    async with switchboard.running():
        store = switchboard.store
        assert store is not None
        await add_endpoint(fake, endpoint)

        form = await open_key_form(fake, "mine")
        assert form.modal is not None and form.callback_type == 9  # the form is the first response: not deferred
        saved = await submit_key(fake, form, f"  {THEIR_KEY}  ")
        assert saved.ephemeral and saved.content.startswith("Saved the key of **mine** (stored encrypted)")

        async with store.engine.connect() as conn:
            (row,) = (await conn.execute(guild_models.select())).mappings().all()
        assert row["api_key"] and THEIR_KEY.encode() not in row["api_key"]
        assert THEIR_KEY not in json.dumps(row["spec"])
        assert_no_secret(json.dumps([e.details for e in await store.audit(int(fake.guild_id))]))

        listed = await admin(fake, "models list")
        assert "**mine** · small tier · this server" in listed.content and "key set" in listed.content
        tested = await admin(fake, "models test", {"name": "mine"})
        assert tested.content.startswith("✅ **mine** answered"), tested.content
        assert endpoint.completions[-1].headers["Authorization"] == f"Bearer {THEIR_KEY}"

        # Another server with a model of the same name at the same endpoint does not get the key, even with
        # the sealed bytes copied into its row.
        it = await fake.send_interaction(
            "models",
            {"name": "mine", "url": endpoint.base_url, "model_id": "m", "tier": "small"},
            subcommand="add",
            permissions=MANAGE_SERVER,
            channel_id=other_channel,
        )
        await fake.wait_for_response(it)
        async with store.engine.begin() as conn:
            await conn.execute(
                guild_models.update().where(guild_models.c.guild_id == int(other_guild)).values(api_key=row["api_key"])
            )
        it = await fake.send_interaction(
            "models", {"name": "mine"}, subcommand="test", permissions=MANAGE_SERVER, channel_id=other_channel
        )
        other_test = await fake.wait_for_response(it)
        assert other_test.content.startswith("✅ **mine** answered"), other_test.content
        assert "Authorization" not in endpoint.completions[-1].headers

        cleared = await submit_key(fake, await open_key_form(fake, "mine"), "")
        assert cleared.content.startswith("Cleared the key of **mine**")
        await admin(fake, "models test", {"name": "mine"})
        assert "Authorization" not in endpoint.completions[-1].headers
    assert_no_secret(everything_said(fake))  # never echoed
    assert_no_secret(caplog.text)  # never logged, DEBUG included (discord.py logs gateway events there)


async def test_keys_are_only_for_the_servers_own_models_and_only_for_admins(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        builtin = await open_key_form(fake, "large-fake")
        assert builtin.modal is None and builtin.ephemeral
        assert builtin.content.startswith("`large-fake` is not one of this server's models")
        it = await fake.send_interaction("models", {"name": "x"}, subcommand="key", permissions="0")
        refused = await fake.wait_for_response(it)
        assert refused.modal is None and "Manage Server" in refused.content


async def test_a_spaced_key_is_refused_without_echoing_it(switchboard: Harness, endpoint: FakeOpenAIServer) -> None:
    fake = switchboard.fake
    switchboard.allowed_hosts = ("127.0.0.1",)
    async with switchboard.running():
        await add_endpoint(fake, endpoint)
        refused = await submit_key(fake, await open_key_form(fake, "mine"), "sk-one sk-two")
        assert "spaces" in refused.content and "sk-one" not in refused.content
        assert (await switchboard.store.list_models(int(fake.guild_id)))[0].sealed_key is None  # type: ignore[union-attr]


async def test_operator_endpoints_are_listed_without_their_addresses(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        listed = await admin(fake, "models list")
    for line in listed.content.splitlines():
        assert "built-in" in line and "://" not in line and ".invalid" not in line
