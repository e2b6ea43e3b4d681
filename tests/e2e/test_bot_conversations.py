"""Conversations as people expect them: replying to an answer continues it (the reply chain is the history)
in channels, threads and DMs; the bot's managed role counts as a mention; system messages are never
answered; a normal back-and-forth is not rate limited, and admins can exempt roles."""

from __future__ import annotations

from typing import Any

from bot.answering import DEFAULT_SYSTEM_PROMPT
from inference.types import ChatMessage
from tests.e2e.bot_harness import FOOTER_RE, Harness
from tests.e2e.test_bot_chat import CHANNEL_PINNED_MESSAGE, replying_to, start_chat
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.payloads import MANAGE_GUILD


async def ask_by_mention(switchboard: Harness, text: str, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A mention of the bot; returns (the question, the bot's final answer)."""
    fake = switchboard.fake
    asked = await fake.send_message(f"{fake.mention(fake.bot_user)} {text}", **kw)
    return asked, await fake.wait_for_message(kw.get("channel_id"), replying_to(asked))


async def reply(switchboard: Harness, to: dict[str, Any], text: str, **kw: Any) -> dict[str, Any]:
    """A reply (no mention) to ``to``; returns the bot's final answer to it."""
    fake = switchboard.fake
    asked = await fake.send_message(text, channel_id=to["channel_id"], reply_to=to, **kw)
    return await fake.wait_for_message(to["channel_id"], replying_to(asked))


async def test_replying_to_an_answer_continues_the_conversation(switchboard: Harness) -> None:
    fake, small = switchboard.fake, switchboard.small
    small.reply = "It is 4."
    async with switchboard.running():
        _, first = await ask_by_mention(switchboard, "what is 2+2?")
        small.reply = "Then 12."
        second = await reply(switchboard, first, "and times 3?")
    small.reply = "You asked about 2+2."
    async with switchboard.running():  # a fresh process: nothing cached, the chain is fetched from Discord
        third = await reply(switchboard, second, "what did I ask first?")
    assert first["content"] == "It is 4.\n-# chat · small · small-fake · 0.3s"
    assert second["content"].startswith("Then 12.\n-# chat")
    assert third["content"].startswith("You asked about 2+2.\n-# chat")
    # Footers and the mention are gone from the history; each turn sees the whole chain above it.
    assert small.calls[1][1:] == [
        ChatMessage("user", "what is 2+2?"),
        ChatMessage("assistant", "It is 4."),
        ChatMessage("user", "and times 3?"),
    ]
    assert small.calls[2][1:] == [
        ChatMessage("user", "what is 2+2?"),
        ChatMessage("assistant", "It is 4."),
        ChatMessage("user", "and times 3?"),
        ChatMessage("assistant", "Then 12."),
        ChatMessage("user", "what did I ask first?"),
    ]
    fetched = fake.requests_matching("GET", rf"^/channels/{fake.channel_id}/messages/\d+$")
    assert fetched and all(r.status == 200 for r in fetched)


async def test_replying_to_the_last_part_of_a_long_answer_continues_all_of_it(switchboard: Harness) -> None:
    fake, small = switchboard.fake, switchboard.small
    small.reply = " ".join(f"word{i:04d}" for i in range(500))  # 4500 characters: three messages
    async with switchboard.running():
        asked = await fake.send_message(f"{fake.mention(fake.bot_user)} write a lot")
        await switchboard.wait_final_message()
        parts = fake.bot_messages()
        small.reply = "short"
        await reply(switchboard, parts[-1], "summarise that")
    assert len(parts) == 3 and FOOTER_RE.search(parts[-1]["content"])
    # Each part replies to the one before it, the first to the question.
    chain = [p["message_reference"]["message_id"] for p in parts]
    assert chain == [asked["id"], parts[0]["id"], parts[1]["id"]]
    question, answer, follow_up = small.calls[1][1:]
    assert question == ChatMessage("user", "write a lot") and follow_up == ChatMessage("user", "summarise that")
    assert answer.role == "assistant" and answer.content.split() == [f"word{i:04d}" for i in range(500)]


async def test_replies_to_other_messages_need_a_mention(switchboard: Harness) -> None:
    fake = switchboard.fake
    bob = fake.add_member("bob")
    async with switchboard.running():
        theirs = await fake.send_message("a human remark", author=bob)
        ignored = await fake.send_message("I agree", reply_to=theirs)
        asked = await fake.send_message(f"{fake.mention(fake.bot_user)} do you?", reply_to=theirs)
        answer = await fake.wait_for_message(None, replying_to(asked))
    assert [m["id"] for m in fake.bot_messages()] == [answer["id"]]
    assert not any(replying_to(ignored, final=False)(m) for m in fake.bot_messages())
    # A mention replying to someone else: their message is the context the asker points at.
    assert switchboard.small.calls[0][1:] == [ChatMessage("user", "a human remark"), ChatMessage("user", "do you?")]


async def test_reply_chains_work_in_threads_that_are_not_conversations(switchboard: Harness) -> None:
    fake, small = switchboard.fake, switchboard.small
    thread = (await fake.create_thread("side topic"))["id"]
    small.reply = "first"
    async with switchboard.running():
        _, first = await ask_by_mention(switchboard, "start", channel_id=thread)
        small.reply = "second"
        second = await reply(switchboard, first, "go on")
    assert second["content"].startswith("second\n-# chat")
    assert small.calls[1][1:] == [
        ChatMessage("user", "start"),
        ChatMessage("assistant", "first"),
        ChatMessage("user", "go on"),
    ]


async def test_a_long_chain_is_bounded_and_trimmed_to_the_context(switchboard: Harness) -> None:
    fake, small = switchboard.fake, switchboard.small
    # 30 earlier messages, alternating user and bot (written straight into the fake: the bot ignores its own).
    previous: dict[str, Any] | None = None
    for i in range(30):
        author = fake.bot_user if i % 2 else fake.user
        text = f"turn {i}" + ("\n-# chat · small · small-fake · 0.1s" if i % 2 else "")
        previous = await fake.send_message(text, author=author, reply_to=previous)
    assert previous is not None and previous["author"]["id"] == fake.bot_user["id"]
    async with switchboard.running():
        bounded = await reply(switchboard, previous, "and now?")
        # Room for max_new_tokens, the system prompt, the question and exactly five one-token turns.
        small.context = 512 + small.count_tokens(DEFAULT_SYSTEM_PROMPT) + small.count_tokens("and now?") + 5
        trimmed = await reply(switchboard, previous, "and now?")
    history = small.calls[0][1:-1]
    assert [m.content for m in history] == [f"turn {i}" for i in range(10, 30)]  # the 20 nearest
    assert [m.role for m in history] == ["user", "assistant"] * 10
    assert FOOTER_RE.search(bounded["content"])
    assert small.calls[1][1:-1] == history[-5:]
    assert "trimmed 15 old messages to fit the context" in trimmed["content"]


async def test_direct_messages_are_answered_with_their_reply_chain(switchboard: Harness) -> None:
    fake, small = switchboard.fake, switchboard.small
    dm = fake.dm_channel()
    small.reply = "hi there"
    async with switchboard.running():
        hello = await fake.send_message("hello", channel_id=dm)  # no mention needed in a DM
        first = await fake.wait_for_message(dm, replying_to(hello))
        small.reply = "sure"
        second = await reply(switchboard, first, "can you help?")
    assert first["content"] == "hi there\n-# chat · small · small-fake · 0.2s"
    assert second["content"].startswith("sure\n-# chat")
    assert small.calls[1][1:] == [
        ChatMessage("user", "hello"),
        ChatMessage("assistant", "hi there"),
        ChatMessage("user", "can you help?"),
    ]


async def test_direct_messages_off_get_one_short_note(switchboard: Harness) -> None:
    fake = switchboard.fake
    dm = fake.dm_channel()
    switchboard.settings_overrides["allow_dms"] = False
    async with switchboard.running():
        await fake.send_message("hello", channel_id=dm)
        note = await fake.wait_for_message(dm, lambda m: m["author"]["id"] == fake.bot_user["id"])
        it = await fake.send_interaction("ask", {"prompt": "hi"}, channel_id=dm)
        refused = await fake.wait_for_response(it, lambda s: bool(s.followups))
    assert note["content"] == "I don't answer direct messages here; ask me in a server instead."
    assert refused.followups[0]["content"] == note["content"] and refused.followups[0]["flags"] & 64
    assert [m for m in fake.bot_messages(dm) if not m.get("interaction_metadata")] == [note]
    assert switchboard.model_calls() == 0


async def test_mentioning_the_bots_role_counts_as_a_mention(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = "role mentions work"
    other_role = fake.add_role("helpers")
    async with switchboard.running():
        ignored = await fake.send_message(f"<@&{other_role}> anyone?")
        asked = await fake.send_message(f"<@&{fake.bot_role_id}> are you there?")
        answer = await fake.wait_for_message(None, replying_to(asked))
    assert answer["content"].startswith("role mentions work\n-# chat")
    assert [m["id"] for m in fake.bot_messages()] == [answer["id"]] and ignored["id"] != asked["id"]
    assert switchboard.small.calls[0][-1] == ChatMessage("user", "are you there?")


async def test_system_messages_are_never_answered(switchboard: Harness) -> None:
    """Pinning the bot's answer makes a system message that points at it: it is not a reply."""
    fake = switchboard.fake
    async with switchboard.running():
        _, answer = await ask_by_mention(switchboard, "remember this")
        pinned = await fake.send_system_message(CHANNEL_PINNED_MESSAGE, reference=answer)
        _, sentinel = await ask_by_mention(switchboard, "sentinel")
    assert not any(replying_to(pinned, final=False)(m) for m in fake.bot_messages())
    assert [m["id"] for m in fake.bot_messages()] == [answer["id"], sentinel["id"]]
    assert len(switchboard.small.calls) == 2


async def test_a_quick_back_and_forth_is_not_rate_limited(switchboard: Harness) -> None:
    """Eight quick messages in a conversation thread (the 4th was refused with the old defaults)."""
    fake = switchboard.fake
    async with switchboard.running():
        thread = await start_chat(fake)
        for i in range(8):
            asked = await fake.send_message(f"message {i}", channel_id=thread)
            answer = await fake.wait_for_message(thread, replying_to(asked))
            assert FOOTER_RE.search(answer["content"]), answer["content"]
    assert len(switchboard.small.calls) == 8


async def test_exempt_roles_are_never_rate_limited(switchboard: Harness) -> None:
    fake = switchboard.fake
    team = fake.add_role("support")
    carol = fake.add_member("carol", roles=[team])
    async with switchboard.running():
        assert switchboard.store is not None
        await switchboard.store.update_guild_config(int(fake.guild_id), 1, "test", rate_limit_burst=1)
        exempted = await admin(fake, "settings exempt-role", {"action": "add", "role": team})
        assert exempted.content == f"Never rate limited: <@&{team}>."
        shown = await admin(fake, "settings show")
        assert f"Rate limit: 20/min per user, burst 1; never for <@&{team}>\n" in shown.content
        for i in range(4):
            _, answer = await ask_by_mention(switchboard, f"carol {i}", author=carol)
            assert FOOTER_RE.search(answer["content"]), answer["content"]
        summary = await switchboard.wait_answered(await fake.send_interaction("ask", {"prompt": "/ask"}, user=carol))
        assert FOOTER_RE.search(summary.content)

        await ask_by_mention(switchboard, "alice 1")  # alice has no exempt role: her burst of one is spent
        asked = await fake.send_message(f"{fake.mention(fake.bot_user)} alice 2")
        refused = await fake.wait_for_message(None, lambda m: refused_note(m, asked))

        cleared = await admin(fake, "settings exempt-role", {"action": "clear"})
        assert cleared.content == "Never rate limited: nobody."
        await ask_by_mention(switchboard, "carol again", author=carol)  # exempt, she used no bucket so far
        asked = await fake.send_message(f"{fake.mention(fake.bot_user)} carol once more", author=carol)
        await fake.wait_for_message(None, lambda m: refused_note(m, asked))
    assert refused["content"] == "You're sending requests too fast; try again in 3 s."
    assert [c[-1].content for c in switchboard.small.calls] == [
        *(f"carol {i}" for i in range(4)),
        "/ask",
        "alice 1",
        "carol again",
    ]


def refused_note(message: dict[str, Any], asked: dict[str, Any]) -> bool:
    ref = message.get("message_reference") or {}
    return ref.get("message_id") == asked["id"] and message["content"].startswith("You're sending requests too fast")


async def admin(fake: FakeDiscord, command: str, options: dict[str, Any] | None = None) -> Any:
    name, sub = command.split(" ", 1)
    it = await fake.send_interaction(name, options, subcommand=sub, permissions=MANAGE_GUILD)
    return await fake.wait_for_response(it)
