"""/chat: thread conversations that remember, survive a restart, ignore bots, and close."""

from __future__ import annotations

import asyncio
from typing import Any

from inference.types import ChatMessage, Tier
from tests.e2e.bot_harness import Harness, is_final
from tests.fakes.discord import FakeDiscord


def replying_to(message: dict[str, Any], *, final: bool = True) -> Any:
    def check(m: dict[str, Any]) -> bool:
        ref = m.get("message_reference") or {}
        return ref.get("message_id") == message["id"] and (is_final(m["content"]) or not final)

    return check


async def start_chat(fake: FakeDiscord, prompt: str | None = None) -> str:
    """/chat start; returns the new thread's id."""
    options = {"prompt": prompt} if prompt else {}
    it = await fake.send_interaction("chat", options, subcommand="start")
    summary = await fake.wait_for_response(it)
    (created,) = fake.requests_matching("POST", rf"^/channels/{fake.channel_id}/threads$")
    thread_id = str(created.response["id"])
    assert summary.content == f"Started a conversation in <#{thread_id}>. Write there; `/chat end` closes it."
    assert created.json["type"] == 11  # a public thread
    return thread_id


async def test_conversation_remembers_across_turns_and_a_restart(switchboard: Harness) -> None:
    fake, small, probe = switchboard.fake, switchboard.small, switchboard.probe
    small.reply = "first answer"
    async with switchboard.running():
        assert switchboard.store is not None  # five requests from alice: more than the default burst
        await switchboard.store.update_guild_config(int(fake.guild_id), 1, "test", rate_limit_burst=10)
        thread = await start_chat(fake, "hello there")
        first = await switchboard.wait_final_message(thread)
        assert first["content"] == "first answer\n-# chat · small · small-fake · 0.2s"
        await fake.wait_for(lambda: probe.count("add_message") == 2, what="turn 1 stored")

        small.reply = "second answer"
        asked = await fake.send_message("and then?", channel_id=thread)
        second = await fake.wait_for_message(thread, replying_to(asked))
        assert second["content"].startswith("second answer\n-# chat")
        await fake.wait_for(lambda: probe.count("add_message") == 4, what="turn 2 stored")

    turn_one = [ChatMessage("user", "hello there"), ChatMessage("assistant", "first answer")]
    assert small.calls[0][1:] == turn_one[:1]
    assert small.calls[1][1:] == [*turn_one, ChatMessage("user", "and then?")]
    # The first bot message is the opener quoting the user, then one answer per turn (echoes ignored).
    contents = [m["content"] for m in fake.bot_messages(thread)]
    assert contents[0] == "**Alice:** hello there" and len(contents) == 3

    small.reply = "third answer"
    async with switchboard.running():  # a new bot process on the same database file
        beep = await fake.send_message("beep boop", channel_id=thread, bot=True)
        asked = await fake.send_message("do you remember?", channel_id=thread)
        third = await fake.wait_for_message(thread, replying_to(asked))
        assert third["content"].startswith("third answer\n-# chat")
        await fake.wait_for(lambda: probe.count("add_message") == 6, what="turn 3 stored")
        assert not any(replying_to(beep, final=False)(m) for m in fake.bot_messages(thread))

        end = await fake.send_interaction("chat", subcommand="end", channel_id=thread)
        ended = await fake.wait_for_response(end)
        await fake.wait_for_request("PATCH", rf"^/channels/{thread}$")
        assert ended.ephemeral and ended.content == "Conversation closed."
        assert fake.channels[thread]["thread_metadata"]["archived"] is True
        assert switchboard.store is not None
        conversation = await switchboard.store.get_conversation(int(thread))
        assert conversation is not None and conversation.closed

        # Writing in the closed (archived) thread reopens it on Discord, but the bot stays quiet.
        late = await fake.send_message("hello again?", channel_id=thread)
        mention = await fake.send_message(f"{fake.mention(fake.bot_user)} sentinel")
        await fake.wait_for_message(None, replying_to(mention))
        assert not any(replying_to(late, final=False)(m) for m in fake.bot_messages(thread))

    assert small.calls[2][1:] == [
        *turn_one,
        ChatMessage("user", "and then?"),
        ChatMessage("assistant", "second answer"),
        ChatMessage("user", "do you remember?"),
    ]
    assert len(small.calls) == 4  # three turns and the sentinel: no bot, no closed thread


