"""The bot checks its own permissions before answering and names what is missing, privately; Discord's
403s (50013 Missing Permissions, 50001 Missing Access, 160002 replying without history) get the same
clear note instead of "Something went wrong" or a traceback."""

from __future__ import annotations

import logging
from typing import Any

import discord
import pytest

from tests.e2e.bot_harness import Harness
from tests.e2e.test_bot_chat import replying_to, start_chat
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord.payloads import (
    CREATE_PUBLIC_THREADS,
    READ_MESSAGE_HISTORY,
    SEND_MESSAGES,
    SEND_MESSAGES_IN_THREADS,
    VIEW_CHANNEL,
)


def note(channel_id: str, *missing: str) -> str:
    names = " and ".join(f"**{m}**" for m in missing)
    plural = "s" if len(missing) > 1 else ""
    return (
        f"I can't answer in <#{channel_id}>: I'm missing the {names} permission{plural} there. "
        "A server admin can grant it."
    )


async def private_note(fake: FakeDiscord) -> str:
    """The one message the bot sent the user in their DMs."""
    dm = await fake.wait_for(
        lambda: next((c for c, ch in fake.channels.items() if ch["type"] == 1 and fake.bot_messages(c)), None),
        what="a DM from the bot",
    )
    (message,) = fake.bot_messages(dm)
    return str(message["content"])


async def mention(fake: FakeDiscord, text: str = "hello?", **kw: Any) -> dict[str, Any]:
    return await fake.send_message(f"{fake.mention(fake.bot_user)} {text}", **kw)


@pytest.mark.parametrize(
    ("denied", "named"),
    [
        (SEND_MESSAGES, ("Send Messages",)),
        (READ_MESSAGE_HISTORY, ("Read Message History",)),
        (SEND_MESSAGES | READ_MESSAGE_HISTORY, ("Send Messages", "Read Message History")),
        (VIEW_CHANNEL, ("View Channel",)),
    ],
)
async def test_a_mention_where_the_bot_lacks_a_permission_gets_a_private_note(
    switchboard: Harness, denied: int, named: tuple[str, ...]
) -> None:
    fake = switchboard.fake
    await fake.deny(fake.channel_id, fake.bot_role_id, denied)
    async with switchboard.running():
        await mention(fake)
        told = await private_note(fake)
    assert told == note(fake.channel_id, *named)
    assert fake.bot_messages() == [] and switchboard.model_calls() == 0
    assert not fake.requests_matching("POST", rf"^/channels/{fake.channel_id}/messages$")  # checked, not tried


@pytest.mark.parametrize(
    ("denied", "code", "named"),
    [
        (SEND_MESSAGES, 50013, "Send Messages"),
        (VIEW_CHANNEL, 50001, "View Channel"),
        (READ_MESSAGE_HISTORY, 160002, "Read Message History"),
    ],
)
async def test_stale_permissions_are_corrected_by_discords_answer(
    switchboard: Harness, denied: int, code: int, named: str
) -> None:
    """The overwrite reached Discord but not the bot's cache: the 403 itself is turned into the note."""
    fake = switchboard.fake
    async with switchboard.running():
        await fake.deny(fake.channel_id, fake.bot_user, denied, tell_bot=False)
        await mention(fake)
        told = await private_note(fake)
    (attempt,) = fake.requests_matching("POST", rf"^/channels/{fake.channel_id}/messages$")
    assert attempt.status == 403 and attempt.response["code"] == code
    assert told == note(fake.channel_id, named)
    assert switchboard.model_calls() == 0


async def test_with_dms_closed_the_note_is_only_logged(switchboard: Harness, caplog: pytest.LogCaptureFixture) -> None:
    fake = switchboard.fake
    fake.close_dms()
    await fake.deny(fake.channel_id, fake.bot_role_id, SEND_MESSAGES)
    caplog.set_level(logging.INFO, logger="cogs")
    async with switchboard.running():
        await mention(fake)
        await fake.wait_for(lambda: fake.requests_matching("POST", r"^/channels/\d+/messages$"), what="DM attempt")
    (attempt,) = fake.requests_matching("POST", r"^/channels/\d+/messages$")
    assert (attempt.status, attempt.response["code"]) == (403, 50007)
    assert any(r.levelno == logging.INFO and "could not tell user" in r.getMessage() for r in caplog.records)
    assert switchboard.model_calls() == 0


