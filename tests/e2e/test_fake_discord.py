"""Proves the fake Discord with a throwaway discord.py bot (no sleeping: every wait is event-driven)."""

from __future__ import annotations

import datetime as dt
import io
import re
import struct
import zlib
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.e2e.conftest import LogWatch
from tests.fakes.discord import FakeDiscord, load_validator


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


class Confirm(discord.ui.View):
    @discord.ui.button(label="OK", custom_id="confirm-ok")
    async def ok(self, interaction: discord.Interaction, button: discord.ui.Button[Confirm]) -> None:
        await interaction.response.edit_message(content="confirmed", view=None)


class ThrowawayBot(commands.Bot):
    """Just enough bot: one deferring slash command, a guarded group, and a thread-replying on_message."""

    def __init__(self, *, message_content: bool = True) -> None:
        intents = discord.Intents.default()
        intents.message_content = message_content
        super().__init__(command_prefix="!", intents=intents, guild_ready_timeout=0.05)
        self.seen: list[discord.Message] = []

        @self.tree.command(name="ask", description="Ask a question")
        @app_commands.describe(prompt="What to ask")
        async def ask(interaction: discord.Interaction, prompt: str) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content=f"Thinking about {prompt}...")
            await interaction.edit_original_response(content="The answer is 42.")
            chart = discord.File(io.BytesIO(tiny_png()), filename="chart.png")
            await interaction.followup.send("Here is a chart.", file=chart)

        @ask.autocomplete("prompt")
        async def ask_complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
            return [app_commands.Choice(name=f"{current} (suggested)", value=current)]

        @self.tree.command(name="size", description="Size of an uploaded file")
        async def size(interaction: discord.Interaction, upload: discord.Attachment) -> None:
            data = await upload.read()  # fetched from the fake's CDN route
            await interaction.response.send_message(f"{upload.filename}: {len(data)} bytes", view=Confirm())

        @self.tree.command(name="boom", description="Always fails")
        async def boom(interaction: discord.Interaction) -> None:
            raise RuntimeError("kaboom")

        # default_permissions makes discord.py send `default_member_permissions` (an integer) in the sync.
        model = app_commands.Group(
            name="model", description="Model settings", default_permissions=discord.Permissions(manage_guild=True)
        )
        admin = app_commands.Group(name="admin", description="Admin settings", parent=model)

        @admin.command(name="set", description="Pick the default model")
        @app_commands.checks.has_permissions(manage_guild=True)
        async def set_model(interaction: discord.Interaction, name: str, temperature: float = 0.5) -> None:
            await interaction.response.send_message(f"default model: {name} @ {temperature}")

        @set_model.error
        async def set_model_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
            await interaction.response.send_message("You need Manage Server.", ephemeral=True)

        self.tree.add_command(model)

    async def setup_hook(self) -> None:
        await self.tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        self.seen.append(message)
        if message.author.bot:  # includes the echo of our own messages
            return
        if isinstance(message.channel, discord.Thread):
            if message.content == "close":
                await message.channel.edit(archived=True)
                return
            await message.channel.send(f"in thread: {message.content}")
            return
        thread = await message.create_thread(name=f"re: {message.content[:20]}")
        await thread.send(f"echo: {message.content}")


async def test_login_sync_and_guild_cache(fake_discord: FakeDiscord, run_bot: Any) -> None:
    async with run_bot(ThrowawayBot()) as bot:
        calls = [f"{r.method} {r.route}" for r in fake_discord.requests]
        assert calls[:3] == [
            "GET /users/@me",
            "GET /oauth2/applications/@me",
            "PUT /applications/{application_id}/commands",
        ]
        assert set(fake_discord.commands["global"]) == {"ask", "size", "boom", "model"}
        assert bot.user is not None and str(bot.user.id) == fake_discord.bot_user["id"]
        guild = bot.get_guild(int(fake_discord.guild_id))
        assert guild is not None and guild.default_role.id == guild.id
        assert guild.get_channel(int(fake_discord.channel_id)) is not None
        assert guild.me is not None and guild.me.bot
        (connection,) = fake_discord.connections
        assert connection["query"]["v"] == "10" and connection["query"]["encoding"] == "json"
        # discord.py asks for zlib-stream unless a zstd module is installed; then plain TEXT frames are used.
        assert connection["zlib"] == (connection["query"].get("compress") == "zlib-stream")
        # World changes after start-up reach the bot's cache (wait_for syncs through the gateway first).
        late = fake_discord.add_channel("late")
        assert await fake_discord.wait_for(lambda: bot.get_channel(int(late)))
        ops = [p["op"] for p in fake_discord.received]
        assert ops.index(1) < ops.index(2)  # heartbeat first, then IDENTIFY
        assert bot.latency < 5  # measured from our HEARTBEAT_ACK (it is inf until one arrives)