async def test_archiving_the_thread_closes_the_conversation(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        thread = await start_chat(fake)
        assert fake.bot_messages(thread) == []  # no prompt: nothing answered yet
        await fake.archive_thread(thread)
        await fake.wait_for(lambda: switchboard.probe.count("close_conversation") == 1, what="close")
        assert switchboard.store is not None
        conversation = await switchboard.store.get_conversation(int(thread))
        assert conversation is not None and conversation.closed
        end = await fake.send_interaction("chat", subcommand="end", channel_id=fake.channel_id)
        refused = await fake.wait_for_response(end)
        assert refused.ephemeral and refused.content == "This isn't an open conversation thread."
    assert switchboard.model_calls() == 0


async def test_archiving_after_a_restart_closes_the_conversation(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        thread = await start_chat(fake)
    async with switchboard.running():
        await fake.archive_thread(thread)
        await fake.wait_for(lambda: switchboard.probe.count("close_conversation") == 1, what="close")


async def test_turns_in_one_thread_are_answered_in_order_with_history(switchboard: Harness) -> None:
    """A second message sent while the first is still being answered sees the first exchange."""
    fake, small = switchboard.fake, switchboard.small
    gate = asyncio.Event()
    small.gate, small.reply = gate, "slow answer"
    async with switchboard.running():
        thread = await start_chat(fake)
        one = await fake.send_message("one", channel_id=thread)
        await asyncio.wait_for(small.started.wait(), 5)
        two = await fake.send_message("two", channel_id=thread)
        await fake.wait_for_message(thread, replying_to(two, final=False))  # acknowledged with a placeholder
        gate.set()
        await fake.wait_for_message(thread, replying_to(one))
        await fake.wait_for_message(thread, replying_to(two))
    assert [c[-1].content for c in small.calls] == ["one", "two"]
    assert small.calls[1][1:] == [
        ChatMessage("user", "one"),
        ChatMessage("assistant", "slow answer"),
        ChatMessage("user", "two"),
    ]


async def test_conversation_stays_on_the_large_tier(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        thread = await start_chat(fake, "prove that there are infinitely many primes")
        first = await switchboard.wait_final_message(thread)
        await fake.wait_for(lambda: switchboard.probe.count("set_conversation_tier") == 1, what="tier")
        thanks = await fake.send_message("thanks!", channel_id=thread)
        second = await fake.wait_for_message(thread, replying_to(thanks))
        assert switchboard.store is not None
        conversation = await switchboard.store.get_conversation(int(thread))
    assert first["content"].endswith("· large · large-fake · 0.3s")
    assert second["content"].endswith("· large · large-fake · 0.3s")
    assert switchboard.small.calls == [] and len(switchboard.large.calls) == 2
    assert conversation is not None and conversation.tier is Tier.LARGE


async def test_chat_start_checks_the_prompt_and_quotes_a_long_one_in_pieces(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        too_long = await fake.send_interaction("chat", {"prompt": "y" * 4001}, subcommand="start")
        refused = await fake.wait_for_response(too_long)
        assert refused.content == "Your prompt is 4,001 characters; the limit here is 4,000. Shorten it."
        assert fake.threads == []

        prompt = "word " * 700  # 3500 characters: more than one message once quoted
        thread = await start_chat(fake, prompt)
        final = await switchboard.wait_final_message(thread)
    quoted = [m["content"] for m in fake.bot_messages(thread) if m["id"] != final["id"]]
    assert len(quoted) == 2 and all(len(q) <= 2000 for q in quoted)
    assert "".join(quoted).split() == ["**Alice:**", *prompt.split()]
    assert fake.threads[0]["name"] == ("word " * 18).strip()
    assert switchboard.small.calls[0][-1] == ChatMessage("user", prompt.strip())
