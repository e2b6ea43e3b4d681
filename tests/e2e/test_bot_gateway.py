"""The gateway moves under the bot mid-answer (op 7 RECONNECT, op 9 INVALID_SESSION): answers still arrive whole."""

from __future__ import annotations

import asyncio

from tests.e2e.bot_harness import Harness, is_final

REPLY = " ".join(f"part{i}" for i in range(1, 31))
DONE = REPLY + "\n-# chat · small · small-fake · 3.0s"


async def no_wait(shard_id: int | None, *, initial: bool = False) -> None:
    return None


async def test_reconnect_mid_answer_resumes_and_answers_whole(switchboard: Harness) -> None:
    fake = switchboard.fake
    small = switchboard.small
    small.reply, small.gate = REPLY, asyncio.Event()
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "slow one"})
        await asyncio.wait_for(small.started.wait(), 5)
        await fake.request_reconnect()  # the model is still blocked
        small.gate.set()
        summary = await switchboard.wait_answered(it)
        assert summary.content == DONE

        small.gate = None
        later = await fake.send_interaction("ask", {"prompt": "and now?"})
        again = await switchboard.wait_answered(later)

    assert again.content == DONE
    (resume,) = [p["d"] for p in fake.received if p["op"] == 6]
    (ready,) = fake.events("READY")
    assert resume["session_id"] == ready["session_id"] and resume["token"] == fake.token
    assert (fake.identify_count, fake.resume_count) == (1, 1)  # resumed, not identified again
    assert len(fake.connections) == 2


async def test_invalid_session_mid_answer_reidentifies_and_answers_whole(switchboard: Harness) -> None:
    fake = switchboard.fake
    small = switchboard.small
    small.reply, small.gate = REPLY, asyncio.Event()
    async with switchboard.running() as bot:
        # discord.py waits 5 s before a fresh IDENTIFY (Discord's identify limit); the fake has no such limit.
        bot.before_identify_hook = no_wait  # type: ignore[method-assign]
        await fake.send_message(f"{fake.mention(fake.bot_user)} slow one")
        await asyncio.wait_for(small.started.wait(), 5)
        await fake.invalidate_session(resumable=False, wait=False)
        small.gate.set()  # the answer streams (over REST) while the gateway session is rebuilt
        first = await switchboard.wait_final_message()
        assert first["content"] == DONE
        await fake.wait_for(lambda: fake.identify_count == 2, what="a fresh IDENTIFY")

        # A fresh session: READY and the guild again, and the bot answers as before.
        assert await fake.wait_for(lambda: bot.is_ready() and bot.get_guild(int(fake.guild_id)) is not None)
        small.gate = None
        asked = await fake.send_message(f"{fake.mention(fake.bot_user)} and now?")
        second = await fake.wait_for_message(
            None, lambda m: m.get("message_reference", {}).get("message_id") == asked["id"] and is_final(m["content"])
        )

    assert second["content"] == DONE
    assert (fake.identify_count, fake.resume_count) == (2, 0)
    sessions = [e["session_id"] for e in fake.events("READY")]
    assert len(sessions) == 2 and sessions[0] != sessions[1]


async def test_resumable_invalid_session_resumes(switchboard: Harness) -> None:
    fake = switchboard.fake
    small = switchboard.small
    small.reply, small.gate = REPLY, asyncio.Event()
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "slow one"})
        await asyncio.wait_for(small.started.wait(), 5)
        await fake.invalidate_session(resumable=True)
        small.gate.set()
        summary = await switchboard.wait_answered(it)
    assert summary.content == DONE
    assert (fake.identify_count, fake.resume_count) == (1, 1)