async def test_run_bot_fails_when_start_dies(fake_discord: FakeDiscord, run_bot: Any) -> None:
    with pytest.raises(pytest.fail.Exception, match="LoginFailure"):
        async with run_bot(ThrowawayBot(), "not-the-token"):
            pass
    assert fake_discord.requests[0].status == 401


async def test_defer_edits_and_followup(fake_discord: FakeDiscord, run_bot: Any) -> None:
    async with run_bot(ThrowawayBot()):
        interaction = await fake_discord.send_interaction("ask", {"prompt": "life"})
        summary = await fake_discord.wait_for_response(interaction, lambda s: s.followups)

    assert summary.kinds == ["callback", "edit_original", "edit_original", "followup"]
    assert summary.steps[0].body == {"type": 5}
    assert summary.steps[0].request.query.get("with_response") in ("1", "true", "True")
    assert summary.contents == ["Thinking about life...", "The answer is 42.", "Here is a chart."]
    assert summary.deferred and not summary.loading and summary.content == "The answer is 42."
    (chart,) = summary.files
    assert chart.filename == "chart.png" and chart.data.startswith(b"\x89PNG")
    attachment = summary.followups[0]["attachments"][0]
    assert (attachment["filename"], attachment["size"], attachment["width"]) == ("chart.png", chart.size, 3)
    # The real server echoes interaction messages over the gateway too.
    assert [e["content"] for e in fake_discord.events("MESSAGE_UPDATE")][-1] == "The answer is 42."
    assert fake_discord.violations == []


async def test_subcommand_group_options_and_permissions(fake_discord: FakeDiscord, run_bot: Any) -> None:
    async with run_bot(ThrowawayBot()):
        allowed = await fake_discord.send_interaction(
            "model", {"name": "smollm2", "temperature": 0.2}, subcommand="admin set", permissions="32"
        )
        denied = await fake_discord.send_interaction(
            "model", {"name": "smollm2"}, subcommand="admin set", permissions="0"
        )
        admin = await fake_discord.send_interaction(
            "model", {"name": "big"}, subcommand=["admin", "set"], permissions="8"
        )
        ok = await fake_discord.wait_for_response(allowed)
        no = await fake_discord.wait_for_response(denied)
        yes = await fake_discord.wait_for_response(admin)

    options = allowed.payload["data"]["options"]
    assert options[0]["type"] == 2 and options[0]["options"][0]["type"] == 1
    assert {o["name"]: o["type"] for o in options[0]["options"][0]["options"]} == {"name": 3, "temperature": 10}
    assert ok.callback_type == 4 and ok.content == "default model: smollm2 @ 0.2"
    assert no.ephemeral and no.content == "You need Manage Server."
    assert yes.content == "default model: big @ 0.5"  # Administrator resolves to every permission
    with pytest.raises(ValueError, match="unknown"):
        await fake_discord.send_interaction("ask", {"question": "typo"})


async def test_attachment_option_autocomplete_and_buttons(fake_discord: FakeDiscord, run_bot: Any) -> None:
    async with run_bot(ThrowawayBot()):
        typing = await fake_discord.send_autocomplete("ask", {"prompt": "wh"}, focused="prompt")
        choices = await fake_discord.wait_for_request("POST", f"/interactions/{typing.id}/")
        assert choices.json == {"type": 8, "data": {"choices": [{"name": "wh (suggested)", "value": "wh"}]}}

        upload = await fake_discord.send_interaction("size", {"upload": ("notes.txt", b"12345")})
        sized = await fake_discord.wait_for_response(upload)
        assert sized.content == "notes.txt: 5 bytes" and sized.original is not None
        assert sized.original["components"][0]["components"][0]["custom_id"] == "confirm-ok"

        click = await fake_discord.send_component(sized.original, "confirm-ok")
        clicked = await fake_discord.wait_for_response(click)
    assert clicked.callback_type == 7 and clicked.content == "confirmed"
    assert fake_discord.commands["global"]["model"]["default_member_permissions"] == "32"


