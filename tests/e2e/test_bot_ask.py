"""/ask and @mentions through the real bot: acknowledge first, stream, split, no pings, footer."""

from __future__ import annotations

import asyncio
import re

from tests.e2e.bot_harness import (
    CURSOR,
    FOOTER_RE,
    LARGE,
    SMALL,
    Harness,
    allowed_mentions,
    fence_lines,
    is_final,
    message_writes,
)

NO_PINGS: dict[str, list[str]] = {"parse": []}


async def test_ask_defers_before_model_work_then_streams_edits_and_footer(switchboard: Harness) -> None:
    fake = switchboard.fake
    gate = asyncio.Event()
    small = switchboard.small
    small.gate = gate
    small.reply = " ".join(f"w{i}" for i in range(1, 21))  # 20 pieces, 0.25 s apart on the manual clock
    small.step = 0.25
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "what is a switchboard?"})
        await asyncio.wait_for(small.started.wait(), 5)
        # The model is blocked, yet the interaction is already acknowledged ("thinking...").
        acked = fake.interaction_response(it)
        assert acked.kinds == ["callback"] and acked.steps[0].request.done
        assert acked.steps[0].body == {"type": 5} and acked.loading
        assert acked.steps[0].request.status == 200
        gate.set()
        summary = await switchboard.wait_answered(it)

    assert summary.kinds[0] == "callback" and set(summary.kinds[1:]) == {"edit_original"}
    edits = [s.content for s in summary.steps[1:]]
    # One edit per second of model time (every 4 pieces), each a growing prefix with a cursor.
    streamed, final = edits[:-1], edits[-1]
    words = small.reply.split(" ")
    assert streamed == [" ".join(words[:n]) + CURSOR for n in (1, 5, 9, 13, 17)]
    assert final == small.reply + "\n-# chat · small · small-fake · 5.0s"
    assert FOOTER_RE.search(final) is not None
    assert summary.content == final and not summary.followups
    # The model saw the system prompt and the question, nothing else.
    (messages,) = small.calls
    assert [m.role for m in messages] == ["system", "user"] and messages[1].content == "what is a switchboard?"
    assert all(allowed_mentions(r) == NO_PINGS for r in message_writes(fake))


async def test_long_answer_is_split_into_wellformed_messages(switchboard: Harness) -> None:
    fake = switchboard.fake
    code = "\n".join(f"    value_{i} = compute({i})  # step {i}" for i in range(60))
    prose = " ".join(f"Sentence number {i} explains the code." for i in range(40))
    answer = f"{prose}\n\n```python\n{code}\n```\n\n{prose}\n\n```\n{code}\n```\nDone."
    assert len(answer) > 5000
    switchboard.small.reply = answer
    switchboard.small.step = 0.01
    switchboard.settings_overrides["max_reply_messages"] = 10  # splitting, not the cap, is tested here
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "explain it", "task": "chat"})
        summary = await switchboard.wait_answered(it)

    messages = [m["content"] for m in summary.messages]
    assert len(messages) >= 3 and len(summary.followups) == len(messages) - 1
    for content in messages:
        assert 0 < len(content) <= 2000
        assert fence_lines(content) % 2 == 0, content  # every code block that opens here closes here
        assert CURSOR not in content
    assert "user's choice" not in messages[-1] and messages[-1].endswith("s")
    assert FOOTER_RE.search(messages[-1])
    # Apart from the fences added at the cuts (and the footer), the messages are the answer.
    joined = "\n".join(messages)
    assert joined.count("value_59 = compute(59)") == 2 and joined.count("Done.") == 1
    body = FOOTER_RE.sub("", "".join(messages))
    stripped = re.sub(r"\n?```(python)?\n?", "", body)
    assert stripped.replace("\n", "") == re.sub(r"\n?```(python)?\n?", "", answer).replace("\n", "")
    # Every followup went out with pings disabled, as did every edit.
    writes = message_writes(fake)
    assert any(r.path.startswith("/webhooks/") and r.method == "POST" for r in writes)
    assert all(allowed_mentions(r) == NO_PINGS for r in writes)


async def test_model_output_pings_nobody(switchboard: Harness) -> None:
    fake = switchboard.fake
    role = fake.add_role("moderators")
    victim = fake.add_member("bob")
    switchboard.small.reply = f"@everyone and @here, ask <@&{role}> or <@{victim['id']}> or <@!{victim['id']}>"
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "who should I ping?"})
        summary = await switchboard.wait_answered(it)
        mention = await fake.send_message(f"{fake.mention(fake.bot_user)} who should I ping?")
        reply = await fake.wait_for_message(
            None, lambda m: m.get("message_reference", {}).get("message_id") == mention["id"] and is_final(m["content"])
        )

    for content in (summary.content, reply["content"]):
        assert "@everyone" not in content and "@here" not in content
        assert f"<@&{role}>" not in content and f"<@{victim['id']}>" not in content
        assert f"<@!{victim['id']}>" not in content
        assert "everyone" in content and victim["id"] in content  # still readable
    assert summary.original is not None and summary.original["mentions"] == [] and reply["mentions"] == []
    writes = message_writes(fake)
    assert len(writes) >= 4
    for r in writes:
        mentions = allowed_mentions(r)
        assert mentions is not None and mentions["parse"] == [], r
        assert not mentions.get("users") and not mentions.get("roles") and not mentions.get("replied_user")


