"""A fake Discord (gateway + REST) on 127.0.0.1 that the unmodified discord.py client talks to.

Start it, point discord.py at it (tests/e2e/conftest.py does this), run a bot, then drive it from the
test: `send_interaction`, `send_message`, `archive_thread`, ... and look at `requests`,
`interaction_response`, `messages_in`. Every JSON body in both directions is validated against
Discord's OpenAPI spec; problems are collected in `violations`, `unhandled` and `errors`.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import hashlib
import json
import math
import re
import secrets
import socket
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import BodyPartReader, WSMsgType, web

from . import payloads as P
from .gateway import (
    DISPATCH,
    GUILD_MEMBERS,
    HEARTBEAT,
    HEARTBEAT_ACK,
    HELLO,
    IDENTIFY,
    INVALID_SESSION,
    MESSAGE_CONTENT,
    RECONNECT,
    REQUEST_GUILD_MEMBERS,
    RESUME,
    GatewaySession,
    intent_for,
)
from .openapi import OpenAPIValidator, Violation, load_validator
from .permissions import MEMBER_OVERWRITE, ROLE_OVERWRITE, apply_overwrites, base_permissions, set_overwrite
from .records import ApiError, Interaction, InteractionSummary, RateLimitRule, RecordedFile, RecordedRequest, Step

API_PREFIX = "/api/v10"
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024  # what Discord sends for unboosted guilds
CALLBACK_DEADLINE = dt.timedelta(seconds=3)  # an interaction must be acknowledged within 3 s
TOKEN_LIFETIME = dt.timedelta(minutes=15)  # interaction tokens (followups, @original) expire
MAX_CONTENT = 2000  # the docs' limit (the spec snapshot says 4000 for channel messages)

# Option types of application commands.
OPT_SUB, OPT_GROUP, OPT_STRING, OPT_INTEGER, OPT_BOOLEAN = 1, 2, 3, 4, 5
OPT_USER, OPT_CHANNEL, OPT_ROLE, OPT_MENTIONABLE, OPT_NUMBER, OPT_ATTACHMENT = 6, 7, 8, 9, 10, 11

T = TypeVar("T")
Handler = Callable[["Call"], Awaitable[tuple[int, Any]]]
_MENTION_RE = re.compile(r"<@!?(\d+)>")
_ROLE_MENTION_RE = re.compile(r"<@&(\d+)>")


@dataclass
class Call:
    """A REST call as handlers see it."""

    params: dict[str, str]
    query: Mapping[str, str]
    json: Any
    files: list[RecordedFile]
    record: RecordedRequest


@dataclass
class GuildState:
    id: str
    name: str
    owner_id: str
    joined_at: str
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    channel_ids: list[str] = field(default_factory=list)
    thread_ids: list[str] = field(default_factory=list)
    members: dict[str, dict[str, Any]] = field(default_factory=dict)  # user id -> member (with user)


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class FakeDiscord:
    """The fake server and its world: one guild (`guild_id`) with a text channel (`channel_id`), the bot
    (`bot_user`, a member with its own role) and a human member (`user`)."""

    def __init__(
        self,
        *,
        token: str = "fake-discord-token",
        bot_name: str = "switchboard",
        zlib_stream: bool = True,
        strict_routes: bool = True,
        enforce_deadlines: bool = True,
        validator: OpenAPIValidator | None = None,
    ) -> None:
        self.token = token
        self.zlib_stream = zlib_stream  # answer `compress=zlib-stream` with compressed BINARY frames
        self.strict_routes = strict_routes  # the conftest fixture fails tests that hit unknown routes
        self.enforce_deadlines = enforce_deadlines  # 3 s to acknowledge, 15 min token lifetime
        self.validator = validator if validator is not None else load_validator()
        self._ids = P.Snowflakes()

        self.bot_user: dict[str, Any] = P.user(self._ids.next(), bot_name, bot=True)
        self.application_id: str = self.bot_user["id"]  # modern apps share the bot user's id
        self.users: dict[str, dict[str, Any]] = {self.bot_user["id"]: self.bot_user}
        self.guilds: dict[str, GuildState] = {}
        self.channels: dict[str, dict[str, Any]] = {}  # channels, threads and DMs by id
        self.messages: dict[str, dict[str, Any]] = {}  # by id (deleted ones removed)
        self._channel_messages: dict[str, list[str]] = {}
        self.commands: dict[str, dict[str, dict[str, Any]]] = {"global": {}}  # scope -> name -> command
        self.interactions: dict[str, Interaction] = {}  # by token
        self.cdn: dict[str, tuple[bytes, str]] = {}  # attachment path -> (bytes, content type)
        self.thread_members: dict[str, list[str]] = {}  # thread id -> user ids
        self.closed_dms: set[str] = set()  # users who accept no DMs from the bot (see `close_dms`)

        # What happened: REST calls, spec violations, unknown routes, the fake's own crashes, gateway.
        self.requests: list[RecordedRequest] = []
        self.violations: list[Violation] = []
        self.unhandled: list[RecordedRequest] = []
        self.errors: list[str] = []
        self.dispatched: list[tuple[str, dict[str, Any]]] = []  # (event, data) sent to the bot
        self.received: list[dict[str, Any]] = []  # gateway payloads the bot sent
        self.connections: list[dict[str, Any]] = []  # per gateway connection: {"query": ..., "zlib": bool}
        self.identify_count = 0
        self.resume_count = 0  # successful RESUMEs (op 6 answered with RESUMED)
        self.replayed: list[int] = []  # per RESUME: how many missed dispatches were replayed
        self.log_errors: list[str] = []  # filled by the conftest's log watcher, shown on timeouts
        self.abort_reason: str | None = None  # set when the bot died: waits fail at once
        # Rate limits: every answer carries X-RateLimit-* headers for its route bucket (per major parameter).
        # Generous by default so scenarios are not slowed; lower them to make discord.py wait pre-emptively.
        self.bucket_limit = 1000
        self.bucket_window = 1.0  # seconds
        self.rate_limits: list[RateLimitRule] = []  # see rate_limit()
        self._bucket_use: dict[tuple[str, str], tuple[float, int]] = {}  # (bucket, major) -> (window end, used)
        self._limited: dict[int, RateLimitRule] = {}  # request index -> the rule that answered it 429

        self._sessions: list[GatewaySession] = []
        self._detached: dict[str, GatewaySession] = {}  # resumable sessions whose connection dropped
        self._changed = asyncio.Event()
        self._handling = 0
        self._pending_notify = False
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._register_routes()
        self._runner: web.AppRunner | None = None
        self.port = 0

        self.guild_id = self.add_guild("Switchboard Test")
        self.channel_id = self.guilds[self.guild_id].channel_ids[0]
        self.user: dict[str, Any] = self.add_member("alice")

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        """Value for discord.http.Route.BASE."""
        return f"{self.url}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """Value for discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY (wrap in yarl.URL)."""
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._entry)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def close(self) -> None:
        for session in list(self._sessions):
            await session.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def problems(self) -> list[str]:
        """Everything that should fail a test: spec violations, unknown routes, crashes of the fake."""
        out = [f"OpenAPI violation: {v}" for v in self.violations]
        if self.strict_routes:
            out += [f"unhandled route (the fake answered 404): {r}" for r in self.unhandled]
        out += [f"fake Discord crashed: {e}" for e in self.errors]
        return out

    # ------------------------------------------------------------------ world building

    def add_user(self, username: str, *, bot: bool = False) -> dict[str, Any]:
        """A user who is not a member of any guild (see add_member)."""
        data = P.user(self._ids.next(), username, bot=bot)
        self.users[data["id"]] = data
        return data

    def add_guild(self, name: str = "Guild", *, channels: Iterable[str] = ("general",)) -> str:
        """A guild with @everyone (id == guild id), the bot as a member with a managed role, an owner
        and the given text channels. Returns the guild id. Dispatches GUILD_CREATE if connected."""
        guild_id = self._ids.next()
        owner = self.add_user(f"owner-{len(self.guilds) + 1}")
        guild = GuildState(guild_id, name, owner["id"], P.iso())
        guild.roles[guild_id] = P.role(guild_id, "@everyone", P.EVERYONE_PERMISSIONS)
        bot_role = self._ids.next()
        guild.roles[bot_role] = P.role(bot_role, self.bot_user["username"], P.BOT_PERMISSIONS, position=1, managed=True)
        guild.roles[bot_role]["tags"] = {"bot_id": self.bot_user["id"]}
        self.guilds[guild_id] = guild
        guild.members[owner["id"]] = P.member(owner, [], guild.joined_at)
        guild.members[self.bot_user["id"]] = P.member(self.bot_user, [bot_role], guild.joined_at)
        for channel_name in channels:
            self.add_channel(channel_name, guild_id=guild_id, _dispatch=False)
        if self._connected:
            self._dispatch("GUILD_CREATE", self._guild_create(guild))
        return guild_id

    def add_channel(
        self, name: str, *, guild_id: str | None = None, topic: str | None = None, _dispatch: bool = True
    ) -> str:
        """A text channel; returns its id. Dispatches CHANNEL_CREATE if connected."""
        guild = self.guilds[guild_id or self.guild_id]
        channel_id = self._ids.next()
        data = P.text_channel(channel_id, guild.id, name, len(guild.channel_ids), topic=topic)
        self.channels[channel_id] = data
        guild.channel_ids.append(channel_id)
        if _dispatch and self._connected:
            self._dispatch("CHANNEL_CREATE", data)
        return channel_id

    def add_role(self, name: str, permissions: int | str = 0, *, guild_id: str | None = None) -> str:
        guild = self.guilds[guild_id or self.guild_id]
        role_id = self._ids.next()
        guild.roles[role_id] = P.role(role_id, name, int(permissions), position=len(guild.roles))
        if self._connected:
            self._dispatch("GUILD_ROLE_CREATE", {"guild_id": guild.id, "role": guild.roles[role_id]})
        return role_id

    def add_member(
        self,
        user: str | dict[str, Any],
        *,
        guild_id: str | None = None,
        roles: Iterable[str] = (),
        nick: str | None = None,
        bot: bool = False,
    ) -> dict[str, Any]:
        """Make a user (a username creates one) a member of the guild; returns the user dict."""
        data = self.add_user(user, bot=bot) if isinstance(user, str) else user
        self.users.setdefault(data["id"], data)
        guild = self.guilds[guild_id or self.guild_id]
        guild.members[data["id"]] = P.member(data, list(roles), P.iso(), nick=nick)
        if self._connected:
            self._dispatch("GUILD_MEMBER_ADD", {**guild.members[data["id"]], "guild_id": guild.id})
        return data

    def channel_by_name(self, name: str, guild_id: str | None = None) -> str:
        guild = self.guilds[guild_id or self.guild_id]
        for channel_id in guild.channel_ids + guild.thread_ids:
            if self.channels[channel_id]["name"] == name:
                return channel_id
        raise KeyError(name)

    @staticmethod
    def mention(user: dict[str, Any] | str) -> str:
        """`<@id>` for a user dict or id."""
        return f"<@{user['id'] if isinstance(user, dict) else user}>"

    @property
    def threads(self) -> list[dict[str, Any]]:
        return [c for c in self.channels.values() if c["type"] in P.THREAD_TYPES]

    # ------------------------------------------------------------------ test-facing: inspection

    def messages_in(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        """Current messages of a channel or thread (after edits, without deleted ones), oldest first."""
        ids = self._channel_messages.get(channel_id or self.channel_id, [])
        return [self.messages[i] for i in ids if i in self.messages]

    def bot_messages(self, channel_id: str | None = None) -> list[dict[str, Any]]:
        """messages_in(...) written by the bot (channel messages and interaction responses)."""
        return [m for m in self.messages_in(channel_id) if m["author"]["id"] == self.bot_user["id"]]

    def requests_matching(self, method: str | None = None, pattern: str | None = None) -> list[RecordedRequest]:
        """Answered requests with that method and `re.search(pattern, path)`."""
        return [r for r in self.requests if r.done and r.matches(method, pattern)]

    def events(self, name: str) -> list[dict[str, Any]]:
        """Data of every gateway event of that name sent to the bot."""
        return [d for e, d in self.dispatched if e == name]

    def interaction_response(self, interaction: Interaction) -> InteractionSummary:
        """The bot's answer to an interaction: callback, @original reads/edits/deletes and followups in
        order, plus the current @original and followup messages."""
        token = interaction.token
        steps: list[Step] = []
        for rec in self.requests:
            if token not in rec.path:  # in-flight calls included (their `status` is still None)
                continue
            parts = rec.path.split("/")
            if rec.path.startswith("/interactions/"):
                kind = "callback"
            elif rec.path.endswith("/@original"):
                kind = {"GET": "get_original", "PATCH": "edit_original", "DELETE": "delete_original"}[rec.method]
            elif "/messages/" in rec.path:
                kind = {"GET": "get_followup", "PATCH": "edit_followup", "DELETE": "delete_followup"}[rec.method]
            elif len(parts) == 4 and rec.method == "POST":
                kind = "followup"
            else:
                kind = f"{rec.method.lower()}_webhook"
            steps.append(Step(kind, rec))
        original = self.messages.get(interaction.original_id) if interaction.original_id else None
        followups = [self.messages[i] for i in interaction.followup_ids if i in self.messages]
        return InteractionSummary(
            interaction, steps, interaction.callback_type, original, followups, copy.deepcopy(interaction.modal)
        )

    # ------------------------------------------------------------------ test-facing: waiting

    def _notify(self) -> None:
        if self._handling:  # inside a REST handler: waiters wake once the call is recorded as answered
            self._pending_notify = True
            return
        self._changed.set()
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Wake up waiters (e.g. after state changed outside the fake)."""
        self._notify()

    def abort(self, reason: str) -> None:
        """Make current and future waits fail at once (the bot died)."""
        self.abort_reason = reason
        self._notify()

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0, *, what: str | None = None) -> T:  # noqa: ASYNC109
        """Re-evaluate `predicate()` whenever the fake records something (REST call, gateway frame) until
        it returns a truthy value, which is returned. No polling; fails after `timeout` seconds.

        If the predicate is false at first, the fake first syncs with the bot (see `sync`), so predicates
        on the bot's cache (`bot.get_channel(...)`) work too."""
        result = predicate()
        if result:
            return result
        await self.sync(timeout)
        return await self._wait(predicate, timeout, what)

    async def sync(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Round trip through the gateway: ask for a heartbeat (op 1) and wait for the client's, whose
        sequence number proves it has parsed every event sent so far (its cache is up to date; listener
        tasks may still be running)."""
        await self.flush()
        targets = [(s, s.seq) for s in self._sessions if s.identified and s.client_seq < s.seq]
        for session, _ in targets:
            session.send(HEARTBEAT, session.seq)
        if targets:
            await self._wait(lambda: all(s.client_seq >= seq or s.ws.closed for s, seq in targets), timeout, "sync")

    async def _wait(self, predicate: Callable[[], T], timeout: float, what: str | None) -> T:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if self.abort_reason:
                raise AssertionError(f"bot stopped while waiting for {what or predicate}: {self.abort_reason}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(self._timeout_message(what or repr(predicate), timeout))
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                pass

    def _timeout_message(self, what: str, timeout: float) -> str:
        lines = [f"timed out after {timeout} s waiting for {what}", "recent requests:"]
        lines += [f"  {r}" for r in self.requests[-15:]] or ["  (none)"]
        if self.log_errors:
            lines += ["errors logged by discord.py:", *(f"  {e}" for e in self.log_errors[-5:])]
        if problems := self.problems():
            lines += ["fake problems:", *(f"  {p}" for p in problems[-5:])]
        return "\n".join(lines)

    async def wait_for_request(
        self,
        method: str | None = None,
        pattern: str | None = None,
        *,
        since: int = 0,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> RecordedRequest:
        """The first answered request (index >= since) with that method and `re.search(pattern, path)`."""

        def find() -> RecordedRequest | None:
            return next((r for r in self.requests[since:] if r.done and r.matches(method, pattern)), None)

        found = await self.wait_for(find, timeout, what=f"{method or '*'} {pattern or '*'}")
        assert found is not None
        return found

    async def wait_for_response(
        self,
        interaction: Interaction,
        predicate: Callable[[InteractionSummary], Any] | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 (test-facing API: a plain bound on the wait)
    ) -> InteractionSummary:
        """Wait until `predicate(summary)` holds; by default until @original exists and is not loading."""
        check = predicate or (lambda s: s.original is not None and not s.loading)

        def ready() -> InteractionSummary | None:
            summary = self.interaction_response(interaction)
            settled = all(step.request.done for step in summary.steps)
            return summary if settled and check(summary) else None

        found = await self.wait_for(ready, timeout, what=f"response to /{interaction.name}")
        assert found is not None
        return found

    async def wait_for_message(
        self,
        channel_id: str | None = None,
        predicate: Callable[[dict[str, Any]], Any] | None = None,
        *,
        from_bot: bool = True,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """The first (current) message in the channel matching predicate (default: any), bot's by default."""

        def find() -> dict[str, Any] | None:
            pool = self.bot_messages(channel_id) if from_bot else self.messages_in(channel_id)
            return next((m for m in pool if predicate is None or predicate(m)), None)

        found = await self.wait_for(find, timeout, what=f"a message in {channel_id or self.channel_id}")
        assert found is not None
        return found

    # ------------------------------------------------------------------ test-facing: acting as users

    async def send_interaction(
        self,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        subcommand: str | Iterable[str] | None = None,
        user: dict[str, Any] | None = None,
        permissions: int | str | None = None,
        channel_id: str | None = None,
        created_at: dt.datetime | None = None,
        locale: str = "en-US",
    ) -> Interaction:
        """Dispatch INTERACTION_CREATE for slash command `name` (options typed from the synced command,
        else inferred from the Python values) and return its record once the frame is written.

        subcommand: "sub" or "group sub". permissions: the member's permission bits in the channel
        (default: from roles; Administrator expands to every bit as on Discord). Option values: str,
        int, float, bool, a user dict (USER), a channel id for CHANNEL options, or for ATTACHMENT
        options a (filename, bytes) tuple or an attachment dict from `make_attachment`."""
        channel_id = channel_id or self.channel_id
        path = subcommand.split() if isinstance(subcommand, str) else list(subcommand or ())
        command, scope = self._find_command(name, self.channels[channel_id].get("guild_id"))
        opts, resolved = self._build_options(command, path, dict(options or {}), channel_id)
        data: dict[str, Any] = {
            "id": command["id"] if command else self._ids.next(),
            "name": name,
            "type": 1,
            "options": opts,
        }
        if resolved:
            data["resolved"] = resolved
        if scope != "global":
            data["guild_id"] = scope
        return await self._send_interaction(2, data, name, user, permissions, channel_id, created_at, locale)

    async def send_autocomplete(
        self,
        name: str,
        options: Mapping[str, Any],
        focused: str,
        *,
        subcommand: str | Iterable[str] | None = None,
        user: dict[str, Any] | None = None,
        channel_id: str | None = None,
    ) -> Interaction:
        """APPLICATION_COMMAND_AUTOCOMPLETE with option `focused` being typed; the bot answers type 8."""
        channel_id = channel_id or self.channel_id
        path = subcommand.split() if isinstance(subcommand, str) else list(subcommand or ())
        command, scope = self._find_command(name, self.channels[channel_id].get("guild_id"))
        opts, _ = self._build_options(command, path, dict(options), channel_id, focused=focused)
        data: dict[str, Any] = {"id": command["id"] if command else self._ids.next(), "name": name, "type": 1}
        data["options"] = opts
        if scope != "global":
            data["guild_id"] = scope
        return await self._send_interaction(4, data, name, user, None, channel_id, None, "en-US")

    async def send_component(
        self,
        message: dict[str, Any] | str,
        custom_id: str,
        *,
        component_type: int = 2,
        values: list[str] | None = None,
        user: dict[str, Any] | None = None,
    ) -> Interaction:
        """MESSAGE_COMPONENT interaction: a click on button `custom_id` (or select `values`) of a message."""
        msg = self.messages[message if isinstance(message, str) else message["id"]]
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
        if values is not None:
            data["values"] = values
        it = await self._send_interaction(3, data, custom_id, user, None, msg["channel_id"], None, "en-US", message=msg)
        return it

    async def submit_modal(
        self,
        custom_id: str,
        values: Mapping[str, str],
        *,
        user: dict[str, Any] | None = None,
        guild_id: str | None = None,
        channel_id: str | None = None,
    ) -> Interaction:
        """MODAL_SUBMIT: the user fills in and submits modal `custom_id` (text input custom_id -> value).

        The submit mirrors the layout of the modal the bot showed (action rows or labels) and, like Discord,
        is tied to the interaction that opened it (its channel, and its message for a component). Without a
        shown modal, the values go in action rows in `channel_id` (default: the guild's first channel)."""
        trigger = next(
            (
                it
                for it in reversed(self.interactions.values())
                if it.modal is not None
                and it.modal.get("custom_id") == custom_id
                and (user is None or it.user["id"] == user["id"])
            ),
            None,
        )
        layout = trigger.modal["components"] if trigger is not None and trigger.modal else []
        components = self._modal_values(layout, dict(values))
        message = None
        if trigger is not None:
            user = user or trigger.user
            channel_id = channel_id or trigger.channel_id
            message = self.messages.get(trigger.message_id or "")
        elif channel_id is None and guild_id is not None:
            channel_id = self.guilds[guild_id].channel_ids[0]
        data: dict[str, Any] = {"custom_id": custom_id, "components": components}
        # The same member submits: same permissions as when the modal was opened.
        permissions = (trigger.payload.get("member") or {}).get("permissions") if trigger is not None else None
        it = await self._send_interaction(
            5, data, custom_id, user, permissions, channel_id or self.channel_id, None, "en-US", message=message
        )
        it.trigger = trigger
        return it

    @staticmethod
    def _modal_values(layout: list[dict[str, Any]], values: dict[str, str]) -> list[dict[str, Any]]:
        """Submitted components: each text input of the shown layout with its value, in layout order."""
        out: list[dict[str, Any]] = []
        for item in layout:
            if item.get("type") == 1:
                inputs = [c["custom_id"] for c in item.get("components") or [] if c.get("type") == 4]
                row = [{"type": 4, "custom_id": i, "value": values.pop(i, "")} for i in inputs]
                if row:
                    out.append({"type": 1, "components": row})
            elif item.get("type") == 18 and (inner := item.get("component") or {}).get("type") == 4:
                text_input = {"type": 4, "custom_id": inner["custom_id"], "value": values.pop(inner["custom_id"], "")}
                out.append({"type": 18, "component": text_input})
        # Values for inputs the layout does not name (or no modal shown): one action row each.
        out += [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in values.items()]
        return out

    async def send_message(
        self,
        content: str = "",
        *,
        author: dict[str, Any] | None = None,
        channel_id: str | None = None,
        mentions: Iterable[dict[str, Any] | str] = (),
        attachments: Iterable[dict[str, Any] | tuple[str, bytes]] = (),
        bot: bool = False,
        reply_to: dict[str, Any] | str | None = None,
    ) -> dict[str, Any]:
        """A MESSAGE_CREATE from a human (default `user`; `bot=True` makes the author a bot). Mentions in
        `content` (`<@id>`, see `mention`) and in `mentions` are resolved. Returns the message."""
        channel_id = channel_id or self.channel_id
        channel = self.channels[channel_id]
        if author is None:
            author = self.add_member(f"bot-{len(self.users)}", bot=True) if bot else self.user
        atts = [self.make_attachment(*a, channel_id=channel_id) if isinstance(a, tuple) else a for a in attachments]
        msg = P.message(self._ids.next(), channel_id, author, content, attachments=atts)
        msg["mentions"] = self._mentions(content, mentions)
        msg["mention_roles"] = self._role_mentions(content, channel)
        if reply_to is not None:
            self._set_reference(msg, reply_to if isinstance(reply_to, str) else reply_to["id"])
        msg["nonce"] = str(secrets.randbits(60))
        if channel["type"] in P.THREAD_TYPES and channel["thread_metadata"]["archived"]:
            # A message unarchives the thread; a locked one only takes messages from thread managers.
            if channel["thread_metadata"]["locked"] and not (
                self._permissions(author["id"], channel["guild_id"]) & P.MANAGE_THREADS
            ):
                raise ValueError(f"{author['username']} cannot post in locked archived thread {channel_id}")
            self._unarchive(channel)
        self._store_message(msg)  # dispatches MESSAGE_CREATE
        await self.flush()
        return msg

    def make_attachment(
        self, filename: str, data: bytes, *, content_type: str | None = None, channel_id: str | None = None
    ) -> dict[str, Any]:
        """An attachment object whose `url` serves `data` from this fake (so `Attachment.read()` works)."""
        return self._attachment(channel_id or self.channel_id, filename, data, content_type)

    async def create_thread(
        self,
        name: str,
        *,
        channel_id: str | None = None,
        owner: dict[str, Any] | None = None,
        private: bool = False,
        auto_archive_duration: int = 1440,
    ) -> dict[str, Any]:
        """A thread created by a human (dispatches THREAD_CREATE); it archives after `auto_archive_duration`
        minutes of inactivity (see `auto_archive`)."""
        parent = self.channels[channel_id or self.channel_id]
        owner = owner or self.user
        type_ = P.PRIVATE_THREAD if private else P.PUBLIC_THREAD
        thread = self._new_thread(self._ids.next(), parent, name, owner["id"], type_, auto_archive_duration)
        await self.flush()
        return thread

    async def archive_thread(self, thread_id: str, *, locked: bool = False) -> dict[str, Any]:
        """Archive a thread as a moderator would (dispatches THREAD_UPDATE)."""
        thread = self.channels[thread_id]
        meta = thread["thread_metadata"]
        meta.update(archived=True, archive_timestamp=P.iso(), locked=locked or meta["locked"])
        self._dispatch("THREAD_UPDATE", copy.deepcopy(thread))
        await self.flush()
        return thread

    def rate_limit(
        self,
        method: str | None,
        path_regex: str,
        *,
        times: int = 1,
        retry_after: float = 0.05,
        bucket: str | None = None,
        global_: bool = False,
        scope: str = "user",
    ) -> RateLimitRule:
        """Answer the next `times` requests with that method (None: any) and `re.search(path_regex, path)`
        with 429 as Discord does: body `{"message", "retry_after", "global", "code"}`, `Retry-After` and
        `X-RateLimit-*` headers (`bucket` names the bucket; default: the route's). discord.py sleeps
        `retry_after` and retries (at most 4 times per call). Keep `retry_after` small in tests."""
        rule = RateLimitRule(method, path_regex, times, retry_after, bucket, global_, "global" if global_ else scope)
        self.rate_limits.append(rule)
        return rule

    async def request_reconnect(self, *, wait: bool = True, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Send op 7 RECONNECT (as Discord does before moving a session) and, with `wait`, wait until the
        client has reconnected and RESUMEd. Events dispatched meanwhile are replayed to it on RESUME."""
        resumed = self.resume_count
        for session in self._live_sessions():
            session.send(RECONNECT, None)
        await self.flush()
        if wait:
            await self._wait(lambda: self.resume_count > resumed, timeout, "RESUME after op 7")

    async def invalidate_session(self, resumable: bool, *, wait: bool = True, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Send op 9 INVALID_SESSION and, with `wait`, wait for the client to come back: RESUME when
        `resumable`, else a fresh IDENTIFY (new session, READY and GUILD_CREATEs again; events in between
        are lost)."""
        resumed, identified = self.resume_count, self.identify_count
        for session in self._live_sessions():
            session.resumable = resumable
            session.send(INVALID_SESSION, resumable)
        await self.flush()
        if not wait:
            return
        if resumable:
            await self._wait(lambda: self.resume_count > resumed, timeout, "RESUME after op 9")
        else:
            await self._wait(lambda: self.identify_count > identified, timeout, "IDENTIFY after op 9")

    def _live_sessions(self) -> list[GatewaySession]:
        sessions = [s for s in self._sessions if s.identified]
        if not sessions:
            raise RuntimeError("no client is connected to the gateway")
        return sessions

    async def auto_archive(self, thread_id: str) -> dict[str, Any]:
        """Archive a thread as Discord does once its `auto_archive_duration` of inactivity has passed
        (archived, not locked; dispatches THREAD_UPDATE). A later message unarchives it."""
        thread = self.channels[thread_id]
        meta = thread["thread_metadata"]
        if meta["archived"]:
            raise ValueError(f"thread {thread_id} is already archived")
        meta.update(archived=True, archive_timestamp=P.iso())
        self._dispatch("THREAD_UPDATE", copy.deepcopy(thread))
        await self.flush()
        return thread

    async def flush(self) -> None:
        """Wait until every queued gateway frame has been written."""
        for session in list(self._sessions):
            try:
                await asyncio.wait_for(session.flush(), 5)
            except TimeoutError:
                self.errors.append("gateway frames not written within 5 s")

    # ------------------------------------------------------------------ interactions (internals)

    async def _send_interaction(
        self,
        type_: int,
        data: dict[str, Any],
        name: str,
        user: dict[str, Any] | None,
        permissions: int | str | None,
        channel_id: str,
        created_at: dt.datetime | None,
        locale: str,
        message: dict[str, Any] | None = None,
    ) -> Interaction:
        user = user or self.user
        channel = self.channels[channel_id]
        guild_id = channel.get("guild_id")
        created_at = created_at or _now()
        iid = self._ids.next(at=created_at)
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(48)
        payload: dict[str, Any] = {
            "id": iid,
            "application_id": self.application_id,
            "type": type_,
            "data": data,
            "token": token,
            "version": 1,
            "locale": locale,
            "entitlements": [],
            "authorizing_integration_owners": {"0": guild_id} if guild_id else {"1": user["id"]},
            "context": 0 if guild_id else 1,
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
            "app_permissions": str(self.channel_permissions(self.bot_user["id"], channel_id)),
            "channel_id": channel_id,
            "channel": {**copy.deepcopy(channel), "permissions": None},
        }
        if guild_id:
            guild = self.guilds[guild_id]
            if user["id"] not in guild.members:
                self.add_member(user, guild_id=guild_id)
            perms = self._permissions(user["id"], guild_id) if permissions is None else int(permissions)
            if perms & P.ADMINISTRATOR:
                perms = P.ALL_PERMISSIONS  # Discord resolves Administrator to every permission
            member = copy.deepcopy(guild.members[user["id"]])
            member["permissions"] = str(perms)
            payload.update(
                guild_id=guild_id,
                guild_locale="en-US",
                guild={"id": guild_id, "locale": "en-US", "features": []},
                member=member,
            )
            payload["channel"]["permissions"] = str(perms)
        else:
            payload["user"] = user
            del payload["channel"]["permissions"]
        if message is not None:
            payload["message"] = copy.deepcopy(message)
        it = Interaction(iid, token, self.application_id, type_, name, guild_id, channel_id, user, created_at, payload)
        if message is not None:
            it.message_id = message["id"]
        self.interactions[token] = it
        self._dispatch("INTERACTION_CREATE", payload)
        await self.flush()
        return it

    def _find_command(self, name: str, guild_id: str | None) -> tuple[dict[str, Any] | None, str]:
        if guild_id and name in self.commands.get(guild_id, {}):
            return self.commands[guild_id][name], guild_id
        if name in self.commands["global"]:
            return self.commands["global"][name], "global"
        # Not synced: discord.py still finds a guild or global command through fallback_to_global.
        return None, guild_id or "global"

    def _build_options(
        self,
        command: dict[str, Any] | None,
        path: list[str],
        values: dict[str, Any],
        channel_id: str,
        focused: str | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        defs = (command.get("options") or []) if command else []
        for sub in path:
            match = next((o for o in defs if o["name"] == sub and o["type"] in (OPT_SUB, OPT_GROUP)), None)
            if command and match is None:
                raise ValueError(f"/{command['name']} has no subcommand {sub!r}")
            defs = (match or {}).get("options") or []
        by_name = {o["name"]: o for o in defs}
        if command:
            unknown = set(values) - set(by_name)
            missing = [o["name"] for o in defs if o.get("required") and o["name"] not in values]
            if unknown or (missing and focused is None):
                raise ValueError(f"options do not match the synced command: unknown {unknown}, missing {missing}")
        resolved: dict[str, dict[str, Any]] = {}
        leaf: list[dict[str, Any]] = []
        for opt_name, value in values.items():
            type_ = by_name[opt_name]["type"] if opt_name in by_name else self._infer_type(value)
            leaf.append(self._option(opt_name, type_, value, resolved, channel_id))
            if opt_name == focused:
                leaf[-1]["focused"] = True
                leaf[-1]["value"] = str(value)
        options = leaf
        for depth, sub in reversed(list(enumerate(path))):
            type_ = OPT_GROUP if depth == 0 and len(path) == 2 else OPT_SUB
            options = [{"name": sub, "type": type_, "options": options}]
        return options, resolved

    @staticmethod
    def _infer_type(value: Any) -> int:
        if isinstance(value, bool):
            return OPT_BOOLEAN
        if isinstance(value, int):
            return OPT_INTEGER
        if isinstance(value, float):
            return OPT_NUMBER
        if isinstance(value, tuple) or (isinstance(value, dict) and "filename" in value):
            return OPT_ATTACHMENT
        if isinstance(value, dict) and "username" in value:
            return OPT_USER
        return OPT_STRING

    def _option(
        self, name: str, type_: int, value: Any, resolved: dict[str, dict[str, Any]], channel_id: str
    ) -> dict[str, Any]:
        guild_id = self.channels[channel_id].get("guild_id")
        if type_ == OPT_ATTACHMENT:
            att = self.make_attachment(*value, channel_id=channel_id) if isinstance(value, tuple) else value
            resolved.setdefault("attachments", {})[att["id"]] = att
            value = att["id"]
        elif type_ == OPT_USER or (type_ == OPT_MENTIONABLE and not self._is_role(value, guild_id)):
            user = value if isinstance(value, dict) else self.users[str(value)]
            resolved.setdefault("users", {})[user["id"]] = user
            if guild_id and user["id"] in self.guilds[guild_id].members:
                member = {k: v for k, v in self.guilds[guild_id].members[user["id"]].items() if k != "user"}
                member["permissions"] = str(self._permissions(user["id"], guild_id))
                resolved.setdefault("members", {})[user["id"]] = member
            value = user["id"]
        elif type_ in (OPT_ROLE, OPT_MENTIONABLE):
            role_id = value["id"] if isinstance(value, dict) else str(value)
            resolved.setdefault("roles", {})[role_id] = self.guilds[guild_id or self.guild_id].roles[role_id]
            value = role_id
        elif type_ == OPT_CHANNEL:
            cid = value["id"] if isinstance(value, dict) else str(value)
            ch = self.channels[cid]
            keep = ("id", "name", "type", "parent_id", "thread_metadata")
            resolved.setdefault("channels", {})[cid] = {
                **{k: ch[k] for k in keep if k in ch},
                "permissions": str(P.ALL_PERMISSIONS),
            }
            value = cid
        elif type_ == OPT_INTEGER:
            value = int(value)
        elif type_ == OPT_NUMBER:
            value = float(value)
        elif type_ == OPT_BOOLEAN:
            value = bool(value)
        else:
            value = str(value)
        return {"name": name, "type": type_, "value": value}

    def _is_role(self, value: Any, guild_id: str | None) -> bool:
        role_id = value["id"] if isinstance(value, dict) else str(value)
        return bool(guild_id) and role_id in self.guilds[guild_id or ""].roles

    def _permissions(self, user_id: str, guild_id: str | None) -> int:
        if not guild_id:
            return P.ALL_PERMISSIONS
        guild = self.guilds[guild_id]
        if user_id == guild.owner_id:
            return P.ALL_PERMISSIONS
        perms = int(guild.roles[guild_id]["permissions"])
        for role_id in guild.members.get(user_id, {}).get("roles", []):
            perms |= int(guild.roles[role_id]["permissions"])
        return P.ALL_PERMISSIONS if perms & P.ADMINISTRATOR else perms

    def _interaction(self, token: str, *, app_id: str | None = None, interaction_id: str | None = None) -> Interaction:
        it = self.interactions.get(token)
        if interaction_id is not None:
            if it is None or it.id != interaction_id:
                raise ApiError(404, 10062, "Unknown interaction")
            return it
        if it is None or app_id != self.application_id:
            raise ApiError(404, 10015, "Unknown Webhook")
        if self.enforce_deadlines and _now() - it.created_at > TOKEN_LIFETIME:
            raise ApiError(401, 50027, "Invalid Webhook Token")
        return it

    # ------------------------------------------------------------------ gateway

    @property
    def _connected(self) -> bool:
        return any(s.identified for s in self._sessions)

    def _dispatch(self, event: str, data: dict[str, Any]) -> None:
        self.dispatched.append((event, data))
        for session in [*self._sessions, *self._detached.values()]:  # detached ones log it for RESUME
            if not session.identified:
                continue
            need = intent_for(event, data)
            if need and not session.intents & need:
                continue
            out = data
            if event in ("MESSAGE_CREATE", "MESSAGE_UPDATE") and not session.intents & MESSAGE_CONTENT:
                out = self._without_content(data)
            session.send(DISPATCH, out, event)
        self._notify()

    def _without_content(self, msg: dict[str, Any]) -> dict[str, Any]:
        """What Discord sends a bot without the MESSAGE_CONTENT intent."""
        me = self.bot_user["id"]
        if msg["author"]["id"] == me or not msg.get("guild_id") or any(u["id"] == me for u in msg["mentions"]):
            return msg
        return {**msg, "content": "", "embeds": [], "attachments": [], "components": []}

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        zlib_stream = self.zlib_stream and request.query.get("compress") == "zlib-stream"
        session = GatewaySession(ws, zlib_stream=zlib_stream)
        self.connections.append({"query": dict(request.query), "zlib": zlib_stream})
        self._sessions.append(session)
        session.send(HELLO, {"heartbeat_interval": 41250, "_trace": ["fake-discord"]})
        try:
            async for frame in ws:
                if frame.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                payload = json.loads(frame.data)
                self.received.append(payload)
                await self._gateway_op(session, payload)
                self._notify()
        except Exception:
            self.errors.append("gateway handler: " + traceback.format_exc())
        finally:
            self._sessions.remove(session)
            # Discord keeps a session resumable unless the client closed it with 1000/1001.
            if session.identified and session.resumable and ws.close_code not in (1000, 1001):
                session.detached = True
                self._detached[session.session_id] = session
            await session.close()
            self._notify()
        return ws

    async def _gateway_op(self, session: GatewaySession, payload: dict[str, Any]) -> None:
        op = payload.get("op")
        data: Any = payload.get("d")
        if op == HEARTBEAT:
            session.client_seq = max(session.client_seq, int(data or 0))
            session.send(HEARTBEAT_ACK, None)
        elif op == IDENTIFY:
            if data.get("token") != self.token:
                await session.ws.close(code=4004, message=b"Authentication failed.")
                return
            self.identify_count += 1
            session.identified = True
            session.intents = int(data.get("intents", 0))
            ready: dict[str, Any] = {
                "v": 10,
                "user": P.private_user(self.bot_user),
                "guilds": [{"id": g, "unavailable": True} for g in self.guilds],
                "session_id": session.session_id,
                "resume_gateway_url": self.gateway_url,
                "application": {"id": self.application_id, "flags": 0},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "user_settings": {},
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": ["fake"],
                "_trace": ["fake-discord"],
            }
            if "shard" in data:
                ready["shard"] = data["shard"]
            session.send(DISPATCH, ready, "READY")
            for guild in self.guilds.values():
                session.send(DISPATCH, self._guild_create(guild), "GUILD_CREATE")
            self.dispatched.append(("READY", ready))
        elif op == RESUME:
            old = self._detached.pop(str(data.get("session_id")), None)
            if data.get("token") != self.token:
                await session.ws.close(code=4004, message=b"Authentication failed.")
                return
            if old is None:  # unknown or invalidated session: the client must IDENTIFY afresh
                session.send(INVALID_SESSION, False)
                return
            self.replayed.append(session.resume(old, int(data.get("seq") or 0)))
            self.resume_count += 1
            resumed = {"_trace": ["fake-discord"]}
            session.send(DISPATCH, resumed, "RESUMED")
            self.dispatched.append(("RESUMED", resumed))
        elif op == REQUEST_GUILD_MEMBERS:
            guild = self.guilds[str(data["guild_id"])]
            chunk: dict[str, Any] = {
                "guild_id": guild.id,
                "members": list(guild.members.values()) if session.intents & GUILD_MEMBERS else [],
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
            }
            if data.get("presences"):
                chunk["presences"] = []
            if "nonce" in data:
                chunk["nonce"] = data["nonce"]
            session.send(DISPATCH, chunk, "GUILD_MEMBERS_CHUNK")
        # PRESENCE_UPDATE (3), VOICE_STATE_UPDATE (4) and others: recorded in `received`, no answer.

    def _guild_create(self, guild: GuildState) -> dict[str, Any]:
        return {
            "id": guild.id,
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": guild.owner_id,
            "application_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
            "system_channel_id": guild.channel_ids[0] if guild.channel_ids else None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "widget_enabled": False,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "vanity_url_code": None,
            "max_members": 500000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": list(guild.roles.values()),
            "joined_at": guild.joined_at,
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members),  # == len(members): discord.py need not chunk
            "voice_states": [],
            "members": list(guild.members.values()),
            "channels": [self.channels[c] for c in guild.channel_ids],
            "threads": [
                self.channels[t] for t in guild.thread_ids if not self.channels[t]["thread_metadata"]["archived"]
            ],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "incidents_data": None,
        }

    # ------------------------------------------------------------------ HTTP entry

    async def _entry(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._gateway(request)
        if path.startswith(API_PREFIX + "/"):
            return await self._rest(request, path[len(API_PREFIX) :])
        if path.startswith("/attachments/") and path in self.cdn:
            data, content_type = self.cdn[path]
            return web.Response(body=data, headers={"Content-Type": content_type})
        return web.Response(status=404, text="not found")

    async def _read_body(self, request: web.Request) -> tuple[Any, list[RecordedFile], str]:
        ctype = request.content_type
        if ctype.startswith("multipart/"):
            body: Any = None
            files: list[RecordedFile] = []
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader) or part.name is None:
                    continue
                raw = await part.read(decode=True)
                if part.name == "payload_json":
                    body = json.loads(raw)
                else:
                    files.append(
                        RecordedFile(
                            part.name,
                            part.filename or part.name,
                            part.headers.get("Content-Type", "application/octet-stream"),
                            bytes(raw),
                        )
                    )
            return body, files, "multipart/form-data"
        raw = await request.read()
        if not raw:
            return None, [], ctype
        return json.loads(raw), [], ctype

    async def _rest(self, request: web.Request, path: str) -> web.Response:
        method = request.method
        try:
            body, files, ctype = await self._read_body(request)
        except ValueError as exc:
            body, files, ctype = None, [], "invalid"
            self.violations.append(Violation(method, path, "request", f"body is not valid JSON: {exc}"))
        record = RecordedRequest(len(self.requests), method, path, dict(request.query), body, files)
        op = self.validator.operation(method, path)
        record.route = op.template if op else None
        self.requests.append(record)

        handler, params = self._match(method, path)
        status: int
        out: Any
        if handler is None:
            record.handled = False
            self.unhandled.append(record)
            status, out = 404, {"message": "404: Not Found", "code": 0}
        else:
            if ctype != "invalid":
                self.violations += self.validator.validate_request(method, path, body, ctype)
            self._handling += 1
            try:
                self._check_auth(request, path)
                self._check_rate_limit(record)
                status, out = await handler(Call(params, request.query, body, files, record))
            except ApiError as exc:
                status, out = exc.status, exc.body
            except Exception:
                self.errors.append(f"{method} {path}: {traceback.format_exc()}")
                status, out = 500, {"message": "500: Internal Server Error", "code": 0}
            finally:
                self._handling -= 1
            if status < 500:
                self.violations += self.validator.validate_response(method, path, status, out)
        record.status, record.response = status, copy.deepcopy(out)
        self._pending_notify = False
        self._notify()
        headers = self._rate_limit_headers(record) if record.handled else {}
        if out is None:
            return web.Response(status=status, headers=headers)
        # Exactly "application/json": discord.py treats "application/json; charset=utf-8" as text.
        headers["Content-Type"] = "application/json"
        return web.Response(status=status, body=json.dumps(out).encode(), headers=headers)

    # ------------------------------------------------------------------ rate limits

    def _check_rate_limit(self, record: RecordedRequest) -> None:
        """Raise the 429 of the first active `rate_limit` rule the request matches."""
        for rule in self.rate_limits:
            if rule.remaining > 0 and record.matches(rule.method, rule.pattern):
                rule.hits.append(record)
                self._limited[record.index] = rule
                exc = ApiError(429, 0, "You are being rate limited.")
                exc.body.update(rule.body())
                raise exc

    @staticmethod
    def _major(path: str) -> str:
        """The major parameter Discord keys buckets on: channel, guild, or webhook/interaction + token."""
        found = re.match(r"^/(?:channels|guilds)/(\d+)|^/(?:webhooks|interactions)/(\d+/[^/]+)", path)
        return (found.group(1) or found.group(2)) if found else ""

    def _rate_limit_headers(self, record: RecordedRequest) -> dict[str, str]:
        """Discord's rate-limit headers for an answered request (Via marks it as Discord's, not Cloudflare's)."""
        headers = {"Via": "1.1 google"}
        rule = self._limited.pop(record.index, None)
        if rule is not None:
            headers["Retry-After"] = str(max(1, math.ceil(rule.retry_after)))  # whole seconds, as Discord sends
            headers["X-RateLimit-Scope"] = rule.scope
            if rule.global_:  # a global limit is not a route bucket's
                headers["X-RateLimit-Global"] = "true"
                return headers
        template = f"{record.method} {record.route or record.path}"
        bucket = (rule.bucket if rule else None) or hashlib.blake2b(template.encode(), digest_size=16).hexdigest()
        now = asyncio.get_running_loop().time()
        key = (bucket, self._major(record.path))
        end, used = self._bucket_use.get(key, (0.0, 0))
        if now >= end:
            end, used = now + self.bucket_window, 0
        if rule is None:
            used += 1
        self._bucket_use[key] = (end, used)
        reset_after = rule.retry_after if rule else end - now
        headers.update(
            {
                "X-RateLimit-Limit": str(self.bucket_limit),
                "X-RateLimit-Remaining": str(0 if rule else max(0, self.bucket_limit - used)),
                "X-RateLimit-Reset": f"{dt.datetime.now(dt.UTC).timestamp() + reset_after:.3f}",
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Bucket": bucket,
            }
        )
        return headers

    def _check_auth(self, request: web.Request, path: str) -> None:
        if path.startswith(("/interactions/", "/webhooks/")):
            return  # authenticated by the token in the path
        if request.headers.get("Authorization") != f"Bot {self.token}":
            raise ApiError(401, 0, "401: Unauthorized")

    def _route(self, method: str, template: str, handler: Handler) -> None:
        parts = [f"(?P<{seg[1:-1]}>[^/]+)" if seg.startswith("{") else re.escape(seg) for seg in template.split("/")]
        self._routes.append((method, re.compile("/".join(parts) + "$"), handler))

    def _match(self, method: str, path: str) -> tuple[Handler | None, dict[str, str]]:
        for m, rx, handler in self._routes:
            if m == method and (found := rx.match(path)):
                return handler, found.groupdict()
        return None, {}

    def _register_routes(self) -> None:
        r = self._route
        r("GET", "/gateway", self._get_gateway)
        r("GET", "/gateway/bot", self._get_gateway_bot)
        r("GET", "/users/@me", self._get_me)
        r("POST", "/users/@me/channels", self._create_dm)
        r("GET", "/users/{user_id}", self._get_user)
        r("GET", "/oauth2/applications/@me", self._get_application)
        r("GET", "/applications/@me", self._get_application)
        for prefix in ("/applications/{app}", "/applications/{app}/guilds/{guild_id}"):
            r("GET", f"{prefix}/commands", self._get_commands)
            r("PUT", f"{prefix}/commands", self._put_commands)
            r("POST", f"{prefix}/commands", self._post_command)
            r("GET", f"{prefix}/commands/{{command_id}}", self._get_command)
            r("PATCH", f"{prefix}/commands/{{command_id}}", self._patch_command)
            r("DELETE", f"{prefix}/commands/{{command_id}}", self._delete_command)
        r("POST", "/interactions/{interaction_id}/{token}/callback", self._callback)
        r("GET", "/webhooks/{app}/{token}/messages/@original", self._get_original)
        r("PATCH", "/webhooks/{app}/{token}/messages/@original", self._edit_original)
        r("DELETE", "/webhooks/{app}/{token}/messages/@original", self._delete_original)
        r("GET", "/webhooks/{app}/{token}/messages/{message_id}", self._get_followup)
        r("PATCH", "/webhooks/{app}/{token}/messages/{message_id}", self._edit_followup)
        r("DELETE", "/webhooks/{app}/{token}/messages/{message_id}", self._delete_followup)
        r("POST", "/webhooks/{app}/{token}", self._followup)
        r("GET", "/channels/{channel_id}", self._get_channel)
        r("PATCH", "/channels/{channel_id}", self._patch_channel)
        r("DELETE", "/channels/{channel_id}", self._delete_channel)
        r("GET", "/channels/{channel_id}/messages", self._get_messages)
        r("POST", "/channels/{channel_id}/messages", self._post_message)
        r("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message)
        r("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message)
        r("POST", "/channels/{channel_id}/messages/{message_id}/threads", self._thread_from_message)
        r("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._add_reaction)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me", self._remove_reaction)
        r("POST", "/channels/{channel_id}/threads", self._thread_without_message)
        r("POST", "/channels/{channel_id}/typing", self._typing)
        r("PUT", "/channels/{channel_id}/thread-members/{user_id}", self._add_thread_member)
        r("DELETE", "/channels/{channel_id}/thread-members/{user_id}", self._remove_thread_member)
        r("GET", "/guilds/{guild_id}", self._get_guild)
        r("GET", "/guilds/{guild_id}/channels", self._get_guild_channels)
        r("GET", "/guilds/{guild_id}/roles", self._get_roles)
        r("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member)
        r("GET", "/guilds/{guild_id}/threads/active", self._get_active_threads)

    # ------------------------------------------------------------------ REST: users, application, gateway

    async def _get_gateway(self, c: Call) -> tuple[int, Any]:
        return 200, {"url": self.gateway_url}

    async def _get_gateway_bot(self, c: Call) -> tuple[int, Any]:
        limit = {"total": 1000, "remaining": 999, "reset_after": 14400000, "max_concurrency": 1}
        return 200, {"url": self.gateway_url, "shards": 1, "session_start_limit": limit}

    async def _get_me(self, c: Call) -> tuple[int, Any]:
        return 200, P.private_user(self.bot_user)

    async def _get_user(self, c: Call) -> tuple[int, Any]:
        found = self.users.get(c.params["user_id"])
        if found is None:
            raise ApiError(404, 10013, "Unknown User")
        return 200, found

    async def _get_application(self, c: Call) -> tuple[int, Any]:
        owner = self.users[self.guilds[self.guild_id].owner_id]
        return 200, {
            "id": self.application_id,
            "name": self.bot_user["username"],
            "icon": None,
            "description": "",
            "type": None,
            "bot": self.bot_user,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": 0,
            "flags_new": "0",
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "owner": owner,
            "approximate_guild_count": len(self.guilds),
            "approximate_user_install_count": 0,
            "approximate_user_authorization_count": 0,
            "explicit_content_filter": 0,
            "team": None,
            "eligible_oauth2_scopes": [],
            "integration_types_config": {"0": {}},
            "tags": [],
        }

    async def _create_dm(self, c: Call) -> tuple[int, Any]:
        recipient = self.users.get(str(c.json["recipient_id"]))
        if recipient is None:
            raise ApiError(404, 10013, "Unknown User")
        return 200, self.channels[self.dm_channel(recipient)]

    # ------------------------------------------------------------------ REST: application commands

    def _command_scope(self, c: Call) -> str:
        if c.params["app"] != self.application_id:
            raise ApiError(403, 50001, "Missing Access")
        guild_id = c.params.get("guild_id")
        if guild_id is not None and guild_id not in self.guilds:
            raise ApiError(403, 50001, "Missing Access")
        return guild_id or "global"

    def _command(self, scope: str, body: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        perms = body.get("default_member_permissions")
        cmd: dict[str, Any] = {
            "id": old["id"] if old else self._ids.next(),
            "application_id": self.application_id,
            "version": self._ids.next(),
            # discord.py sends an integer; Discord answers with a string (as the response schema says).
            "default_member_permissions": None if perms is None else str(perms),
            "type": body.get("type") or 1,
            "name": body["name"],
            "name_localizations": body.get("name_localizations"),
            "description": body.get("description") or "",
            "description_localizations": body.get("description_localizations"),
            "nsfw": bool(body.get("nsfw", False)),
            "integration_types": body.get("integration_types") or [0],
            "contexts": body.get("contexts"),
        }
        if body.get("options"):
            cmd["options"] = body["options"]
        if scope == "global":
            cmd["dm_permission"] = body.get("dm_permission") if body.get("dm_permission") is not None else True
        else:
            cmd["guild_id"] = scope
        return cmd

    async def _get_commands(self, c: Call) -> tuple[int, Any]:
        return 200, list(self.commands.get(self._command_scope(c), {}).values())

    async def _put_commands(self, c: Call) -> tuple[int, Any]:
        scope = self._command_scope(c)
        old = self.commands.get(scope, {})
        new: dict[str, dict[str, Any]] = {}
        for body in c.json or []:
            new[body["name"]] = self._command(scope, body, old.get(body["name"]))
        self.commands[scope] = new
        return 200, list(new.values())

    async def _post_command(self, c: Call) -> tuple[int, Any]:
        scope = self._command_scope(c)
        cmds = self.commands.setdefault(scope, {})
        old = cmds.get(c.json["name"])
        cmds[c.json["name"]] = self._command(scope, c.json, old)
        return (200 if old else 201), cmds[c.json["name"]]

    def _command_by_id(self, scope: str, command_id: str) -> dict[str, Any]:
        for cmd in self.commands.get(scope, {}).values():
            if cmd["id"] == command_id:
                return cmd
        raise ApiError(404, 10063, "Unknown application command")

    async def _get_command(self, c: Call) -> tuple[int, Any]:
        return 200, self._command_by_id(self._command_scope(c), c.params["command_id"])

    async def _patch_command(self, c: Call) -> tuple[int, Any]:
        scope = self._command_scope(c)
        cmd = self._command_by_id(scope, c.params["command_id"])
        body = {**cmd, **c.json}
        del self.commands[scope][cmd["name"]]
        self.commands[scope][body["name"]] = self._command(scope, body, cmd)
        return 200, self.commands[scope][body["name"]]

    async def _delete_command(self, c: Call) -> tuple[int, Any]:
        scope = self._command_scope(c)
        cmd = self._command_by_id(scope, c.params["command_id"])
        del self.commands[scope][cmd["name"]]
        return 204, None

    # ------------------------------------------------------------------ REST: interaction responses

    async def _callback(self, c: Call) -> tuple[int, Any]:
        it = self._interaction(c.params["token"], interaction_id=c.params["interaction_id"])
        if self.enforce_deadlines and it.callback_type is None and _now() - it.created_at > CALLBACK_DEADLINE:
            raise ApiError(404, 10062, "Unknown interaction")
        if it.callback_type is not None:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        body = c.json or {}
        type_ = body.get("type")
        allowed = {2: (4, 5, 9), 3: (4, 5, 6, 7, 9), 4: (8,), 5: (4, 5, 6, 7)}[it.type]
        if type_ not in allowed:
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {"type": {"_errors": [{"code": "BASE_TYPE_CHOICES", "message": f"Value must be one of {allowed}."}]}},
            )
        data = body.get("data") or {}
        it.callback_type = type_
        resource: dict[str, Any] | None = None
        info: dict[str, Any] = {"id": it.id, "type": it.type}
        if type_ in (4, 5):
            flags = (data.get("flags") or 0) & P.FLAG_EPHEMERAL
            if type_ == 5:
                msg = self._interaction_message(it, {}, [], flags=flags | P.FLAG_LOADING, allow_empty=True)
            else:
                msg = self._interaction_message(it, data, c.files, flags=flags)
                resource = {"type": 4, "message": msg}
            it.original_id = msg["id"]
            info.update(
                response_message_id=msg["id"],
                response_message_loading=type_ == 5,
                response_message_ephemeral=bool(flags),
            )
        elif type_ == 9:
            it.modal = copy.deepcopy(data)  # shown to the user; `submit_modal` answers it
        elif type_ in (6, 7):
            it.original_id = it.message_id
            if type_ == 7 and it.message_id:
                msg = self._edit(self.messages[it.message_id], data, c.files)
                resource = {"type": 7, "message": msg}
            info.update(
                response_message_id=it.message_id, response_message_loading=False, response_message_ephemeral=False
            )
        await self.flush()
        if not _truthy(c.query.get("with_response")):
            return 204, None
        out: dict[str, Any] = {"interaction": info}
        if resource is not None:
            out["resource"] = resource
        return 200, out

    def _interaction_message(
        self,
        it: Interaction,
        data: dict[str, Any],
        files: list[RecordedFile],
        *,
        flags: int,
        allow_empty: bool = False,
    ) -> dict[str, Any]:
        msg = self._build_message(
            it.channel_id,
            self.bot_user,
            data,
            files,
            type_=20 if it.type == 2 else 0,
            flags=flags,
            allow_empty=allow_empty,
        )
        msg["webhook_id"] = self.application_id
        msg["application_id"] = self.application_id
        msg["interaction_metadata"] = self._interaction_metadata(it)
        msg["interaction"] = {"id": it.id, "type": it.type, "name": it.name, "user": it.user}
        self._store_message(msg, echo=not flags & P.FLAG_EPHEMERAL)
        return msg

    def _interaction_metadata(self, it: Interaction) -> dict[str, Any]:
        """A message's `interaction_metadata`: per interaction type, as Discord shapes it."""
        meta: dict[str, Any] = {
            "id": it.id,
            "type": it.type,
            "user": it.user,
            "authorizing_integration_owners": it.payload["authorizing_integration_owners"],
        }
        if it.type == 3 and it.message_id:
            meta["interacted_message_id"] = it.message_id
        if it.type == 5 and it.trigger is not None:
            meta["triggering_interaction_metadata"] = self._interaction_metadata(it.trigger)
        return meta

    def _original(self, c: Call) -> tuple[Interaction, dict[str, Any]]:
        it = self._interaction(c.params["token"], app_id=c.params["app"])
        msg = self.messages.get(it.original_id or "")
        if msg is None:
            raise ApiError(404, 10008, "Unknown Message")
        return it, msg

    async def _get_original(self, c: Call) -> tuple[int, Any]:
        return 200, self._original(c)[1]

    async def _edit_original(self, c: Call) -> tuple[int, Any]:
        _, msg = self._original(c)
        msg = self._edit(msg, c.json or {}, c.files)
        await self.flush()
        return 200, msg

    async def _delete_original(self, c: Call) -> tuple[int, Any]:
        _, msg = self._original(c)
        self._delete(msg)
        await self.flush()
        return 204, None

    def _followup_message(self, c: Call) -> dict[str, Any]:
        it = self._interaction(c.params["token"], app_id=c.params["app"])
        mid = c.params["message_id"]
        if mid not in it.followup_ids or mid not in self.messages:
            raise ApiError(404, 10008, "Unknown Message")
        return self.messages[mid]

    async def _get_followup(self, c: Call) -> tuple[int, Any]:
        return 200, self._followup_message(c)

    async def _edit_followup(self, c: Call) -> tuple[int, Any]:
        msg = self._edit(self._followup_message(c), c.json or {}, c.files)
        await self.flush()
        return 200, msg

    async def _delete_followup(self, c: Call) -> tuple[int, Any]:
        self._delete(self._followup_message(c))
        await self.flush()
        return 204, None

    async def _followup(self, c: Call) -> tuple[int, Any]:
        it = self._interaction(c.params["token"], app_id=c.params["app"])
        if it.callback_type is None:
            raise ApiError(404, 10015, "Unknown Webhook")
        body = c.json or {}
        target = c.query.get("thread_id") or it.channel_id
        msg = self._build_message(
            target,
            self.bot_user,
            body,
            c.files,
            type_=20 if it.type == 2 else 0,
            flags=(body.get("flags") or 0) & P.FLAG_EPHEMERAL,
        )
        msg["webhook_id"] = self.application_id
        msg["application_id"] = self.application_id
        msg["interaction_metadata"] = self._interaction_metadata(it)
        self._store_message(msg, echo=not msg["flags"] & P.FLAG_EPHEMERAL)
        it.followup_ids.append(msg["id"])
        await self.flush()
        return (200, msg) if _truthy(c.query.get("wait")) else (204, None)

    # ------------------------------------------------------------------ REST: channels and messages

    def _channel(self, channel_id: str) -> dict[str, Any]:
        ch = self.channels.get(channel_id)
        if ch is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return ch

    def _message(self, channel_id: str, message_id: str) -> dict[str, Any]:
        self._channel(channel_id)
        msg = self.messages.get(message_id)
        if msg is None or msg["channel_id"] != channel_id:
            raise ApiError(404, 10008, "Unknown Message")
        return msg

    async def _get_channel(self, c: Call) -> tuple[int, Any]:
        channel = self._channel(c.params["channel_id"])
        self._require(channel["id"], 0)
        return 200, channel

    async def _patch_channel(self, c: Call) -> tuple[int, Any]:
        ch = self._channel(c.params["channel_id"])
        body = c.json or {}
        if ch["type"] in P.THREAD_TYPES:
            meta = ch["thread_metadata"]
            for key in ("archived", "locked", "auto_archive_duration", "invitable"):
                if body.get(key) is not None:
                    meta[key] = body[key]
            if body.get("archived") is not None:
                meta["archive_timestamp"] = P.iso()
            event = "THREAD_UPDATE"
        else:
            for key in ("topic", "nsfw", "position"):
                if key in body:
                    ch[key] = body[key]
            event = "CHANNEL_UPDATE"
        for key in ("name", "rate_limit_per_user", "flags"):
            if body.get(key) is not None:
                ch[key] = body[key]
        self._dispatch(event, copy.deepcopy(ch))
        await self.flush()
        return 200, ch

    async def _delete_channel(self, c: Call) -> tuple[int, Any]:
        ch = self._channel(c.params["channel_id"])
        del self.channels[ch["id"]]
        if ch.get("guild_id"):
            guild = self.guilds[ch["guild_id"]]
            for ids in (guild.channel_ids, guild.thread_ids):
                if ch["id"] in ids:
                    ids.remove(ch["id"])
        self._dispatch("THREAD_DELETE" if ch["type"] in P.THREAD_TYPES else "CHANNEL_DELETE", ch)
        await self.flush()
        return 200, ch

    async def _get_messages(self, c: Call) -> tuple[int, Any]:
        self._channel(c.params["channel_id"])
        msgs = self.messages_in(c.params["channel_id"])
        if "before" in c.query:
            msgs = [m for m in msgs if int(m["id"]) < int(c.query["before"])]
        if "after" in c.query:
            msgs = [m for m in msgs if int(m["id"]) > int(c.query["after"])]
        limit = int(c.query.get("limit", 50))
        newest_first = list(reversed(msgs))
        if "after" in c.query:  # Discord returns the oldest `limit` after the id, newest first
            newest_first = newest_first[-limit:]
        return 200, newest_first[:limit]

    async def _get_message(self, c: Call) -> tuple[int, Any]:
        msg = self._message(c.params["channel_id"], c.params["message_id"])
        self._require(msg["channel_id"], P.READ_MESSAGE_HISTORY)
        return 200, msg

    async def _post_message(self, c: Call) -> tuple[int, Any]:
        ch = self._channel(c.params["channel_id"])
        body = c.json or {}
        self._check_post(ch, body)
        if ch["type"] in P.THREAD_TYPES and ch["thread_metadata"]["archived"]:
            self._unarchive(ch)  # sending in an archived thread unarchives it (the bot can manage threads)
        ref = body.get("message_reference")
        msg = self._build_message(ch["id"], self.bot_user, body, c.files, type_=19 if ref else 0)
        if ref:
            self._set_reference(msg, str(ref["message_id"]), str(ref.get("channel_id") or ch["id"]))
        if body.get("nonce") is not None:
            msg["nonce"] = body["nonce"]
        self._store_message(msg)
        await self.flush()
        return 200, msg

    async def _patch_message(self, c: Call) -> tuple[int, Any]:
        msg = self._message(c.params["channel_id"], c.params["message_id"])
        if msg["author"]["id"] != self.bot_user["id"] or msg.get("webhook_id"):
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        msg = self._edit(msg, c.json or {}, c.files)
        await self.flush()
        return 200, msg

    async def _delete_message(self, c: Call) -> tuple[int, Any]:
        self._delete(self._message(c.params["channel_id"], c.params["message_id"]))
        await self.flush()
        return 204, None

    async def _add_reaction(self, c: Call) -> tuple[int, Any]:
        msg = self._message(c.params["channel_id"], c.params["message_id"])
        name = c.params["emoji"]
        emoji: dict[str, Any] = {"id": None, "name": name}
        if ":" in name:  # custom emoji "name:id"
            emoji = {"name": name.split(":")[0], "id": name.split(":")[1]}
        reactions = msg.setdefault("reactions", [])
        entry = next((r for r in reactions if r["emoji"] == emoji), None)
        if entry is None:
            entry = {"emoji": emoji, "count": 0, "me": False, "count_details": {"burst": 0, "normal": 0}}
            entry.update(me_burst=False, burst_colors=[], burst_count=0)
            reactions.append(entry)
        if not entry["me"]:
            entry.update(me=True, count=entry["count"] + 1)
            entry["count_details"]["normal"] += 1
            event = {
                "user_id": self.bot_user["id"],
                "channel_id": msg["channel_id"],
                "message_id": msg["id"],
                "emoji": emoji,
                "burst": False,
                "type": 0,
            }
            if gid := self.channels[msg["channel_id"]].get("guild_id"):
                event["guild_id"] = gid
            self._dispatch("MESSAGE_REACTION_ADD", event)
        await self.flush()
        return 204, None

    async def _remove_reaction(self, c: Call) -> tuple[int, Any]:
        msg = self._message(c.params["channel_id"], c.params["message_id"])
        name = c.params["emoji"]
        for r in msg.get("reactions", []):
            if r["emoji"]["name"] == name.split(":")[0] and r["me"]:
                r.update(me=False, count=r["count"] - 1)
        msg["reactions"] = [r for r in msg.get("reactions", []) if r["count"] > 0]
        return 204, None

    async def _typing(self, c: Call) -> tuple[int, Any]:
        self._channel(c.params["channel_id"])
        return 204, None

    # ------------------------------------------------------------------ REST: threads

    async def _thread_from_message(self, c: Call) -> tuple[int, Any]:
        parent = self._channel(c.params["channel_id"])
        starter = self._message(parent["id"], c.params["message_id"])
        if "thread" in starter:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        body = c.json or {}
        duration = body.get("auto_archive_duration") or parent.get("default_auto_archive_duration", 1440)
        # The thread id is the starter message's id.
        thread = self._new_thread(starter["id"], parent, body["name"], self.bot_user["id"], P.PUBLIC_THREAD, duration)
        starter["thread"] = copy.deepcopy(thread)
        starter["flags"] |= P.FLAG_HAS_THREAD
        await self.flush()
        return 201, thread

    async def _thread_without_message(self, c: Call) -> tuple[int, Any]:
        parent = self._channel(c.params["channel_id"])
        body = c.json or {}
        type_ = body.get("type") or P.PRIVATE_THREAD
        self._require(parent["id"], P.CREATE_PUBLIC_THREADS if type_ == P.PUBLIC_THREAD else P.CREATE_PRIVATE_THREADS)
        duration = body.get("auto_archive_duration") or parent.get("default_auto_archive_duration", 1440)
        thread = self._new_thread(
            self._ids.next(), parent, body["name"], self.bot_user["id"], type_, duration, body.get("invitable", True)
        )
        if type_ == P.PUBLIC_THREAD:  # Discord posts a THREAD_CREATED system message in the parent
            notice = P.message(self._ids.next(), parent["id"], self.bot_user, thread["name"], type_=18)
            notice["message_reference"] = {"type": 0, "channel_id": thread["id"], "guild_id": parent["guild_id"]}
            self._store_message(notice)
        await self.flush()
        return 201, thread

    def _new_thread(
        self,
        thread_id: str,
        parent: dict[str, Any],
        name: str,
        owner_id: str,
        type_: int,
        duration: int,
        invitable: bool = True,
    ) -> dict[str, Any]:
        guild = self.guilds[parent["guild_id"]]
        thread = P.thread(
            thread_id,
            guild.id,
            parent["id"],
            name,
            owner_id,
            type_=type_,
            auto_archive_duration=duration,
            invitable=invitable,
        )
        self.channels[thread_id] = thread
        self.thread_members[thread_id] = [owner_id]
        guild.thread_ids.append(thread_id)
        event = {**copy.deepcopy(thread), "newly_created": True}
        if owner_id == self.bot_user["id"]:  # `member` only when the bot is in the thread
            event["member"] = P.thread_member(thread_id, owner_id)
        self._dispatch("THREAD_CREATE", event)
        return thread

    def _unarchive(self, thread: dict[str, Any]) -> None:
        thread["thread_metadata"].update(archived=False, archive_timestamp=P.iso())
        self._dispatch("THREAD_UPDATE", copy.deepcopy(thread))

    async def _add_thread_member(self, c: Call) -> tuple[int, Any]:
        thread = self._channel(c.params["channel_id"])
        user_id = self.bot_user["id"] if c.params["user_id"] == "@me" else c.params["user_id"]
        members = self.thread_members.setdefault(thread["id"], [])
        if user_id not in members:
            members.append(user_id)
            thread["member_count"] = len(members)
        return 204, None

    async def _remove_thread_member(self, c: Call) -> tuple[int, Any]:
        thread = self._channel(c.params["channel_id"])
        user_id = self.bot_user["id"] if c.params["user_id"] == "@me" else c.params["user_id"]
        members = self.thread_members.get(thread["id"], [])
        if user_id in members:
            members.remove(user_id)
            thread["member_count"] = len(members)
        return 204, None

    # ------------------------------------------------------------------ REST: guilds

    def _guild(self, c: Call) -> GuildState:
        guild = self.guilds.get(c.params["guild_id"])
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return guild

    async def _get_guild(self, c: Call) -> tuple[int, Any]:
        full = self._guild_create(self._guild(c))
        keep = set(self.validator.spec["components"]["schemas"]["GuildResponse"]["properties"])
        out = {k: v for k, v in full.items() if k in keep}
        out.update(home_header=None, region="deprecated", widget_channel_id=None, max_presences=None, nsfw=False)
        return 200, out

    async def _get_guild_channels(self, c: Call) -> tuple[int, Any]:
        return 200, [self.channels[i] for i in self._guild(c).channel_ids]

    async def _get_roles(self, c: Call) -> tuple[int, Any]:
        return 200, list(self._guild(c).roles.values())

    async def _get_member(self, c: Call) -> tuple[int, Any]:
        member = self._guild(c).members.get(c.params["user_id"])
        if member is None:
            raise ApiError(404, 10007, "Unknown Member")
        return 200, member

    async def _get_active_threads(self, c: Call) -> tuple[int, Any]:
        guild = self._guild(c)
        threads = [self.channels[t] for t in guild.thread_ids if not self.channels[t]["thread_metadata"]["archived"]]
        return 200, {"threads": threads, "members": [], "has_more": False}

    # ------------------------------------------------------------------ permissions, DMs, system messages

    def channel_permissions(self, user_id: str, channel_id: str) -> int:
        """A member's permissions in a channel or thread, overwrites included (a thread uses its parent's);
        every permission in a DM."""
        channel = self.channels[channel_id]
        guild_id = channel.get("guild_id")
        if not guild_id:
            return P.ALL_PERMISSIONS
        guild = self.guilds[guild_id]
        roles = list(guild.members.get(user_id, {}).get("roles", []))
        base = base_permissions(guild.roles, guild.id, guild.owner_id, user_id, roles)
        if channel["type"] in P.THREAD_TYPES:
            channel = self.channels.get(channel.get("parent_id") or "", channel)
        return apply_overwrites(base, channel.get("permission_overwrites") or [], guild.id, user_id, roles)

    async def deny(
        self, channel_id: str, target: str | dict[str, Any], permissions: int, *, tell_bot: bool = True
    ) -> None:
        """A channel overwrite denying `permissions` to a role (its id) or a member (user dict or id), as a
        moderator sets it. Dispatches CHANNEL_UPDATE; `tell_bot=False` leaves the bot's cache stale, so only
        Discord's REST answers (403 50013 / 50001) tell it."""
        await self._overwrite(channel_id, target, 0, permissions, tell_bot)

    async def allow(
        self, channel_id: str, target: str | dict[str, Any], permissions: int, *, tell_bot: bool = True
    ) -> None:
        """The opposite of `deny`: an overwrite allowing `permissions`."""
        await self._overwrite(channel_id, target, permissions, 0, tell_bot)

    async def _overwrite(
        self, channel_id: str, target: str | dict[str, Any], allow: int, deny: int, tell_bot: bool
    ) -> None:
        channel = self.channels[channel_id]
        target_id = target["id"] if isinstance(target, dict) else target
        is_role = target_id in self.guilds[channel["guild_id"]].roles
        kind = ROLE_OVERWRITE if is_role else MEMBER_OVERWRITE
        set_overwrite(channel, target_id, kind, allow=allow, deny=deny)
        if tell_bot:
            self._dispatch("CHANNEL_UPDATE", copy.deepcopy(channel))
            await self.flush()

    @property
    def bot_role_id(self) -> str:
        """The managed role Discord gives the bot in the default guild (`role.tags.bot_id`)."""
        roles = self.guilds[self.guild_id].roles
        return next(r for r, data in roles.items() if (data.get("tags") or {}).get("bot_id") == self.bot_user["id"])

    def _require(self, channel_id: str, needed: int) -> None:
        """Answer as Discord does when the bot lacks a permission: Missing Access without View Channel,
        else Missing Permissions."""
        if not self.channels[channel_id].get("guild_id"):
            return
        have = self.channel_permissions(self.bot_user["id"], channel_id)
        if not have & P.VIEW_CHANNEL:
            raise ApiError(403, 50001, "Missing Access")
        if have & needed != needed:
            raise ApiError(403, 50013, "Missing Permissions")

    def _check_post(self, channel: dict[str, Any], body: dict[str, Any]) -> None:
        if channel["type"] == P.DM:
            if channel["recipients"][0]["id"] in self.closed_dms:
                raise ApiError(403, 50007, "Cannot send messages to this user")
            return
        thread = channel["type"] in P.THREAD_TYPES
        self._require(channel["id"], P.SEND_MESSAGES_IN_THREADS if thread else P.SEND_MESSAGES)
        if body.get("message_reference") and not (
            self.channel_permissions(self.bot_user["id"], channel["id"]) & P.READ_MESSAGE_HISTORY
        ):
            raise ApiError(403, 160002, "Cannot reply without permission to read message history")

    def dm_channel(self, user: dict[str, Any] | None = None) -> str:
        """The id of the bot's DM channel with `user` (default `user`), created on first use."""
        recipient = user or self.user
        for ch in self.channels.values():
            if ch["type"] == P.DM and ch["recipients"][0]["id"] == recipient["id"]:
                return str(ch["id"])
        channel: dict[str, Any] = {
            "id": self._ids.next(),
            "type": P.DM,
            "flags": 0,
            "last_message_id": None,
            "recipients": [recipient],
        }
        self.channels[channel["id"]] = channel
        return str(channel["id"])

    def close_dms(self, user: dict[str, Any] | None = None) -> None:
        """`user` (default `user`) accepts no DMs from the bot: posting there answers 403 50007."""
        self.closed_dms.add((user or self.user)["id"])

    async def send_system_message(
        self,
        type_: int,
        content: str = "",
        *,
        channel_id: str | None = None,
        author: dict[str, Any] | None = None,
        reference: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A system message (MESSAGE_CREATE of a non-default type), e.g. 6 pinned (`reference`: the pinned
        message), 7 member joined, 4 channel/thread renamed (`content`: the new name), 18 thread created."""
        channel_id = channel_id or self.channel_id
        msg = P.message(self._ids.next(), channel_id, author or self.user, content, type_=type_)
        if reference is not None:
            self._set_reference(msg, reference["id"], reference["channel_id"])
            msg["type"] = type_  # _set_reference marks replies; this is not one
        self._store_message(msg)
        await self.flush()
        return msg

    def _role_mentions(self, content: str, channel: dict[str, Any]) -> list[str]:
        roles = self.guilds[channel["guild_id"]].roles if channel.get("guild_id") else {}
        return [r for r in dict.fromkeys(_ROLE_MENTION_RE.findall(content)) if r in roles]

    # ------------------------------------------------------------------ messages (internals)

    def _build_message(
        self,
        channel_id: str,
        author: dict[str, Any],
        body: dict[str, Any],
        files: list[RecordedFile],
        *,
        type_: int = 0,
        flags: int | None = None,
        allow_empty: bool = False,
    ) -> dict[str, Any]:
        content = body.get("content") or ""
        attachments = self._attachments(channel_id, body.get("attachments"), files, [])
        embeds = [self._embed(e) for e in body.get("embeds") or []]
        components = self._components(body.get("components") or [])
        if not allow_empty and not (
            content or embeds or attachments or components or body.get("sticker_ids") or body.get("poll")
        ):
            raise ApiError(400, 50006, "Cannot send an empty message")
        self._check_content(content)
        msg = P.message(
            self._ids.next(),
            channel_id,
            author,
            content,
            type_=type_,
            flags=(body.get("flags") or 0) if flags is None else flags,
            embeds=embeds,
            components=components,
            attachments=attachments,
        )
        msg["mentions"] = self._mentions(content, ())
        return msg

    @staticmethod
    def _check_content(content: str) -> None:
        if len(content) > MAX_CONTENT:
            err = {"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {MAX_CONTENT} or fewer in length."}
            raise ApiError(400, 50035, "Invalid Form Body", {"content": {"_errors": [err]}})

    def _edit(self, msg: dict[str, Any], body: dict[str, Any], files: list[RecordedFile]) -> dict[str, Any]:
        """PATCH semantics: absent fields stay, null clears. Dispatches MESSAGE_UPDATE."""
        if "content" in body:
            content = body["content"] or ""
            self._check_content(content)
            msg["content"] = content
            msg["mentions"] = self._mentions(content, ())
        if "embeds" in body:
            msg["embeds"] = [self._embed(e) for e in body["embeds"] or []]
        if "components" in body:
            msg["components"] = self._components(body["components"] or [])
        if "attachments" in body or files:
            keep = body.get("attachments") if "attachments" in body else None
            msg["attachments"] = self._attachments(msg["channel_id"], keep, files, msg["attachments"])
        if not (msg["content"] or msg["embeds"] or msg["attachments"] or msg["components"]):
            raise ApiError(400, 50006, "Cannot send an empty message")
        msg["flags"] &= ~P.FLAG_LOADING
        msg["edited_timestamp"] = P.iso()
        if not msg["flags"] & P.FLAG_EPHEMERAL:
            self._dispatch("MESSAGE_UPDATE", self._gateway_message(msg))
        return msg

    def _delete(self, msg: dict[str, Any]) -> None:
        del self.messages[msg["id"]]
        event = {"id": msg["id"], "channel_id": msg["channel_id"]}
        if gid := self.channels.get(msg["channel_id"], {}).get("guild_id"):
            event["guild_id"] = gid
        if not msg["flags"] & P.FLAG_EPHEMERAL:
            self._dispatch("MESSAGE_DELETE", event)

    def _store_message(self, msg: dict[str, Any], *, echo: bool = True) -> None:
        """Store, bump channel counters and echo MESSAGE_CREATE (ephemeral messages are not echoed)."""
        self.messages[msg["id"]] = msg
        self._channel_messages.setdefault(msg["channel_id"], []).append(msg["id"])
        ch = self.channels.get(msg["channel_id"])
        if ch is not None:
            ch["last_message_id"] = msg["id"]
            if ch["type"] in P.THREAD_TYPES:
                ch["message_count"] += 1
                ch["total_message_sent"] += 1
        if echo:
            self._dispatch("MESSAGE_CREATE", self._gateway_message(msg))

    def _gateway_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A message as MESSAGE_CREATE/UPDATE carries it: plus guild_id and the author's member."""
        out = copy.deepcopy(msg)
        guild_id = self.channels.get(msg["channel_id"], {}).get("guild_id")
        if guild_id:
            out["guild_id"] = guild_id
            member = self.guilds[guild_id].members.get(msg["author"]["id"])
            if member is not None and not msg.get("webhook_id"):
                out["member"] = {k: v for k, v in member.items() if k != "user"}
            for mentioned in out["mentions"]:
                m = self.guilds[guild_id].members.get(mentioned["id"])
                if m is not None:
                    mentioned["member"] = {k: v for k, v in m.items() if k != "user"}
        return out

    def _mentions(self, content: str, extra: Iterable[dict[str, Any] | str]) -> list[dict[str, Any]]:
        ids = list(
            dict.fromkeys([*_MENTION_RE.findall(content), *(u["id"] if isinstance(u, dict) else u for u in extra)])
        )
        return [copy.deepcopy(self.users[i]) for i in ids if i in self.users]

    def _set_reference(self, msg: dict[str, Any], message_id: str, channel_id: str | None = None) -> None:
        channel_id = channel_id or msg["channel_id"]
        ref: dict[str, Any] = {"type": 0, "message_id": message_id, "channel_id": channel_id}
        if gid := self.channels.get(channel_id, {}).get("guild_id"):
            ref["guild_id"] = gid
        msg["message_reference"] = ref
        msg["type"] = 19
        target = self.messages.get(message_id)
        if target is not None:
            msg["referenced_message"] = {k: copy.deepcopy(v) for k, v in target.items() if k != "referenced_message"}

    def _attachment(self, channel_id: str, filename: str, data: bytes, content_type: str | None) -> dict[str, Any]:
        att_id = self._ids.next()
        path = f"/attachments/{channel_id}/{att_id}/{filename}"
        ctype = content_type or ("image/png" if filename.lower().endswith(".png") else "application/octet-stream")
        self.cdn[path] = (data, ctype)
        att: dict[str, Any] = {
            "id": att_id,
            "filename": filename,
            "size": len(data),
            "url": f"{self.url}{path}",
            "proxy_url": f"{self.url}{path}",
            "content_type": ctype,
        }
        if size := P.image_size(data):
            att["width"], att["height"] = size
        return att

    def _attachments(
        self,
        channel_id: str,
        wanted: list[dict[str, Any]] | None,
        files: list[RecordedFile],
        existing: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """Resolve a body's `attachments` (existing ids kept, `files[n]` uploads matched by id n)."""
        by_index: dict[int, RecordedFile] = {}
        for f in files:
            found = re.fullmatch(r"files\[(\d+)\]", f.field_name) or re.fullmatch(r"file(\d*)", f.field_name)
            by_index[int(found.group(1) or 0) if found else len(by_index)] = f
        for f in files:
            if f.size > ATTACHMENT_SIZE_LIMIT:
                raise ApiError(413, 40005, "Request entity too large")
        out: list[dict[str, Any]] = []
        used: set[int] = set()
        if wanted is None:
            out = list(existing)
        else:
            current = {a["id"]: a for a in existing}
            for item in wanted:
                key = str(item.get("id"))
                if key in current:
                    out.append(current[key])
                elif key.isdigit() and int(key) in by_index:
                    f = by_index[int(key)]
                    att = self._attachment(channel_id, item.get("filename") or f.filename, f.data, f.content_type)
                    if item.get("description"):
                        att["description"] = item["description"]
                    out.append(att)
                    used.add(int(key))
        for index, f in sorted(by_index.items()):
            if index not in used:
                out.append(self._attachment(channel_id, f.filename, f.data, f.content_type))
        return out

    @staticmethod
    def _embed(embed: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in embed.items() if v is not None}
        out.setdefault("type", "rich")
        return out

    def _components(self, components: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Discord numbers components (`id`) in its responses."""
        counter = iter(range(1, 1000))

        def number(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
            out = []
            for item in items:
                item = {k: v for k, v in item.items() if v is not None}
                item.setdefault("id", next(counter))
                if "components" in item:
                    item["components"] = number(item["components"])
                out.append(item)
            return out

        return number(components)