async def test_thread_created_and_replied_in(fake_discord: FakeDiscord, run_bot: Any) -> None:
    async with run_bot(ThrowawayBot()) as bot:
        hello = await fake_discord.send_message("hello")
        await fake_discord.wait_for_request("POST", rf"^/channels/\d+/messages/{hello['id']}/threads$")
        thread_id = hello["id"]  # a thread started from a message has the message's id
        assert fake_discord.events("THREAD_CREATE")[0]["id"] == thread_id
        await fake_discord.wait_for_message(thread_id, lambda m: m["content"] == "echo: hello")

        await fake_discord.send_message("again", channel_id=thread_id)
        await fake_discord.wait_for_message(thread_id, lambda m: m["content"] == "in thread: again")
        # A sentinel round trip: had the bot answered its own echoes, those replies would be here by now.
        await fake_discord.send_message("sentinel", channel_id=thread_id)
        await fake_discord.wait_for_message(thread_id, lambda m: m["content"] == "in thread: sentinel")

        replies = [m["content"] for m in fake_discord.bot_messages(thread_id)]
        assert replies == ["echo: hello", "in thread: again", "in thread: sentinel"]
        own = [m for m in bot.seen if bot.user is not None and m.author.id == bot.user.id]
        assert len(own) == 3  # the echoes did reach on_message, and were ignored
        assert all(isinstance(m.channel, discord.Thread) for m in own)


async def test_archiving_threads(fake_discord: FakeDiscord, run_bot: Any) -> None:
    async with run_bot(ThrowawayBot()) as bot:
        thread = await fake_discord.create_thread("support")
        await fake_discord.send_message("close", channel_id=thread["id"])
        patch = await fake_discord.wait_for_request("PATCH", rf"^/channels/{thread['id']}$")
        assert patch.json == {"archived": True}
        assert fake_discord.events("THREAD_UPDATE")[-1]["thread_metadata"]["archived"] is True

        # Posting in an archived thread unarchives it, as on Discord, and the bot sees the message.
        await fake_discord.archive_thread(thread["id"])
        assert bot.get_channel(int(thread["id"])) is None  # discord.py drops archived threads
        await fake_discord.send_message("back", channel_id=thread["id"])
        await fake_discord.wait_for_message(thread["id"], lambda m: m["content"] == "in thread: back")


async def test_plain_text_gateway_and_no_message_content_intent(fake_discord: FakeDiscord, run_bot: Any) -> None:
    fake_discord.zlib_stream = False
    async with run_bot(ThrowawayBot(message_content=False)) as bot:
        secret = await fake_discord.send_message("secret")
        await fake_discord.wait_for_message(secret["id"], lambda m: m["content"] == "echo: ")
        assert bot.seen[0].content == ""  # Discord strips content without the intent
        mention = await fake_discord.send_message(f"{fake_discord.mention(fake_discord.bot_user)} hi")
        await fake_discord.wait_for_message(mention["id"], lambda m: "hi" in m["content"])


async def test_late_interaction_is_rejected_and_errors_are_captured(
    fake_discord: FakeDiscord, run_bot: Any, discord_errors: LogWatch
) -> None:
    async with run_bot(ThrowawayBot()):
        stale = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)
        late = await fake_discord.send_interaction("ask", {"prompt": "x"}, created_at=stale)
        await fake_discord.wait_for_request("POST", "/callback$")
        records = await fake_discord.wait_for(lambda: discord_errors.records, what="an error log")
    assert fake_discord.interaction_response(late).steps[0].request.response["code"] == 10062
    assert "Unknown interaction" in str(records[0].exc_info[1] if records[0].exc_info else "")
    discord_errors.take()


async def test_command_errors_are_logged_and_captured(
    fake_discord: FakeDiscord, run_bot: Any, discord_errors: LogWatch
) -> None:
    async with run_bot(ThrowawayBot()):
        await fake_discord.send_interaction("boom")
        await fake_discord.wait_for(lambda: discord_errors.records, what="the logged error")
    (record,) = discord_errors.take()
    assert record.name.startswith("discord") and "kaboom" in repr(record.exc_info)