async def test_mention_answers_in_reply_and_ignores_disallowed_channels(switchboard: Harness) -> None:
    fake = switchboard.fake
    other = fake.add_channel("off-topic")
    switchboard.small.reply = "mentions work"
    async with switchboard.running() as bot:
        assert switchboard.store is not None
        await switchboard.store.update_guild_config(
            int(fake.guild_id), 1, "test", allowed_channels=[int(fake.channel_id)]
        )
        ping = fake.mention(fake.bot_user)
        ignored = await fake.send_message(f"{ping} are you there?", channel_id=other)
        by_bot = await fake.send_message(f"{ping} I am a bot", bot=True)
        asked = await fake.send_message(f"{ping} hello?")
        final = await switchboard.wait_final_message()

    placeholder = fake.requests_matching("POST", rf"^/channels/{fake.channel_id}/messages$")[0]
    assert placeholder.json["content"] == "⏳"
    assert str(placeholder.json["message_reference"]["message_id"]) == asked["id"]
    assert placeholder.json["allowed_mentions"] == {"parse": [], "replied_user": False}
    assert final["content"] == "mentions work\n-# chat · small · small-fake · 0.2s"
    assert final["message_reference"]["message_id"] == asked["id"]
    # Only the allowed channel's human got an answer: not the other channel, not the bot.
    assert fake.bot_messages(other) == []
    assert [m["id"] for m in fake.bot_messages()] == [final["id"]]
    assert len(switchboard.small.calls) == 1
    assert switchboard.small.calls[0][-1].content.strip() == "hello?"
    assert bot.user is not None and ignored["id"] != by_bot["id"]


async def test_private_ask_with_forced_task_goes_to_the_large_tier(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.large.reply = "def f(): pass"
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "hello", "task": "code", "private": True})
        summary = await switchboard.wait_answered(it)
    assert summary.steps[0].body == {"type": 5, "data": {"flags": 64}}
    assert summary.ephemeral
    # The code pipeline fences the answer with its language.
    assert summary.content == "```python\ndef f(): pass\n```\n-# code · large · large-fake · 0.3s"
    assert switchboard.small.calls == [] and len(switchboard.large.calls) == 1
    assert SMALL not in summary.content and LARGE in summary.content


async def test_hard_question_escalates_to_the_large_tier(switchboard: Harness) -> None:
    async with switchboard.running():
        it = await switchboard.fake.send_interaction("ask", {"prompt": "prove that sqrt 2 is irrational"})
        summary = await switchboard.wait_answered(it)
    assert summary.content == "answer from large-fake\n-# chat · large · large-fake · 0.3s"
    assert switchboard.small.calls == []


async def test_threads_inherit_their_channels_settings(switchboard: Harness) -> None:
    """Allowed channels are text channels; a thread in one (not a /chat conversation) is answered too."""
    fake = switchboard.fake
    async with switchboard.running():
        assert switchboard.store is not None
        await switchboard.store.update_guild_config(
            int(fake.guild_id), 1, "test", allowed_channels=[int(fake.channel_id)]
        )
        thread = await fake.create_thread("side topic")
        it = await fake.send_interaction("ask", {"prompt": "in a thread"}, channel_id=thread["id"])
        summary = await switchboard.wait_answered(it)
        assert summary.content == "answer from small-fake\n-# chat · small · small-fake · 0.3s"
        asked = await fake.send_message(f"{fake.mention(fake.bot_user)} and a mention?", channel_id=thread["id"])
        reply = await fake.wait_for_message(
            thread["id"],
            lambda m: (
                str((m.get("message_reference") or {}).get("message_id")) == asked["id"] and is_final(m["content"])
            ),
        )
    assert reply["content"] == "answer from small-fake\n-# chat · small · small-fake · 0.3s"
    assert len(switchboard.small.calls) == 2


async def test_private_refusal_replaces_the_private_placeholder(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "  ", "private": True})
        summary = await fake.wait_for_response(it)
    assert summary.kinds == ["callback", "edit_original"]
    assert summary.ephemeral and not summary.loading and not summary.followups
    assert summary.content == "Your prompt is empty: tell me what you need."
    assert switchboard.model_calls() == 0