async def test_chat_start_without_create_public_threads_says_so_privately(switchboard: Harness) -> None:
    fake = switchboard.fake
    await fake.deny(fake.channel_id, fake.bot_role_id, CREATE_PUBLIC_THREADS)
    async with switchboard.running():
        it = await fake.send_interaction("chat", {"prompt": "hi"}, subcommand="start")
        refused = await fake.wait_for_response(it)
    assert int(it.payload["app_permissions"]) & CREATE_PUBLIC_THREADS == 0  # Discord tells the bot up front
    assert refused.kinds == ["callback"] and refused.ephemeral
    assert refused.content == note(fake.channel_id, "Create Public Threads")
    assert fake.threads == [] and switchboard.model_calls() == 0


async def test_chat_start_with_stale_permissions_never_says_something_went_wrong(switchboard: Harness) -> None:
    """The permission goes between the command and the thread: Discord's 403 becomes the private note."""
    fake = switchboard.fake
    real = fake.channel_permissions

    def before_the_change(user_id: str, channel_id: str) -> int:
        del vars(fake)["channel_permissions"]  # once: only the command's app_permissions predate the change
        return real(user_id, channel_id) | CREATE_PUBLIC_THREADS

    async with switchboard.running():
        await fake.deny(fake.channel_id, fake.bot_role_id, CREATE_PUBLIC_THREADS, tell_bot=False)
        vars(fake)["channel_permissions"] = before_the_change
        started = await fake.send_interaction("chat", {"prompt": "hi"}, subcommand="start")
        refused = await fake.wait_for_response(started, lambda s: bool(s.followups))
    (attempt,) = fake.requests_matching("POST", rf"^/channels/{fake.channel_id}/threads$")
    assert (attempt.status, attempt.response) == (403, {"message": "Missing Permissions", "code": 50013})
    assert refused.followups[0]["content"] == note(fake.channel_id, "Create Public Threads")
    assert refused.followups[0]["flags"] & 64 and refused.original is None
    assert switchboard.model_calls() == 0


async def test_a_conversation_thread_without_send_messages_in_threads(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        thread = await start_chat(fake)
        await fake.deny(fake.channel_id, fake.bot_role_id, SEND_MESSAGES_IN_THREADS)
        await fake.send_message("anyone?", channel_id=thread)
        told = await private_note(fake)
        await fake.allow(fake.channel_id, fake.bot_role_id, SEND_MESSAGES_IN_THREADS)
        asked = await fake.send_message("now?", channel_id=thread)
        await fake.wait_for_message(thread, replying_to(asked))
    assert told == note(thread, "Send Messages in Threads")
    assert [c[-1].content for c in switchboard.small.calls] == ["now?"]


async def test_discord_answers_missing_access_and_missing_permissions(switchboard: Harness) -> None:
    """The fake's REST side as the bot sees it: 50001 for a hidden channel, 50013 for a missing permission."""
    fake = switchboard.fake
    hidden = fake.add_channel("hidden")
    async with switchboard.running() as bot:
        question = await fake.send_message("an old message")
        await fake.deny(hidden, fake.bot_role_id, VIEW_CHANNEL)
        await fake.deny(fake.channel_id, fake.bot_role_id, READ_MESSAGE_HISTORY)
        with pytest.raises(discord.Forbidden) as no_access:
            await bot.fetch_channel(int(hidden))
        channel = bot.get_channel(int(fake.channel_id))
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.Forbidden) as no_history:
            await channel.fetch_message(int(question["id"]))
        await fake.allow(fake.channel_id, fake.bot_role_id, READ_MESSAGE_HISTORY)
        assert (await channel.fetch_message(int(question["id"]))).content == "an old message"
    assert (no_access.value.status, no_access.value.code) == (403, 50001)
    assert (no_history.value.status, no_history.value.code) == (403, 50013)