async def test_unknown_routes_auth_and_content_type(fake_discord: FakeDiscord) -> None:
    headers = {"Authorization": f"Bot {fake_discord.token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fake_discord.api_base}/users/@me", headers=headers) as resp:
            assert resp.headers["Content-Type"] == "application/json"  # exactly: no charset
        async with http.get(f"{fake_discord.api_base}/users/@me") as resp:
            assert resp.status == 401
        async with http.post(f"{fake_discord.api_base}/voodoo/1", headers=headers, json={}) as resp:
            assert resp.status == 404 and await resp.json() == {"message": "404: Not Found", "code": 0}
        url = f"{fake_discord.api_base}/channels/{fake_discord.channel_id}/messages"
        async with http.post(url, headers=headers, json={"content": "x" * 4001}) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 50035
    assert [str(r) for r in fake_discord.unhandled] == ["POST /voodoo/1 -> 404"]
    assert [v.direction for v in fake_discord.violations] == ["request"]
    assert "maxLength" in fake_discord.violations[0].message
    fake_discord.unhandled.clear()
    fake_discord.violations.clear()


def test_validator_reports_invalid_bodies() -> None:
    validator = load_validator()
    path = "/webhooks/1/token/messages/@original"
    assert validator.validate_request("PATCH", path, {"content": "fine"}) == []
    (too_long,) = validator.validate_request("PATCH", path, {"content": "x" * 2001})
    assert too_long.direction == "request" and re.search(r"\['content'\].*maxLength=2000", too_long.message)
    (callback,) = validator.validate_request("POST", "/interactions/1/t/callback", {"type": 4, "data": {"flags": "x"}})
    assert "['data']['flags']" in callback.message
    (missing,) = validator.validate_response("GET", "/users/@me", 200, {"id": "1"})
    assert "required" in missing.message
    assert validator.validate_response("DELETE", path, 204, None) == []
    # The one tolerated mismatch: default_member_permissions as integer or string in command sync.
    sync = [{"name": "ask", "description": "d", "default_member_permissions": "32"}]
    assert validator.validate_request("PUT", "/applications/1/commands", sync) == []


async def test_thread_auto_archive_and_unarchive_by_a_message(fake_discord: FakeDiscord, run_bot: Any) -> None:
    async with run_bot(ThrowawayBot()) as bot:
        hello = await fake_discord.send_message("hello")
        created = await fake_discord.wait_for_request("POST", rf"^/channels/\d+/messages/{hello['id']}/threads$")
        started = fake_discord.channels[hello["id"]]["thread_metadata"]
        assert started["auto_archive_duration"] == created.json["auto_archive_duration"]  # kept from the body
        short = await fake_discord.create_thread("short-lived", auto_archive_duration=60)
        assert short["thread_metadata"]["auto_archive_duration"] == 60

        await fake_discord.auto_archive(short["id"])
        update = fake_discord.events("THREAD_UPDATE")[-1]
        assert update["id"] == short["id"] and update["thread_metadata"]["archived"] is True
        assert update["thread_metadata"]["locked"] is False
        assert await fake_discord.wait_for(lambda: bot.get_channel(int(short["id"])) is None)
        with pytest.raises(ValueError, match="already archived"):
            await fake_discord.auto_archive(short["id"])

        # A user's message unarchives it (THREAD_UPDATE first, then the message), as on Discord.
        await fake_discord.send_message("still here", channel_id=short["id"])
        names = [e for e, _ in fake_discord.dispatched][-2:]
        assert names == ["THREAD_UPDATE", "MESSAGE_CREATE"]
        assert fake_discord.channels[short["id"]]["thread_metadata"]["archived"] is False
        await fake_discord.wait_for_message(short["id"], lambda m: m["content"] == "in thread: still here")

        # A locked archived thread takes no message from a member without Manage Threads.
        await fake_discord.archive_thread(short["id"], locked=True)
        with pytest.raises(ValueError, match="locked"):
            await fake_discord.send_message("let me in", channel_id=short["id"])


