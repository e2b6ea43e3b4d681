"""Sharding: two bot processes (two SwitchboardBot objects, each with its own Store on one database file) run
shards 0 and 1 of 2 against one fake Discord; each answers only the guilds its shard owns, and what one writes
the other reads."""

from __future__ import annotations

from typing import Any

from tests.e2e.bot_harness import Harness, is_final
from tests.fakes.discord import FakeDiscord

MANAGE_SERVER = "32"


def shard_of(guild_id: str, count: int = 2) -> int:
    return (int(guild_id) >> 22) % count


def two_processes(switchboard: Harness) -> tuple[Harness, Harness]:
    """`switchboard` runs shard 0 of 2; a second harness on the same fake and database file runs shard 1."""
    other = Harness(switchboard.fake, switchboard._run_bot, switchboard.tmp_path)
    for shard, harness in enumerate((switchboard, other)):
        harness.settings_overrides.update(shard_count=2, shard_ids=(shard,))
        harness.small.reply = f"answer from shard {shard}"
    assert switchboard.db_url == other.db_url  # one database for both processes
    return switchboard, other


def guilds_on_both_shards(fake: FakeDiscord) -> list[str]:
    """[guild on shard 0, guild on shard 1] (the fake's first guild is on one of them)."""
    first = fake.guild_id
    second = fake.add_guild("Second", on_shard=(1 - shard_of(first), 2))
    return sorted([first, second], key=shard_of)


def channel_of(fake: FakeDiscord, guild_id: str) -> str:
    return fake.guilds[guild_id].channel_ids[0]


def identified_shards(fake: FakeDiscord) -> list[Any]:
    return [p["d"].get("shard") for p in fake.received if p["op"] == 2]


async def test_each_guild_is_answered_by_the_process_owning_its_shard(switchboard: Harness) -> None:
    fake = switchboard.fake
    fake.shard_count = 2
    guilds = guilds_on_both_shards(fake)
    harnesses = two_processes(switchboard)
    async with harnesses[0].running() as bot0, harnesses[1].running() as bot1:
        assert identified_shards(fake) == [[0, 2], [1, 2]]
        # Each process sees (and caches) only its own shard's guild.
        assert [g.id for g in bot0.guilds] == [int(guilds[0])]
        assert [g.id for g in bot1.guilds] == [int(guilds[1])]

        for shard in (1, 0, 1):
            it = await fake.send_interaction("ask", {"prompt": "hi"}, channel_id=channel_of(fake, guilds[shard]))
            summary = await switchboard.wait_answered(it)
            assert summary.content.startswith(f"answer from shard {shard}\n")

        # A mention (MESSAGE_CREATE) goes to its guild's shard too.
        asked = await fake.send_message(f"{fake.mention(fake.bot_user)} hello", channel_id=channel_of(fake, guilds[0]))
        reply = await fake.wait_for_message(
            channel_of(fake, guilds[0]),
            lambda m: m.get("message_reference", {}).get("message_id") == asked["id"] and is_final(m["content"]),
        )
        assert reply["content"].startswith("answer from shard 0\n")

    assert [len(h.small.calls) for h in harnesses] == [2, 2]
    # Commands are the application's: only the process running shard 0 synced them.
    assert len(fake.requests_matching("PUT", r"/commands$")) == 1


async def test_a_server_setting_written_through_one_process_is_read_by_the_other(switchboard: Harness) -> None:
    fake = switchboard.fake
    fake.shard_count = 2
    guilds = guilds_on_both_shards(fake)
    first, second = two_processes(switchboard)
    async with first.running(), second.running():
        # Shard 0's process sets its guild's system prompt through Discord...
        channel = channel_of(fake, guilds[0])
        it = await fake.send_interaction(
            "settings",
            {"channel": channel, "prompt": "Answer like a pirate."},
            subcommand="system-prompt",
            permissions=MANAGE_SERVER,
            channel_id=channel,
        )
        assert (await fake.wait_for_response(it)).content == f"System prompt for <#{channel}> set."
        # ...and the other process's store reads it at once (nothing is cached per process).
        assert second.store is not None
        config = await second.store.guild_config(int(guilds[0]))
        assert config.system_prompt_for(int(channel)) == "Answer like a pirate."

    # Re-sharded to one process running every shard: the other process answers shard 0's guild with that prompt.
    second.settings_overrides.update(shard_count=1, shard_ids=None)
    async with second.running() as bot:
        assert {g.id for g in bot.guilds} == {int(g) for g in guilds}
        it = await fake.send_interaction("ask", {"prompt": "hi"}, channel_id=channel)
        summary = await second.wait_answered(it)
    assert summary.content.startswith("answer from shard 1\n")
    (messages,) = second.small.calls
    assert any("Answer like a pirate." in m.content for m in messages if m.role == "system")
    assert first.small.calls == []


async def test_the_shard_count_comes_from_discord_when_not_set(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running() as bot:
        assert bot.shard_count == 1 and bot.shard_ids is None
    assert fake.requests_matching("GET", r"^/gateway/bot$")
    assert identified_shards(fake) == [[0, 1]]


async def test_shared_rate_limit_buckets_follow_a_guild_to_another_process(switchboard: Harness) -> None:
    fake = switchboard.fake
    fake.shard_count = 2
    guilds = guilds_on_both_shards(fake)
    first, second = two_processes(switchboard)
    second.limiter_clock = first.limiter_clock  # one wall clock for both processes
    for harness in (first, second):
        harness.settings_overrides["shared_rate_limits"] = True
    channel = channel_of(fake, guilds[0])
    async with first.running(), second.running():
        assert first.store is not None
        await first.store.update_guild_config(int(guilds[0]), 1, "test", rate_limit_burst=1, rate_limit_per_minute=6)
        asked = await fake.send_interaction("ask", {"prompt": "one"}, channel_id=channel)
        await first.wait_answered(asked)

    # Re-sharded: the other process now serves that guild, and the user's bucket is still empty there.
    second.settings_overrides.update(shard_count=1, shard_ids=None)
    async with second.running():
        again = await fake.send_interaction("ask", {"prompt": "two"}, channel_id=channel)
        refused = await fake.wait_for_response(again, lambda s: s.followups)
        assert refused.followups[0]["content"] == "You're sending requests too fast; try again in 10 s."
        second.limiter_clock.advance(10)
        later = await fake.send_interaction("ask", {"prompt": "three"}, channel_id=channel)
        answered = await second.wait_answered(later)
    assert answered.content.startswith("answer from shard 1\n")
    assert [c[-1].content for h in (first, second) for c in h.small.calls] == ["one", "three"]
