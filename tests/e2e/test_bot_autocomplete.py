"""Autocomplete through the real bot: options that name a model list this server's catalogue (the operator's
models and its own), filtered by what was typed, at most 25, and nothing at all for members who cannot
manage the server."""

from __future__ import annotations

from typing import Any

from inference.catalogue import OpenAIModel
from inference.types import Tier
from tests.e2e.bot_harness import PUBLIC_HOST, Harness
from tests.fakes.discord import FakeDiscord

MANAGE_SERVER = 32


async def complete(
    fake: FakeDiscord, command: str, options: dict[str, Any], focused: str, user: dict[str, Any]
) -> list[tuple[str, str]]:
    """(name, value) of the choices the bot offers while `focused` is being typed."""
    name, sub = command.split(" ", 1)
    it = await fake.send_autocomplete(name, options, focused, subcommand=sub, user=user)
    answered = await fake.wait_for_request("POST", f"/interactions/{it.id}/")
    assert answered.json["type"] == 8
    return [(c["name"], c["value"]) for c in answered.json["data"]["choices"]]


def moderator(fake: FakeDiscord) -> dict[str, Any]:
    """A member who can manage the server through a role (not the owner)."""
    return fake.add_member("mod", roles=[fake.add_role("mods", MANAGE_SERVER)])


async def add_models(harness: Harness, names: list[str], tier: Tier = Tier.SMALL) -> None:
    assert harness.store is not None
    for name in names:
        spec = OpenAIModel(base_url=f"https://{PUBLIC_HOST}/v1", model=name, tier=tier)
        await harness.store.add_model(int(harness.fake.guild_id), 1, name, spec)


async def test_model_names_are_completed_from_this_servers_catalogue(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        mod = moderator(fake)
        await add_models(switchboard, ["ext"])
        every = await complete(fake, "models test", {"name": ""}, "name", mod)
        typed = await complete(fake, "models test", {"name": "L"}, "name", mod)
        removable = await complete(fake, "models remove", {"name": ""}, "name", mod)
        unknown = await complete(fake, "models test", {"name": "nope"}, "name", mod)
    assert every == [
        ("ext (small tier, this server)", "ext"),
        ("large-fake (large tier)", "large-fake"),
        ("local-fake (large tier)", "local-fake"),
        ("small-fake (small tier)", "small-fake"),
    ]
    # Case-insensitive; names that start with what was typed come first.
    assert [value for _, value in typed] == ["large-fake", "local-fake", "small-fake"]
    assert removable == [("ext (small tier, this server)", "ext")]  # built-in models cannot be removed
    assert unknown == []


async def test_route_set_offers_only_models_the_chosen_task_can_use(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        mod = moderator(fake)
        await add_models(switchboard, ["big-ext"], Tier.LARGE)
        any_task = await complete(fake, "route set", {"model": ""}, "model", mod)
        code = await complete(fake, "route set", {"task": "code", "model": ""}, "model", mod)
        chat = await complete(fake, "route set", {"task": "chat", "model": "fake"}, "model", mod)
    assert [v for _, v in any_task] == ["big-ext", "large-fake", "local-fake", "small-fake"]
    assert [v for _, v in code] == ["big-ext", "large-fake", "local-fake"]  # code always runs on the large tier
    assert [v for _, v in chat] == ["large-fake", "local-fake", "small-fake"]  # chat escalates to the large tier


async def test_at_most_25_choices(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        mod = moderator(fake)
        await add_models(switchboard, [f"m{i:02d}" for i in range(30)])
        choices = await complete(fake, "models remove", {"name": "m"}, "name", mod)
        narrowed = await complete(fake, "models remove", {"name": "m2"}, "name", mod)
    assert [v for _, v in choices] == [f"m{i:02d}" for i in range(25)]
    assert [v for _, v in narrowed] == [f"m{i:02d}" for i in range(20, 30)]


async def test_members_who_cannot_manage_the_server_are_offered_nothing(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        await add_models(switchboard, ["ext"])
        for command, option in (("models test", "name"), ("models remove", "name"), ("route set", "model")):
            assert await complete(fake, command, {option: ""}, option, fake.user) == [], command