async def test_rate_limit_headers_and_429_bodies(fake_discord: FakeDiscord) -> None:
    headers = {"Authorization": f"Bot {fake_discord.token}"}
    url = f"{fake_discord.api_base}/channels/{fake_discord.channel_id}/messages"
    fake_discord.bucket_limit = 5
    rule = fake_discord.rate_limit("POST", r"/messages$", times=1, retry_after=0.25, bucket="msgs")
    async with aiohttp.ClientSession() as http:
        async with http.post(url, headers=headers, json={"content": "one"}) as resp:
            assert resp.status == 429 and resp.headers["Via"]
            assert await resp.json() == {
                "message": "You are being rate limited.",
                "code": 0,
                "retry_after": 0.25,
                "global": False,
            }
            assert resp.headers["Retry-After"] == "1"  # whole seconds in the header; the body is exact
            assert resp.headers["X-RateLimit-Bucket"] == "msgs" and resp.headers["X-RateLimit-Remaining"] == "0"
            assert resp.headers["X-RateLimit-Scope"] == "user"
            assert float(resp.headers["X-RateLimit-Reset-After"]) == 0.25
        seen = []
        for text in ("two", "three"):
            async with http.post(url, headers=headers, json={"content": text}) as resp:
                assert resp.status == 200
                seen.append({k: v for k, v in resp.headers.items() if k.startswith("X-RateLimit")})
        other = f"{fake_discord.api_base}/channels/{fake_discord.add_channel('other')}/messages"
        async with http.post(other, headers=headers, json={"content": "elsewhere"}) as resp:
            elsewhere = resp.headers
    assert [h["X-RateLimit-Remaining"] for h in seen] == ["4", "3"] and seen[0]["X-RateLimit-Limit"] == "5"
    assert seen[0]["X-RateLimit-Bucket"] == seen[1]["X-RateLimit-Bucket"] != "msgs"  # the route's own bucket
    assert 0 < float(seen[1]["X-RateLimit-Reset-After"]) <= 1.0 and float(seen[1]["X-RateLimit-Reset"]) > 1e9
    # Same bucket, another major parameter (channel): counted apart.
    assert elsewhere["X-RateLimit-Bucket"] == seen[0]["X-RateLimit-Bucket"]
    assert elsewhere["X-RateLimit-Remaining"] == "4"
    assert rule.remaining == 0 and [r.status for r in rule.hits] == [429]
    assert [m["content"] for m in fake_discord.messages_in()] == ["two", "three"]


async def test_discord_py_waits_out_429s_and_exhausted_buckets(fake_discord: FakeDiscord, run_bot: Any) -> None:
    fake_discord.bucket_limit, fake_discord.bucket_window = 2, 0.05  # discord.py waits for the reset itself
    edits = fake_discord.rate_limit("PATCH", r"/@original$", times=2, retry_after=0.01)
    follow = fake_discord.rate_limit("POST", r"^/webhooks/", times=1, retry_after=0.01, global_=True)
    async with run_bot(ThrowawayBot()):
        interaction = await fake_discord.send_interaction("ask", {"prompt": "life"})
        summary = await fake_discord.wait_for_response(interaction, lambda s: s.followups)
    assert [r.status for r in edits.hits + follow.hits] == [429, 429, 429]
    assert [(s.kind, s.request.status) for s in summary.steps] == [
        ("callback", 200),
        ("edit_original", 429),
        ("edit_original", 429),
        ("edit_original", 200),
        ("edit_original", 200),
        ("followup", 429),
        ("followup", 200),
    ]
    assert summary.content == "The answer is 42." and summary.followups[0]["content"] == "Here is a chart."


async def test_reconnect_resumes_and_replays_missed_events(fake_discord: FakeDiscord, run_bot: Any) -> None:
    async with run_bot(ThrowawayBot()) as bot:
        await fake_discord.request_reconnect(wait=False)
        # Sent while the client is reconnecting: it reaches the bot through the RESUME replay.
        missed = await fake_discord.send_message("while away")
        await fake_discord.wait_for(lambda: fake_discord.resume_count == 1, what="RESUME")
        await fake_discord.wait_for_message(missed["id"], lambda m: m["content"] == "echo: while away")
        assert fake_discord.replayed[0] >= 1 and fake_discord.identify_count == 1
        (resume,) = [p["d"] for p in fake_discord.received if p["op"] == 6]
        assert resume["session_id"] == fake_discord.events("READY")[0]["session_id"]
        assert fake_discord.events("RESUMED")

        # op 9 (not resumable): a fresh IDENTIFY and READY; a RESUME of the dead session would be refused.
        bot.before_identify_hook = _no_identify_wait  # type: ignore[method-assign]
        await fake_discord.invalidate_session(resumable=False)
        await fake_discord.wait_for(lambda: len(fake_discord.events("READY")) == 2, what="second READY")
        assert fake_discord.identify_count == 2
        assert await fake_discord.wait_for(lambda: bot.get_guild(int(fake_discord.guild_id)))
        fresh = await fake_discord.send_message("fresh")
        await fake_discord.wait_for_message(fresh["id"], lambda m: m["content"] == "echo: fresh")


async def _no_identify_wait(shard_id: int | None, *, initial: bool = False) -> None:
    """discord.py sleeps 5 s before a re-IDENTIFY (Discord's identify limit); the fake has none."""
