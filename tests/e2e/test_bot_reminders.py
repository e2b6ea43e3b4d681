"""Reminders, native polls and Confirm buttons through the real bot and the fake Discord.

A scripted OpenAI-compatible server (the large tier, where tool_use routes) asks for ``remind`` or ``poll``. A
reminder is a job in the database: it fires once when due (``bot.scheduler.run_due()`` on the harness's wall
clock, no sleeping), also after a restart, and never twice. Reminding someone else and creating a poll speak for
the bot, so they run only after the asker presses Confirm; a bystander's click is refused, Cancel and the time
limit post nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest_asyncio

from bot.reminders import REMINDER_KIND
from bot.scheduler import Scheduler
from bot.storage import Job, Store
from tests.e2e.bot_harness import Harness, allowed_mentions, message_writes
from tests.e2e.test_bot_feedback import buttons
from tests.e2e.test_bot_tools import admin, large_tier_at, offered, tool_messages
from tests.fakes.discord import FakeDiscord, InteractionSummary
from tests.fakes.tool_server import ScriptedServer, tool_call

POLL_ARGS = {"question": "Pizza or tacos on Friday?", "answers": ["Pizza", "Tacos"], "hours": 4}


@pytest_asyncio.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    async with ScriptedServer() as s:
        yield s


def store_of(switchboard: Harness) -> Store:
    assert switchboard.store is not None
    return switchboard.store


async def ask(switchboard: Harness, prompt: str) -> InteractionSummary:
    it = await switchboard.fake.send_interaction("ask", {"prompt": prompt})
    return await switchboard.wait_answered(it)


async def reminders(switchboard: Harness) -> list[Job]:
    return await store_of(switchboard).jobs(int(switchboard.fake.guild_id), kind=REMINDER_KIND)


def posted(fake: FakeDiscord, start: str) -> list[dict[str, Any]]:
    return [m for m in fake.bot_messages(fake.channel_id) if m["content"].startswith(start)]


def polls(fake: FakeDiscord) -> list[dict[str, Any]]:
    return [m for m in fake.bot_messages(fake.channel_id) if m.get("poll")]


async def confirmation(fake: FakeDiscord) -> dict[str, Any]:
    """The open Confirm / Cancel prompt in the channel."""
    return await fake.wait_for_message(fake.channel_id, lambda m: "Confirm" in buttons(m))


async def press(fake: FakeDiscord, prompt: dict[str, Any], label: str, **kw: Any) -> InteractionSummary:
    it = await fake.send_component(prompt, buttons(fake.messages[prompt["id"]])[label]["custom_id"], **kw)
    return await fake.wait_for_response(it)


class Expiry:
    """The confirmations' time limit, under the test's control: it passes only when :meth:`expire` is called."""

    def __init__(self) -> None:
        self.limits: list[float] = []
        self._passed = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.limits.append(seconds)
        await self._passed.wait()

    def expire(self) -> None:
        self._passed.set()


# --- reminders -------------------------------------------------------------------------------------------


async def test_remind_me_stores_a_job_that_fires_once_when_due(switchboard: Harness, server: ScriptedServer) -> None:
    fake = switchboard.fake
    server.calls(tool_call(0, "a", "remind", {"when": "in 20 minutes", "text": "stretch your legs"}))
    server.text("I'll remind you in 20 minutes.")
    large_tier_at(switchboard, server)
    set_at = switchboard.wall_clock.now
    async with switchboard.running() as bot:
        summary = await ask(switchboard, "remind me in 20 minutes to stretch my legs")
        assert summary.content.startswith("I'll remind you in 20 minutes.")
        assert "-# 🔧 remind(when='in 20 minutes', text='stretch your legs') →" in summary.content
        assert not posted(fake, "<@")  # no confirmation for reminding oneself
        (job,) = await reminders(switchboard)
        assert job.next_run_at == set_at + timedelta(minutes=20) and job.user_id == int(fake.user["id"])
        assert job.channel_id == int(fake.channel_id) and job.payload["text"] == "stretch your legs"
        result = tool_messages(server.bodies[1])[0]
        assert result["ok"] is True
        # Shown in each reader's own time zone by Discord, not as UTC text.
        assert json.loads(result["result"])["at"] == f"<t:{int(job.next_run_at.timestamp())}:F>"

        switchboard.wall_clock.advance(minutes=19)
        assert await bot.scheduler.run_due() == []  # not yet
        switchboard.wall_clock.advance(minutes=2)
        assert [j.id for j in await bot.scheduler.run_due()] == [job.id]
        (reminder,) = await fake.wait_for(lambda: posted(fake, "⏰"), what="the reminder")
        assert reminder["content"] == f"⏰ <@{fake.user['id']}>, reminder: stretch your legs"
        write = next(r for r in message_writes(fake) if (r.json or {}).get("content", "").startswith("⏰"))
        pinged = allowed_mentions(write)  # the one reminded, nobody else
        assert [str(u) for u in pinged["users"]] == [fake.user["id"]] and pinged["parse"] == []
        assert await bot.scheduler.run_due() == []
        assert len(posted(fake, "⏰")) == 1 and await reminders(switchboard) == []


async def test_a_reminder_fires_once_across_restarts(switchboard: Harness, server: ScriptedServer) -> None:
    fake = switchboard.fake
    server.calls(tool_call(0, "a", "remind", {"when": "in 1 hour", "text": "check the oven"}))
    server.text("Reminder set.")
    large_tier_at(switchboard, server)
    async with switchboard.running():
        await ask(switchboard, "remind me in an hour to check the oven")
        assert len(await reminders(switchboard)) == 1
    (job,) = [j for j in await store_of(switchboard).jobs(int(fake.guild_id))]
    switchboard.wall_clock.advance(hours=2)  # the bot was down when it came due
    async with switchboard.running() as bot:
        assert len(await bot.scheduler.run_due()) == 1
        await fake.wait_for(lambda: posted(fake, "⏰"), what="the reminder")
    async with switchboard.running() as bot:  # and once more: it does not fire again
        assert await bot.scheduler.run_due() == []
    late = f" (due <t:{int(job.next_run_at.timestamp())}:R>)"  # it fired an hour late: it says so
    assert [m["content"] for m in posted(fake, "⏰")] == [f"⏰ <@{fake.user['id']}>, reminder: check the oven{late}"]


async def test_two_processes_on_one_database_post_a_reminder_once(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running() as bot:
        job = await store_of(switchboard).add_job(
            guild_id=int(fake.guild_id),
            channel_id=int(fake.channel_id),
            user_id=int(fake.user["id"]),
            kind=REMINDER_KIND,
            payload={"text": "stand-up"},
            run_at=switchboard.wall_clock.now,
            interval_s=None,
        )
        other = await Store.open(switchboard.db_url)
        try:
            second = Scheduler(other, switchboard.wall_clock, "other-process")
            second.register(REMINDER_KIND, bot.get_cog("RemindersCog").fire)  # type: ignore[union-attr]
            ran = await asyncio.gather(bot.scheduler.run_due(), second.run_due())
        finally:
            await other.close()
        assert sorted(len(r) for r in ran) == [0, 1]
        assert [j.id for j in ran[0] + ran[1]] == [job.id]
        await fake.wait_for(lambda: posted(fake, "⏰"), what="the reminder")
        assert len(posted(fake, "⏰")) == 1


async def test_reminding_someone_else_needs_the_askers_confirmation(
    switchboard: Harness, server: ScriptedServer
) -> None:
    fake = switchboard.fake
    friend = fake.add_member("friend")
    args = {"when": "in 10 minutes", "text": "call your mum", "user": f"<@{friend['id']}>"}
    server.calls(tool_call(0, "a", "remind", args))
    server.text("Done.")
    large_tier_at(switchboard, server)
    async with switchboard.running() as bot:
        it = await fake.send_interaction("ask", {"prompt": f"remind <@{friend['id']}> in 10 minutes to call mum"})
        prompt = await confirmation(fake)
        assert prompt["content"].startswith(f"<@{fake.user['id']}>, please confirm: remind <@{friend['id']}> at ")
        assert await reminders(switchboard) == []  # nothing before the click
        done = await press(fake, prompt, "Confirm")
        assert done.callback_type == 7  # the prompt itself is updated
        assert fake.messages[prompt["id"]]["content"].startswith("✅ Confirmed: remind")
        assert fake.messages[prompt["id"]]["components"] == []
        await switchboard.wait_answered(it)
        (job,) = await reminders(switchboard)
        assert job.payload["target_user_id"] == int(friend["id"])
        switchboard.wall_clock.advance(minutes=11)
        await bot.scheduler.run_due()
        (reminder,) = await fake.wait_for(lambda: posted(fake, "⏰"), what="the reminder")
    assert reminder["content"] == f"⏰ <@{friend['id']}>, reminder (from <@{fake.user['id']}>): call your mum"
    write = next(r for r in message_writes(fake) if (r.json or {}).get("content", "").startswith("⏰"))
    assert [str(u) for u in allowed_mentions(write)["users"]] == [friend["id"]]


async def test_remind_list_and_cancel_are_per_user(switchboard: Harness) -> None:
    fake = switchboard.fake
    bystander = fake.add_member("bystander")
    async with switchboard.running() as bot:
        store = store_of(switchboard)

        async def add(text: str, user: dict[str, Any], minutes: int) -> Job:
            return await store.add_job(
                guild_id=int(fake.guild_id),
                channel_id=int(fake.channel_id),
                user_id=int(user["id"]),
                kind=REMINDER_KIND,
                payload={"text": text, "target_user_id": int(user["id"])},
                run_at=switchboard.wall_clock.now + timedelta(minutes=minutes),
                interval_s=None,
            )

        tea = await add("tea", fake.user, 5)
        await add("bystander's own", bystander, 5)
        later = await add("laundry", fake.user, 50)

        async def remind(sub: str, options: dict[str, Any] | None = None, **kw: Any) -> InteractionSummary:
            it = await fake.send_interaction("remind", options or {}, subcommand=sub, **kw)
            return await fake.wait_for_response(it, lambda s: bool(s.content) and not s.loading)

        listed = await remind("list")
        assert listed.ephemeral
        assert f"`#{tea.id}`" in listed.content and f"`#{later.id}`" in listed.content
        assert "bystander" not in listed.content and listed.content.index("tea") < listed.content.index("laundry")

        refused = await remind("cancel", {"id": tea.id}, user=bystander)  # not theirs
        assert (
            refused.ephemeral
            and refused.content == f"You have no pending reminder #{tea.id} here (see `/remind list`)."
        )
        cancelled = await remind("cancel", {"id": tea.id})
        assert cancelled.content == f"Cancelled reminder #{tea.id}."
        assert "tea" not in (await remind("list")).content

        switchboard.wall_clock.advance(hours=1)
        ran = await bot.scheduler.run_due()
        assert sorted(j.payload["text"] for j in ran) == ["bystander's own", "laundry"]  # not the cancelled one
        assert (await remind("list")).content.startswith("You have no pending reminders here.")

        # The one reminded sees and may cancel a reminder someone else set for them; a goal is no reminder.
        for_them = await store.add_job(
            guild_id=int(fake.guild_id),
            channel_id=int(fake.channel_id),
            user_id=int(fake.user["id"]),
            kind=REMINDER_KIND,
            payload={"text": "meeting", "target_user_id": int(bystander["id"])},
            run_at=switchboard.wall_clock.now + timedelta(minutes=5),
            interval_s=None,
        )
        goal = await store.add_job(
            guild_id=int(fake.guild_id),
            channel_id=int(fake.channel_id),
            user_id=int(fake.user["id"]),
            kind="agent_goal",
            payload={"goal": "news"},
            run_at=switchboard.wall_clock.now + timedelta(minutes=5),
            interval_s=3600,
        )
        assert f"`#{for_them.id}`" in (await remind("list", user=bystander)).content
        gone = await remind("cancel", {"id": for_them.id}, user=bystander)
        assert gone.ephemeral and gone.content == f"Cancelled reminder #{for_them.id}."
        wrong_kind = await remind("cancel", {"id": goal.id})
        assert wrong_kind.content == f"You have no pending reminder #{goal.id} here (see `/remind list`)."
        assert [j.id for j in await store.jobs(int(fake.guild_id))] == [goal.id]


# --- polls and Confirm -----------------------------------------------------------------------------------


async def test_a_poll_is_created_only_after_the_asker_confirms(switchboard: Harness, server: ScriptedServer) -> None:
    fake = switchboard.fake
    bystander = fake.add_member("bystander")
    server.calls(tool_call(0, "a", "poll", POLL_ARGS))
    server.text("The poll is up.")
    large_tier_at(switchboard, server)
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "make a poll: pizza or tacos on Friday?"})
        prompt = await confirmation(fake)
        assert "post a poll here for 4 h: **Pizza or tacos on Friday?** (Pizza / Tacos)" in prompt["content"]
        refused = await press(fake, prompt, "Confirm", user=bystander)
        assert refused.ephemeral and refused.content == "Only the person who asked can confirm or cancel this."
        assert polls(fake) == [] and "Confirm" in buttons(fake.messages[prompt["id"]])  # still open
        await press(fake, prompt, "Confirm")
        summary = await switchboard.wait_answered(it)
    (message,) = polls(fake)
    poll = message["poll"]
    assert poll["question"]["text"] == "Pizza or tacos on Friday?"
    assert [a["poll_media"]["text"] for a in poll["answers"]] == ["Pizza", "Tacos"]
    body = next(r.json for r in message_writes(fake) if (r.json or {}).get("poll"))
    assert body is not None and body["poll"]["duration"] == 4
    assert summary.content.startswith("The poll is up.")
    assert "-# 🔧 poll(" in summary.content
    (result,) = tool_messages(server.bodies[1])
    assert result["ok"] is True and json.loads(result["result"])["posted"] is True
    assert not fake.problems()  # every body matched Discord's OpenAPI description


async def test_a_cancelled_poll_is_never_created_and_the_model_is_told(
    switchboard: Harness, server: ScriptedServer
) -> None:
    fake = switchboard.fake
    server.calls(tool_call(0, "a", "poll", POLL_ARGS))
    server.text("OK, no poll then.")
    large_tier_at(switchboard, server)
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "make a poll: pizza or tacos on Friday?"})
        prompt = await confirmation(fake)
        await press(fake, prompt, "Cancel")
        summary = await switchboard.wait_answered(it)
    assert polls(fake) == []
    assert fake.messages[prompt["id"]]["content"].startswith("❌ Cancelled: post a poll")
    assert tool_messages(server.bodies[1]) == [
        {"tool": "poll", "ok": False, "error": "the user did not confirm poll; it was not run"}
    ]
    assert "-# 🔧 poll(" in summary.content and "⚠️ the user did not confirm" in summary.content


async def test_an_unanswered_confirmation_times_out_and_nothing_is_posted(
    switchboard: Harness, server: ScriptedServer
) -> None:
    fake = switchboard.fake
    server.calls(tool_call(0, "a", "poll", POLL_ARGS))
    server.text("No poll.")
    large_tier_at(switchboard, server)
    expiry = Expiry()
    async with switchboard.running() as bot:
        bot.confirmations.sleep = expiry.sleep
        it = await fake.send_interaction("ask", {"prompt": "make a poll: pizza or tacos on Friday?"})
        prompt = await confirmation(fake)
        await fake.wait_for(lambda: expiry.limits, what="the time limit to start")
        assert expiry.limits == [bot.settings.confirm_timeout_s]
        expiry.expire()
        await switchboard.wait_answered(it)
        assert fake.messages[prompt["id"]]["content"].startswith("⌛ Not confirmed in time, cancelled: post a poll")
        assert fake.messages[prompt["id"]]["components"] == []
        assert bot.confirmations.pending == 0
    assert polls(fake) == []
    assert tool_messages(server.bodies[1])[0]["ok"] is False


async def test_a_disabled_tool_is_neither_offered_nor_run(switchboard: Harness, server: ScriptedServer) -> None:
    fake = switchboard.fake
    server.calls(tool_call(0, "a", "remind", {"when": "in 5 minutes", "text": "tea"}))
    server.text("I can't set reminders here.")
    large_tier_at(switchboard, server)
    async with switchboard.running():
        listed = await admin(fake, "list")
        assert "remind" in listed.content and "poll" in listed.content
        await admin(fake, "disable", {"name": "remind"})
        summary = await ask(switchboard, "remind me in 5 minutes about tea")
        assert await reminders(switchboard) == []
    assert "remind" not in offered(server.bodies[0]) and "poll" in offered(server.bodies[0])
    (result,) = tool_messages(server.bodies[1])
    assert result["ok"] is False and "no tool named 'remind'" in result["error"]
    assert summary.content.startswith("I can't set reminders here.")


async def test_a_bad_time_is_an_error_the_model_sees(switchboard: Harness, server: ScriptedServer) -> None:
    server.calls(tool_call(0, "a", "remind", {"when": "yesterday", "text": "tea"}))
    server.text("That time is in the past.")
    large_tier_at(switchboard, server)
    async with switchboard.running():
        await ask(switchboard, "remind me yesterday about tea")
        assert await reminders(switchboard) == []
    (result,) = tool_messages(server.bodies[1])
    assert result["ok"] is False and "can't read the time 'yesterday'" in result["error"]


async def test_confirmations_api_directly(switchboard: Harness) -> None:
    """``bot.confirmations.ask`` in a channel: True on Confirm by that user, the prompt then says so."""
    fake = switchboard.fake
    async with switchboard.running() as bot:
        channel = bot.messageable(int(fake.channel_id))
        assert channel is not None
        asked = asyncio.ensure_future(bot.confirmations.ask(channel, int(fake.user["id"]), "delete everything?"))
        prompt = await confirmation(fake)
        assert prompt["content"] == f"<@{fake.user['id']}>, please confirm: delete everything?"
        await press(fake, prompt, "Confirm")
        assert await asked is True
        # Shutting down answers an open prompt with no.
        pending = asyncio.ensure_future(bot.confirmations.ask(channel, int(fake.user["id"]), "again?"))
        await fake.wait_for(lambda: bot.confirmations.pending == 1)
        second = next(m for m in fake.bot_messages(fake.channel_id) if m["content"].endswith("again?"))
        bot.confirmations.cancel_all()
        assert await pending is False
        # Not "not confirmed in time": the person did nothing wrong, the bot is going away.
        assert fake.messages[second["id"]]["content"] == "❌ The bot is restarting, nothing was done: again?"
        assert fake.messages[second["id"]]["components"] == []


async def test_a_reminder_set_in_a_chat_thread_fires_in_that_thread(
    switchboard: Harness, server: ScriptedServer
) -> None:
    from tests.e2e.test_bot_chat import replying_to, start_chat

    fake = switchboard.fake
    server.calls(tool_call(0, "a", "remind", {"when": "in 5 minutes", "text": "tea"}))
    server.text("Reminder set.")
    large_tier_at(switchboard, server)
    async with switchboard.running() as bot:
        thread = await start_chat(fake)
        asked = await fake.send_message("remind me in 5 minutes about the tea", channel_id=thread)
        await fake.wait_for_message(thread, replying_to(asked))
        (job,) = await reminders(switchboard)
        assert job.channel_id == int(thread)  # beside the conversation, not in its parent channel
        switchboard.wall_clock.advance(minutes=6)
        assert len(await bot.scheduler.run_due()) == 1
        await fake.wait_for(
            lambda: [m for m in fake.bot_messages(thread) if m["content"].startswith("⏰")], what="the reminder"
        )
        assert not posted(fake, "⏰")


async def test_an_answer_that_stored_a_reminder_has_no_buttons_to_answer_it_again(
    switchboard: Harness, server: ScriptedServer
) -> None:
    fake = switchboard.fake
    server.calls(tool_call(0, "a", "remind", {"when": "in 1 hour", "text": "water the plants"}))
    server.text("Reminder set.")
    server.calls(tool_call(0, "b", "calculator", {"expression": "2+2"}))
    server.text("2+2 is 4.")
    large_tier_at(switchboard, server)
    async with switchboard.running():
        reminded = await ask(switchboard, "remind me in an hour to water the plants")
        calculated = await ask(switchboard, "calculate 2+2")
        first, second = reminded.original, calculated.original
        assert first is not None and second is not None
        # An answer whose tools changed nothing gets its buttons; by then the first delivery is long finished.
        await fake.wait_for(lambda: "Wrong task?" in buttons(fake.messages[second["id"]]))
        assert buttons(fake.messages[first["id"]]) == {}  # "answer again" would store a second one
        assert len(await reminders(switchboard)) == 1


async def test_only_a_member_who_sees_the_channel_can_be_reminded(switchboard: Harness, server: ScriptedServer) -> None:
    fake = switchboard.fake
    stranger = fake.add_user("stranger")  # not on the server
    hidden = fake.add_member("hidden")
    server.calls(tool_call(0, "a", "remind", {"when": "in 5 minutes", "text": "tea", "user": f"<@{stranger['id']}>"}))
    server.text("I can't remind them.")
    server.calls(tool_call(0, "b", "remind", {"when": "in 5 minutes", "text": "tea", "user": f"<@{hidden['id']}>"}))
    server.text("I can't remind them either.")
    large_tier_at(switchboard, server)
    async with switchboard.running():
        await fake.deny(fake.channel_id, hidden, 1 << 10)  # View Channel
        for who in (stranger, hidden):
            it = await fake.send_interaction("ask", {"prompt": f"remind <@{who['id']}> in 5 minutes about tea"})
            await press(fake, await confirmation(fake), "Confirm")
            await switchboard.wait_answered(it)
        assert await reminders(switchboard) == []
    for body, who in ((server.bodies[1], stranger), (server.bodies[3], hidden)):
        (result,) = tool_messages(body)
        assert result["ok"] is False
        assert f"<@{who['id']}> is not a member of this server who can see this channel" in result["error"]


async def test_pending_reminders_are_capped_per_member(switchboard: Harness, server: ScriptedServer) -> None:
    from bot.reminders import MAX_PENDING_REMINDERS

    fake = switchboard.fake
    server.calls(tool_call(0, "a", "remind", {"when": "in 5 minutes", "text": "one too many"}))
    server.text("You have too many reminders.")
    large_tier_at(switchboard, server)
    async with switchboard.running():
        for i in range(MAX_PENDING_REMINDERS):
            await store_of(switchboard).add_job(
                guild_id=int(fake.guild_id),
                channel_id=int(fake.channel_id),
                user_id=int(fake.user["id"]),
                kind=REMINDER_KIND,
                payload={"text": f"r{i}"},
                run_at=switchboard.wall_clock.now + timedelta(hours=1),
                interval_s=None,
            )
        await ask(switchboard, "remind me in 5 minutes: one too many")
        assert len(await reminders(switchboard)) == MAX_PENDING_REMINDERS
    (result,) = tool_messages(server.bodies[1])
    assert result["ok"] is False and f"you already have {MAX_PENDING_REMINDERS} pending reminders" in result["error"]


async def test_each_shard_process_fires_only_its_own_servers_reminders(switchboard: Harness) -> None:
    from tests.e2e.test_bot_shards import channel_of, guilds_on_both_shards, two_processes

    fake = switchboard.fake
    fake.shard_count = 2
    guilds = guilds_on_both_shards(fake)
    harnesses = two_processes(switchboard)
    async with harnesses[0].running() as bot0, harnesses[1].running() as bot1:
        jobs = [
            await store_of(switchboard).add_job(
                guild_id=int(guild),
                channel_id=int(channel_of(fake, guild)),
                user_id=int(fake.user["id"]),
                kind=REMINDER_KIND,
                payload={"text": f"for shard {shard}"},
                run_at=switchboard.wall_clock.now,
                interval_s=None,
            )
            for shard, guild in enumerate(guilds)
        ]
        # Shard 1's process runs first: it must leave shard 0's reminder alone, not post it where it has no guild.
        assert [j.id for j in await bot1.scheduler.run_due()] == [jobs[1].id]
        assert [j.id for j in await bot0.scheduler.run_due()] == [jobs[0].id]
        for shard, guild in enumerate(guilds):
            channel = channel_of(fake, guild)

            def reminded(channel: str = channel) -> list[dict[str, Any]]:
                return [m for m in fake.bot_messages(channel) if m["content"].startswith("⏰")]

            (posted_here,) = await fake.wait_for(reminded, what=f"shard {shard}'s reminder")
            assert posted_here["content"].endswith(f"for shard {shard}")
