"""The core of the fake: its state (every attribute is set up in `Core.__init__`), lifecycle, the aiohttp
app and its one catch-all route, REST dispatch (route table mechanism, auth, request/response recording
and OpenAPI validation), and the test-facing waiting helpers (`wait_for`, `sync`, `wait_for_request`,
...). Resource behaviour lives in the sibling mixins, which all derive from `Core`; see server.py for
the map.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import socket
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeVar

from aiohttp import BodyPartReader, web

from . import payloads as P
from .gateway import HEARTBEAT, GatewaySession
from .openapi import OpenAPIValidator, Violation, load_validator
from .records import ApiError, Interaction, InteractionSummary, RateLimitRule, RecordedFile, RecordedRequest

if TYPE_CHECKING:
    from .guilds import GuildState

API_PREFIX = "/api/v10"
ATTACHMENT_SIZE_LIMIT = 10 * 1024 * 1024  # what Discord sends for unboosted guilds

T = TypeVar("T")
Handler = Callable[["Call"], Awaitable[tuple[int, Any]]]


@dataclass
class Call:
    """A REST call as handlers see it."""

    params: dict[str, str]
    query: Mapping[str, str]
    json: Any
    files: list[RecordedFile]
    record: RecordedRequest


class Core:
    """State (`__init__`), lifecycle, HTTP entry, recording and waiting. Every resource mixin derives from
    Core, so it sees the state; `FakeDiscord` (server.py) combines them all.

    Methods that one module calls but another implements are declared at the end of this class, for
    type checkers only (they do not exist at run time: the mixins' definitions are the only ones)."""

    # ------------------------------------------------------------------ state

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
        #: Pinned message ids per channel with when they were pinned, newest pin first (messages.py `pin`).
        self._pins: dict[str, list[tuple[str, str]]] = {}
        self.commands: dict[str, dict[str, dict[str, Any]]] = {"global": {}}  # scope -> name -> command
        self.interactions: dict[str, Interaction] = {}  # by token
        self.cdn: dict[str, tuple[bytes, str]] = {}  # attachment path -> (bytes, content type)
        self.cdn_reads: list[str] = []  # attachment paths downloaded, in order (what was read, not only sent)
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

        #: What GET /gateway/bot recommends. Sessions IDENTIFY with their own [shard_id, num_shards]; each gets
        #: only its guilds' events (see GatewaySession.owns).
        self.shard_count = 1
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

    async def start(self) -> Self:
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

    async def __aenter__(self) -> Self:
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

    # ------------------------------------------------------------------ test-facing: inspection

    def requests_matching(self, method: str | None = None, pattern: str | None = None) -> list[RecordedRequest]:
        """Answered requests with that method and `re.search(pattern, path)`."""
        return [r for r in self.requests if r.done and r.matches(method, pattern)]

    def events(self, name: str) -> list[dict[str, Any]]:
        """Data of every gateway event of that name sent to the bot."""
        return [d for e, d in self.dispatched if e == name]

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

    async def flush(self) -> None:
        """Wait until every queued gateway frame has been written."""
        for session in list(self._sessions):
            try:
                await asyncio.wait_for(session.flush(), 5)
            except TimeoutError:
                self.errors.append("gateway frames not written within 5 s")

    # ------------------------------------------------------------------ HTTP entry, REST dispatch, recording

    async def _entry(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/" and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._gateway(request)
        if path.startswith(API_PREFIX + "/"):
            return await self._rest(request, path[len(API_PREFIX) :])
        if path.startswith("/attachments/") and path in self.cdn:
            data, content_type = self.cdn[path]
            self.cdn_reads.append(path)
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

    # ------------------------------------------------------------------ implemented by the mixins

    if TYPE_CHECKING:
        # server.py
        def _register_routes(self) -> None: ...

        # guilds.py
        def add_guild(
            self,
            name: str = "Guild",
            *,
            channels: Iterable[str] = ("general",),
            on_shard: tuple[int, int] | None = None,
        ) -> str: ...

        def add_member(
            self,
            user: str | dict[str, Any],
            *,
            guild_id: str | None = None,
            roles: Iterable[str] = (),
            nick: str | None = None,
            bot: bool = False,
        ) -> dict[str, Any]: ...

        def channel_permissions(self, user_id: str, channel_id: str) -> int: ...

        def _permissions(self, user_id: str, guild_id: str | None) -> int: ...

        def _require(self, channel_id: str, needed: int) -> None: ...

        def _check_post(self, channel: dict[str, Any], body: dict[str, Any]) -> None: ...

        def _guild_create(self, guild: GuildState) -> dict[str, Any]: ...

        # messages.py
        def messages_in(self, channel_id: str | None = None) -> list[dict[str, Any]]: ...

        def bot_messages(self, channel_id: str | None = None) -> list[dict[str, Any]]: ...

        def make_attachment(
            self, filename: str, data: bytes, *, content_type: str | None = None, channel_id: str | None = None
        ) -> dict[str, Any]: ...

        def _channel(self, channel_id: str) -> dict[str, Any]: ...

        def _message(self, channel_id: str, message_id: str) -> dict[str, Any]: ...

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
        ) -> dict[str, Any]: ...

        def _store_message(self, msg: dict[str, Any], *, echo: bool = True) -> None: ...

        def _edit(self, msg: dict[str, Any], body: dict[str, Any], files: list[RecordedFile]) -> dict[str, Any]: ...

        def _delete(self, msg: dict[str, Any]) -> None: ...

        # threads.py
        def _unarchive(self, thread: dict[str, Any]) -> None: ...

        # interactions.py
        def interaction_response(self, interaction: Interaction) -> InteractionSummary: ...

        # commands.py
        def _find_command(self, name: str, guild_id: str | None) -> tuple[dict[str, Any] | None, str]: ...

        def _build_options(
            self,
            command: dict[str, Any] | None,
            path: list[str],
            values: dict[str, Any],
            channel_id: str,
            focused: str | None = None,
        ) -> tuple[list[dict[str, Any]], dict[str, Any]]: ...

        # ratelimits.py
        def _check_rate_limit(self, record: RecordedRequest) -> None: ...

        def _rate_limit_headers(self, record: RecordedRequest) -> dict[str, str]: ...

        # sessions.py
        @property
        def _connected(self) -> bool: ...

        def _dispatch(self, event: str, data: dict[str, Any]) -> None: ...

        async def _gateway(self, request: web.Request) -> web.WebSocketResponse: ...
