"""/chat: thread conversations that remember, survive a restart and archiving, ignore bots and system
messages, and close (by their starter or a moderator)."""

from __future__ import annotations

import asyncio
from typing import Any

from inference.types import ChatMessage, Tier
from tests.e2e.bot_harness import Harness, is_final
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.payloads import MANAGE_THREADS, VIEW_CHANNEL

# System message types (https://discord.com/developers/docs/resources/message#message-object-message-types).
CHANNEL_NAME_CHANGE, CHANNEL_PINNED_MESSAGE, USER_JOIN = 4, 6, 7


def replying_to(message: dict[str, Any], *, final: bool = True) -> Any:
    def check(m: dict[str, Any]) -> bool:
        ref = m.get("message_reference") or {}
        return ref.get("message_id") == message["id"] and (is_final(m["content"]) or not final)

    return check


async def start_chat(fake: FakeDiscord, prompt: str | None = None, *, channel_threads: int = 1) -> str:
    """/chat start; returns the new thread's id (``channel_threads``: how many the channel has by then)."""
    options = {"prompt": prompt} if prompt else {}
    it = await fake.send_interaction("chat", options, subcommand="start")
    summary = await fake.wait_for_response(it)
    created = fake.requests_matching("POST", rf"^/channels/{fake.channel_id}/threads$")[channel_threads - 1]
    thread_id = str(created.response["id"])
    assert summary.content == f"Started a conversation in <#{thread_id}>. Write there; `/chat end` closes it."
    assert created.json["type"] == 11  # a public thread
    assert created.json["auto_archive_duration"] == 1440  # idle a day: archived, revived by the next message
    await fake.wait_for(lambda: fake.user["id"] in fake.thread_members[thread_id], what="starter added")
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


async def test_an_archived_conversation_is_revived_with_its_history(switchboard: Harness) -> None:
    """Discord archives an idle thread; the next message there carries on where it stopped, restart included."""
    fake, small, probe = switchboard.fake, switchboard.small, switchboard.probe
    small.reply = "first answer"
    async with switchboard.running():
        thread = await start_chat(fake, "hello there")
        await switchboard.wait_final_message(thread)
        await fake.wait_for(lambda: probe.count("add_message") == 2, what="turn 1 stored")
        await fake.auto_archive(thread)
        small.reply = "second answer"
        asked = await fake.send_message("still there?", channel_id=thread)
        second = await fake.wait_for_message(thread, replying_to(asked))
        await fake.wait_for(lambda: probe.count("add_message") == 4, what="turn 2 stored")
        await fake.auto_archive(thread)
    small.reply = "third answer"
    async with switchboard.running():  # archived threads are not in GUILD_CREATE: the message brings it back
        asked = await fake.send_message("and now?", channel_id=thread)
        third = await fake.wait_for_message(thread, replying_to(asked))
        assert switchboard.store is not None
        conversation = await switchboard.store.get_conversation(int(thread))
    assert second["content"].startswith("second answer\n-# chat")
    assert third["content"].startswith("third answer\n-# chat")
    assert conversation is not None and not conversation.closed
    assert probe.count("close_conversation") == 0
    assert small.calls[2][1:] == [
        ChatMessage("user", "hello there"),
        ChatMessage("assistant", "first answer"),
        ChatMessage("user", "still there?"),
        ChatMessage("assistant", "second answer"),
        ChatMessage("user", "and now?"),
    ]


async def test_a_moderators_lock_closes_the_conversation(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        thread = await start_chat(fake)
        assert fake.bot_messages(thread) == []  # no prompt: nothing answered yet
        await fake.archive_thread(thread, locked=True)
        await fake.wait_for(lambda: switchboard.probe.count("close_conversation") == 1, what="close")
        assert switchboard.store is not None
        conversation = await switchboard.store.get_conversation(int(thread))
        assert conversation is not None and conversation.closed
        end = await fake.send_interaction("chat", subcommand="end", channel_id=fake.channel_id)
        refused = await fake.wait_for_response(end)
        assert refused.ephemeral and refused.content == "This isn't an open conversation thread."
    assert switchboard.model_calls() == 0


async def test_locking_after_a_restart_closes_the_conversation(switchboard: Harness) -> None:
    """Even an archived thread, which the new process has not cached."""
    fake = switchboard.fake
    async with switchboard.running():
        thread = await start_chat(fake)
        await fake.auto_archive(thread)
    async with switchboard.running():
        await fake.archive_thread(thread, locked=True)
        await fake.wait_for(lambda: switchboard.probe.count("close_conversation") == 1, what="close")


async def test_only_the_starter_or_a_moderator_ends_a_conversation(switchboard: Harness) -> None:
    fake = switchboard.fake
    bob, mod = fake.add_member("bob"), fake.add_member("mod")
    async with switchboard.running():
        assert switchboard.store is not None
        thread = await start_chat(fake)
        by_bob = await fake.wait_for_response(
            await fake.send_interaction("chat", subcommand="end", channel_id=thread, user=bob)
        )
        assert by_bob.ephemeral
        assert by_bob.content == "Only the person who started this conversation, or a moderator, can end it."
        conversation = await switchboard.store.get_conversation(int(thread))
        assert conversation is not None and not conversation.closed
        assert fake.channels[thread]["thread_metadata"]["archived"] is False

        by_mod = await fake.wait_for_response(
            await fake.send_interaction(
                "chat", subcommand="end", channel_id=thread, user=mod, permissions=MANAGE_THREADS | VIEW_CHANNEL
            )
        )
        assert by_mod.ephemeral and by_mod.content == "Conversation closed."
        await fake.wait_for_request("PATCH", rf"^/channels/{thread}$")
        conversation = await switchboard.store.get_conversation(int(thread))
        assert conversation is not None and conversation.closed

        other = await start_chat(fake, channel_threads=2)
        mine = await fake.wait_for_response(await fake.send_interaction("chat", subcommand="end", channel_id=other))
        assert mine.content == "Conversation closed."
        await fake.wait_for_request("PATCH", rf"^/channels/{other}$")


async def test_system_messages_in_a_conversation_are_never_answered(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = "the answer"
    async with switchboard.running():
        thread = await start_chat(fake, "hello")
        answer = await switchboard.wait_final_message(thread)
        renamed = await fake.send_system_message(CHANNEL_NAME_CHANGE, "new name", channel_id=thread)
        pinned = await fake.send_system_message(CHANNEL_PINNED_MESSAGE, channel_id=thread, reference=answer)
        joined = await fake.send_system_message(USER_JOIN, channel_id=thread)
        sentinel = await fake.send_message("and this?", channel_id=thread)
        await fake.wait_for_message(thread, replying_to(sentinel))
    system = {renamed["id"], pinned["id"], joined["id"]}
    assert not any((m.get("message_reference") or {}).get("message_id") in system for m in fake.bot_messages(thread))
    assert [c[-1].content for c in switchboard.small.calls] == ["hello", "and this?"]


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
