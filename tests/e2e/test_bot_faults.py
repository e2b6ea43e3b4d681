"""Failures through the real bot: slow, failing and half-failing models, late results, shutdown."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re

import pytest

from inference.errors import BackendUnavailable, BadRequest
from tests.e2e.bot_harness import FOOTER_RE, Harness, allowed_mentions, message_writes

REQUEST_ID = r"\(request `(?P<id>[0-9a-f]{8})`\)"


async def test_slow_model_in_a_new_chat_is_acknowledged_in_time(switchboard: Harness) -> None:
    fake, small = switchboard.fake, switchboard.small
    gate = asyncio.Event()
    small.gate = gate
    async with switchboard.running():
        it = await fake.send_interaction("chat", {"prompt": "hello slowly"}, subcommand="start")
        await asyncio.wait_for(small.started.wait(), 5)
        acked = fake.interaction_response(it)
        assert acked.steps[0].kind == "callback" and acked.steps[0].request.status == 200
        assert acked.steps[0].body == {"type": 5}
        gate.set()
        (thread,) = fake.threads
        final = await switchboard.wait_final_message(thread["id"])
    assert final["content"].startswith("answer from small-fake\n-# chat · small")


async def test_failing_small_tier_falls_back_to_large_with_a_note(switchboard: Harness) -> None:
    switchboard.small.fail = BackendUnavailable("connection refused")
    async with switchboard.running():
        it = await switchboard.fake.send_interaction("ask", {"prompt": "hi"})
        summary = await switchboard.wait_answered(it)
        assert switchboard.store is not None
        stats = await switchboard.store.stats(int(switchboard.fake.guild_id))
    assert summary.content == (
        "answer from large-fake\n-# chat · large · large-fake · 0.3s · "
        "the small tier failed (unavailable); the large tier answered"
    )
    assert len(switchboard.small.calls) == 1 and len(switchboard.large.calls) == 1
    assert (stats.total, stats.fallbacks, stats.failures) == (1, 1, 0)


async def test_both_tiers_failing_gives_a_short_honest_message(
    switchboard: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    switchboard.small.fail = BackendUnavailable("connection refused")
    switchboard.large.fail = BackendUnavailable("503 from upstream")
    caplog.set_level(logging.WARNING, logger="bot")
    async with switchboard.running():
        it = await switchboard.fake.send_interaction("ask", {"prompt": "hi"})
        summary = await switchboard.wait_answered(it)
        await switchboard.fake.wait_for(lambda: switchboard.probe.count("record_request") == 1, what="record")
        assert switchboard.store is not None
        stats = await switchboard.store.stats(int(switchboard.fake.guild_id))
    match = re.fullmatch(rf"⚠️ The model is unavailable right now\. {REQUEST_ID}", summary.content)
    assert match, summary.content
    assert not summary.followups and not summary.loading
    # The id in the message is the one the operator finds in the log.
    assert any(match["id"] in r.getMessage() for r in caplog.records if r.name == "bot.delivery")
    assert (stats.total, stats.failures) == (1, 1)


async def test_bad_request_is_not_escalated(switchboard: Harness) -> None:
    switchboard.small.fail = BadRequest("prompt rejected")
    async with switchboard.running():
        it = await switchboard.fake.send_interaction("ask", {"prompt": "hi"})
        summary = await switchboard.wait_answered(it)
    assert re.fullmatch(rf"⚠️ The model refused this request\. {REQUEST_ID}", summary.content), summary.content
    assert switchboard.large.calls == []


async def test_failure_mid_answer_keeps_the_text_and_says_so(switchboard: Harness) -> None:
    switchboard.small.reply = "one two three four five"
    switchboard.small.fail, switchboard.small.fail_after = BackendUnavailable("stream broke"), 3
    async with switchboard.running():
        mention = await switchboard.fake.send_message(f"{switchboard.fake.mention(switchboard.fake.bot_user)} hi")
        final = await switchboard.wait_final_message()
    assert str(final["message_reference"]["message_id"]) == mention["id"]
    assert re.fullmatch(rf"one two three\n⚠️ The model is unavailable right now\. {REQUEST_ID}", final["content"])
    assert switchboard.large.calls == []  # half an answer is never retried elsewhere


async def test_late_result_is_posted_in_the_channel(switchboard: Harness) -> None:
    fake = switchboard.fake
    fake.enforce_deadlines = False  # the token's 15 minutes are judged by the bot itself here
    switchboard.small.reply = "better late than never"
    created = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16)
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "anyone?"}, created_at=created)
        final = await switchboard.wait_final_message()
    summary = fake.interaction_response(it)
    assert summary.kinds == ["callback"]  # nothing sent with the expired token
    assert final["content"] == "better late than never\n-# chat · small · small-fake · 0.4s"
    assert not final.get("webhook_id") and final["channel_id"] == fake.channel_id
    posts = fake.requests_matching("POST", rf"^/channels/{fake.channel_id}/messages$")
    assert len(posts) == 1 and posts[0].json["allowed_mentions"] == {"parse": []}


async def test_shutdown_lets_an_in_flight_reply_finish_within_the_grace_period(switchboard: Harness) -> None:
    fake, small = switchboard.fake, switchboard.small
    gate = asyncio.Event()
    small.gate = gate
    async with switchboard.running() as bot:
        it = await fake.send_interaction("ask", {"prompt": "take your time"})
        await asyncio.wait_for(small.started.wait(), 5)
        closing = asyncio.ensure_future(bot.close())
        await fake.wait_for(lambda: bot.closing, what="close() started")
        # A second close (e.g. `async with bot` after a SIGTERM) waits for the same shutdown.
        again = asyncio.ensure_future(bot.close())
        for _ in range(10):
            await asyncio.sleep(0)  # let it run as far as it goes without the reply finishing
        assert not closing.done() and not again.done() and not bot.is_closed()  # waiting for the reply
        gate.set()
        await asyncio.wait_for(asyncio.gather(closing, again), 5)
        assert bot.is_closed()
    summary = fake.interaction_response(it)
    assert FOOTER_RE.search(summary.content), summary.content
    assert small.closed  # the backends were closed after the bot


async def test_shutdown_past_the_grace_period_says_the_reply_was_cut_off(switchboard: Harness) -> None:
    fake, small = switchboard.fake, switchboard.small
    small.gate = asyncio.Event()  # never set
    switchboard.shutdown_grace_s = 0.05
    async with switchboard.running() as bot:
        it = await fake.send_interaction("ask", {"prompt": "this will take forever"})
        await asyncio.wait_for(small.started.wait(), 5)
        await asyncio.wait_for(bot.close(), 10)
        summary = fake.interaction_response(it)
        assert summary.content == "⚠️ Cut off: the bot is shutting down."
        assert switchboard.probe.count("record_request") == 1
    assert small.closed
    assert all(allowed_mentions(r) == {"parse": []} for r in message_writes(fake))


async def test_late_private_result_goes_to_direct_messages_not_the_channel(switchboard: Harness) -> None:
    fake = switchboard.fake
    fake.enforce_deadlines = False
    switchboard.small.reply = "for your eyes only"
    created = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=16)
    async with switchboard.running():
        await fake.send_interaction("ask", {"prompt": "secret?", "private": True}, created_at=created)
        opened = await fake.wait_for_request("POST", r"^/users/@me/channels$")
        dm = str(opened.response["id"])
        final = await switchboard.wait_final_message(dm)
    assert str(opened.json["recipient_id"]) == fake.user["id"]
    assert final["content"] == "for your eyes only\n-# chat · small · small-fake · 0.4s"
    # Nothing public in the guild channel (only the private "thinking..." placeholder).
    assert [m for m in fake.bot_messages() if not m["flags"] & 64] == []
