"""Admin commands through the real bot: allowed with Manage Server, refused without, validated, audited."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tests.e2e.bot_harness import PUBLIC_HOST, REBINDING_HOST, Harness, allowed_mentions, message_writes
from tests.fakes.discord import FakeDiscord, InteractionSummary
from tests.fakes.openai_server import FakeOpenAIServer, ok, stall, status

MANAGE_SERVER, NOTHING = "32", "0"
REFUSAL = "You need the **Manage Server** permission to use this command."


async def admin(
    fake: FakeDiscord, command: str, options: dict[str, Any] | None = None, *, permissions: str = MANAGE_SERVER
) -> InteractionSummary:
    name, sub = command.split(" ", 1)
    it = await fake.send_interaction(name, options or {}, subcommand=sub, permissions=permissions)
    return await fake.wait_for_response(it)


def every_admin_command(fake: FakeDiscord) -> list[tuple[str, dict[str, Any]]]:
    channel = fake.channel_id
    return [
        ("models list", {}),
        ("models add", {"name": "ext", "url": f"https://{PUBLIC_HOST}/v1", "model_id": "m", "tier": "small"}),
        ("models remove", {"name": "ext"}),
        ("models test", {"name": "small-fake"}),
        ("route show", {}),
        ("route set", {"task": "chat", "model": "large-fake"}),
        ("route reset", {}),
        ("route corrections list", {}),
        ("route corrections undo", {"number": 1}),
        ("route corrections export", {}),
        ("settings show", {}),
        ("settings threshold", {"value": 0.7}),
        ("settings system-prompt", {"channel": channel, "prompt": "Be terse."}),
        ("settings channels", {"action": "add", "channel": channel}),
        ("settings rate-limit", {"per_minute": 10, "burst": 2}),
        ("settings exempt-role", {"action": "clear"}),
        ("settings audit", {}),
        ("settings feedback", {"enabled": False}),
        ("tools list", {}),
        ("tools enable", {"name": "calculator"}),
        ("tools disable", {"name": "calculator"}),
    ]


async def test_admin_groups_default_to_manage_server(switchboard: Harness) -> None:
    async with switchboard.running():
        commands = switchboard.fake.commands["global"]
    for group in ("models", "route", "settings"):
        assert commands[group]["default_member_permissions"] == MANAGE_SERVER
        assert commands[group]["dm_permission"] is False  # guild only
    assert {o["name"] for o in commands["settings"]["options"]} == {
        "show",
        "threshold",
        "system-prompt",
        "channels",
        "rate-limit",
        "exempt-role",
        "audit",
        "feedback",
    }


async def test_every_admin_command_is_refused_without_manage_server(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        store = switchboard.store
        assert store is not None
        before = await store.guild_config(int(fake.guild_id))
        for command, options in every_admin_command(fake):
            refused = await admin(fake, command, options, permissions=NOTHING)
            assert refused.kinds == ["callback"], command
            assert refused.callback_type == 4 and refused.ephemeral, command
            assert refused.content == REFUSAL, command
            assert allowed_mentions(refused.steps[0].request) == {"parse": []}
        assert await store.guild_config(int(fake.guild_id)) == before
        assert await store.audit(int(fake.guild_id)) == []
        assert await store.list_models(int(fake.guild_id)) == []
    assert switchboard.model_calls() == 0


async def test_every_admin_command_works_with_manage_server(switchboard: Harness) -> None:
    fake = switchboard.fake
    guild, channel, alice = int(fake.guild_id), fake.channel_id, fake.user["id"]
    async with switchboard.running():
        store = switchboard.store
        assert store is not None

        listed = await admin(fake, "models list")
        assert listed.steps[0].body == {"type": 5, "data": {"flags": 64}} and listed.ephemeral
        # The operator's models: name, tier, kind and health only, never their endpoints (issue: secrets).
        assert listed.content.splitlines() == [
            f"**{name}** · {tier} tier · built-in · openai · not loaded yet"
            for name, tier in (("small-fake", "small"), ("large-fake", "large"), ("local-fake", "large"))
        ]
        assert ".invalid" not in listed.content

        added = await admin(
            fake, "models add", {"name": "ext", "url": f"https://{PUBLIC_HOST}/v1/", "model_id": "m", "tier": "small"}
        )
        assert added.content == (
            f"Added **ext** (small tier, `https://{PUBLIC_HOST}/v1`). If it needs an API key, give it with "
            "`/models key ext`; try it with `/models test ext`."
        )
        (model,) = await store.list_models(guild)
        assert model.name == "ext" and model.spec.base_url == f"https://{PUBLIC_HOST}/v1"
        listed = await admin(fake, "models list")
        assert listed.content.splitlines()[-1] == (
            f"**ext** · small tier · this server · `https://{PUBLIC_HOST}/v1` · model `m` · no key · not loaded yet"
        )

        again = await admin(
            fake, "models add", {"name": "ext", "url": f"https://{PUBLIC_HOST}/v1", "model_id": "m", "tier": "small"}
        )
        assert again.content == "Not added: this server already has a model named 'ext'"
        builtin = await admin(
            fake,
            "models add",
            {"name": "small-fake", "url": f"https://{PUBLIC_HOST}/v1", "model_id": "m", "tier": "small"},
        )
        assert builtin.content == "`small-fake` is a built-in model's name; choose another."

        unknown = await admin(fake, "route set", {"task": "chat", "model": "nope"})
        assert unknown.content == "Unknown model `nope`. Valid models: ext, large-fake, local-fake, small-fake"
        routed = await admin(fake, "route set", {"task": "chat", "model": "ext"})
        assert routed.content == "**chat** is now served by **ext**."
        assert (await store.guild_config(guild)).task_models == {"chat": "ext"}

        too_high = await admin(fake, "settings threshold", {"value": 2})
        assert too_high.content == "Not changed: the threshold must be between 0 and 1 (you gave 2)."
        assert (await store.guild_config(guild)).threshold is None
        threshold = await admin(fake, "settings threshold", {"value": 0.7})
        assert threshold.content == "Escalation threshold set to 0.70."

        shown = await admin(fake, "route show")
        lines = shown.content.splitlines()
        assert lines[0] == "Escalation threshold: **0.70** (server setting)"
        assert "chat → small · **ext** (set here)" in lines and "code → large · large-fake" in lines
        assert "structured output (JSON, fixed format) → small · small-fake" in lines  # plain words, not `grammar`
        assert len(lines) == 11

        prompt = await admin(fake, "settings system-prompt", {"channel": channel, "prompt": "Be terse."})
        assert prompt.content == f"System prompt for <#{channel}> set."
        channels = await admin(fake, "settings channels", {"action": "add", "channel": channel})
        assert channels.content == f"The bot now answers in <#{channel}>."
        no_channel = await admin(fake, "settings channels", {"action": "remove"})
        assert no_channel.content == "Name a channel to remove."
        rate = await admin(fake, "settings rate-limit", {"per_minute": 10, "burst": 2})
        assert rate.content == "Rate limit set to 10/min per user."
        bad_rate = await admin(fake, "settings rate-limit", {"per_minute": 0})
        assert bad_rate.content.startswith("Not changed: rate_limit_per_minute:")

        config = await store.guild_config(guild)
        assert config.threshold == 0.7 and config.allowed_channels == [int(channel)]
        assert config.channel_system_prompts == {int(channel): "Be terse."}
        assert (config.rate_limit_per_minute, config.rate_limit_burst) == (10, 2)

        settings = await admin(fake, "settings show")
        assert settings.content == (
            f"Threshold: 0.7\nAnswers in: <#{channel}>\nRate limit: 10/min per user, burst 2\n"
            f"Max prompt: 4000 characters\nSystem prompts: <#{channel}>: Be terse.\nAnswer buttons: on"
        )

        reset = await admin(fake, "route reset")
        assert reset.content == "Routes and threshold are back to the defaults."
        config = await store.guild_config(guild)
        assert config.threshold is None and config.task_models == {}

        removed = await admin(fake, "models remove", {"name": "ext"})
        assert removed.content == "Removed **ext**."
        missing = await admin(fake, "models remove", {"name": "ext"})
        assert missing.content == "Nothing removed: this server has no model named 'ext'."
        assert await store.list_models(guild) == []

        tested = await admin(fake, "models test", {"name": "small-fake"})
        assert re.fullmatch(
            r"✅ \*\*small-fake\*\* answered in \d+ ms, first token \d+ ms via `fake:small-fake`\.", tested.content
        ), tested.content
        nope = await admin(fake, "models test", {"name": "nope"})
        assert nope.content == "Unknown model `nope`. Known: large-fake, local-fake, small-fake"

        audit = await admin(fake, "settings audit")
        actions = [
            "model.remove",
            "routes.reset",
            "settings.rate_limit",
            "settings.channels",
            "prompt.set",
            "settings.threshold",
            "route.set",
            "model.add",
        ]
        assert [re.search(r"`([\w.]+)`", line).group(1) for line in audit.content.splitlines()] == actions  # type: ignore[union-attr]
        assert all(f"<@{alice}>" in line for line in audit.content.splitlines())
        assert [e.action for e in await store.audit(guild)] == actions
    # Nothing the admin commands printed could ping anyone.
    writes = message_writes(switchboard.fake)
    assert len(writes) >= 20 and all(allowed_mentions(r) == {"parse": []} for r in writes)


UNSAFE_URLS = [
    "http://127.0.0.1/v1",
    "https://127.0.0.1/v1",
    "https://localhost/v1",
    "https://[::1]/v1",
    "https://0x7f000001/v1",
    "http://169.254.169.254/",
    "https://169.254.169.254/latest/meta-data",
    "https://10.0.0.5/v1",
    "ftp://x/v1",
    "file:///etc/passwd",
    f"https://user:pass@{PUBLIC_HOST}/v1",
    f"https://{REBINDING_HOST}/v1",
    "https://nowhere.invalid/v1",
]


async def test_unsafe_endpoints_are_refused_and_a_public_one_is_accepted(switchboard: Harness) -> None:
    fake = switchboard.fake
    guild = int(fake.guild_id)
    async with switchboard.running():
        store = switchboard.store
        assert store is not None
        for i, url in enumerate(UNSAFE_URLS):
            options = {"name": f"evil{i}", "url": url, "model_id": "m", "tier": "large"}
            refused = await admin(fake, "models add", options)
            assert refused.content.startswith((f"Refused `{url}`: ", "Invalid model: base_url:")), refused.content
            assert "user:pass" not in refused.content or url.startswith("https://user")
        assert await store.list_models(guild) == []
        assert await store.audit(guild) == []

        ok = await admin(
            fake, "models add", {"name": "ext", "url": f"https://{PUBLIC_HOST}/v1", "model_id": "m", "tier": "large"}
        )
        assert ok.content.startswith("Added **ext** (large tier")
        assert [m.name for m in await store.list_models(guild)] == ["ext"]


@pytest.fixture
async def openai_server() -> Any:
    async with FakeOpenAIServer() as server:
        yield server


async def test_models_test_reports_latency_of_an_operator_allowed_endpoint(
    switchboard: Harness, openai_server: FakeOpenAIServer
) -> None:
    fake = switchboard.fake
    switchboard.allowed_hosts = ("127.0.0.1",)
    released = asyncio.Event()
    openai_server.script(stall(released, text="OK"))
    async with switchboard.running():
        added = await admin(
            fake, "models add", {"name": "local", "url": openai_server.base_url, "model_id": "m", "tier": "small"}
        )
        assert added.content.startswith("Added **local** (small tier")
        it = await fake.send_interaction("models", {"name": "local"}, subcommand="test", permissions=MANAGE_SERVER)
        await asyncio.wait_for(openai_server.wait_for_requests(1), 5)
        # The endpoint has not answered yet, and the interaction is already acknowledged.
        pending = fake.interaction_response(it)
        assert pending.kinds == ["callback"] and pending.loading and pending.steps[0].request.status == 200
        released.set()
        tested = await fake.wait_for_response(it)
    assert re.fullmatch(
        r"✅ \*\*local\*\* answered in \d+ ms, first token \d+ ms via `openai:127\.0\.0\.1`\.",
        tested.content,
    ), tested.content
    (request,) = openai_server.completions
    assert request.body["messages"] == [{"role": "user", "content": "Reply with the word OK."}]


async def test_models_test_reports_a_failing_endpoint(switchboard: Harness, openai_server: FakeOpenAIServer) -> None:
    fake = switchboard.fake
    switchboard.allowed_hosts = ("127.0.0.1",)
    openai_server.default = status(500)
    async with switchboard.running():
        await admin(
            fake, "models add", {"name": "local", "url": openai_server.base_url, "model_id": "m", "tier": "small"}
        )
        tested = await admin(fake, "models test", {"name": "local"})
    assert tested.content.startswith("❌ **local** failed: BackendUnavailable:"), tested.content


async def test_a_server_endpoint_routed_by_an_admin_answers_asks(
    switchboard: Harness, openai_server: FakeOpenAIServer
) -> None:
    fake = switchboard.fake
    switchboard.allowed_hosts = ("127.0.0.1",)
    openai_server.default = ok("Hello from the server endpoint.")
    async with switchboard.running():
        await admin(
            fake, "models add", {"name": "mine", "url": openai_server.base_url, "model_id": "m", "tier": "small"}
        )
        routed = await admin(fake, "route set", {"task": "chat", "model": "mine"})
        assert routed.content == "**chat** is now served by **mine**."
        it = await fake.send_interaction("ask", {"prompt": "hello"})
        summary = await switchboard.wait_answered(it)
        # Removing the model sends the task back to the tier's default model.
        await admin(fake, "models remove", {"name": "mine"})
        again = await fake.send_interaction("ask", {"prompt": "hello again"})
        default = await switchboard.wait_answered(again)
    assert summary.content.startswith("Hello from the server endpoint.\n-# chat · small · mine · ")
    (request,) = openai_server.completions
    assert request.body["model"] == "m" and request.body["messages"][-1] == {"role": "user", "content": "hello"}
    assert default.content.startswith("answer from small-fake\n-# chat · small · small-fake")
    assert [c[-1].content for c in switchboard.small.calls] == ["hello again"]


async def test_route_set_says_when_a_model_will_actually_be_used(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        never = await admin(fake, "route set", {"task": "code", "model": "small-fake"})
        assert never.content == (
            "Not changed: **small-fake** is a small-tier model and **code** always runs on the large tier, "
            "so it would never be used. Choose a large-tier model."
        )
        escalated = await admin(fake, "route set", {"task": "chat", "model": "local-fake"})
        assert escalated.content == (
            "**chat** is now served by **local-fake** when a request escalates to the large tier; "
            "it normally runs on the small tier."
        )
        easy = await switchboard.wait_answered(await fake.send_interaction("ask", {"prompt": "hi"}))
        hard = await switchboard.wait_answered(await fake.send_interaction("ask", {"prompt": "prove it"}))
        assert switchboard.store is not None
        assert (await switchboard.store.guild_config(int(fake.guild_id))).task_models == {"chat": "local-fake"}
    assert "· small · small-fake ·" in easy.content
    assert "· large · local-fake ·" in hard.content
