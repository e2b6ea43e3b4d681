"""A fault-injecting OpenAI-compatible server on 127.0.0.1, for tests.

Each POST /v1/chat/completions takes the next :class:`Reply` from the script (then ``default``):

    async with FakeOpenAIServer() as server:
        server.script(status(429, retry_after="2"), ok("Hello there"))
        backend = OpenAIBackend("fake", spec_for(server))
        ...
        assert len(server.completions) == 2

Or use the ``openai_server`` fixture: ``from tests.fakes.openai_server import openai_server`` in a test
module or conftest. Nothing here sleeps: a stalled reply waits on an :class:`asyncio.Event` that the test
sets (or that closing the server releases).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest_asyncio
from aiohttp import web

from inference.catalogue import OpenAIModel
from inference.types import Tier


@dataclass(frozen=True)
class Reply:
    """How the server answers one chat completion request."""

    status: int = 200
    text: str = "Hello from the fake server."
    #: Text pieces streamed one per SSE chunk; default: ``text`` split after each space.
    pieces: tuple[str, ...] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Raw body: for an error status (default: an OpenAI-style ``{"error": {...}}``), or a raw 200 JSON body.
    body: str | None = None
    #: None: SSE when the request says ``stream: true``; True: always SSE (like transformers serve).
    sse: bool | None = None
    #: Wait for this event before the first token (after the SSE headers were sent).
    stall: asyncio.Event | None = None
    #: Close the connection abruptly after this many pieces.
    break_after: int | None = None
    #: Send ``data: [DONE]`` at the end of a stream.
    done: bool = True
    finish_reason: str | None = "stop"
    #: Interleave ``: keep-alive`` comments and empty deltas between pieces.
    keepalive: bool = False
    #: A hostile server that never stops talking (until the client hangs up or the server closes):
    #: "line" one SSE line with no end, "event" data lines with no blank line between them, "json" a 200
    #: JSON body with no end, "tokens" valid chunks forever (a server that ignores max_tokens).
    flood: Literal["line", "event", "json", "tokens"] | None = None
    #: Token log-probabilities sent with the answer: (token, logprob, {alternative: logprob}), in the
    #: request's shape (chat ``logprobs.content`` or legacy completions' lists); on the first content chunk.
    logprobs: tuple[tuple[str, float, Mapping[str, float]], ...] | None = None

    def split(self) -> tuple[str, ...]:
        if self.pieces is not None:
            return self.pieces
        words = self.text.split(" ")
        return (*(w + " " for w in words[:-1]), words[-1])


def ok(text: str = Reply.text, **kw: Any) -> Reply:
    return Reply(text=text, **kw)


def status(code: int, body: str | None = None, *, retry_after: str | None = None, **kw: Any) -> Reply:
    headers = dict(kw.pop("headers", {}))
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return Reply(status=code, body=body, headers=headers, **kw)


def stall(event: asyncio.Event, **kw: Any) -> Reply:
    return Reply(stall=event, **kw)


def broken(after: int = 1, text: str = "one two three four", **kw: Any) -> Reply:
    return Reply(text=text, break_after=after, sse=True, **kw)


def flood(kind: Literal["line", "event", "json", "tokens"], **kw: Any) -> Reply:
    return Reply(flood=kind, **kw)


#: One write of a flood: 64 KiB, so a flood is fast but still yields to the loop between writes.
_FLOOD_CHUNK = 64 << 10


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: Mapping[str, str]
    body: Any


class FakeOpenAIServer:
    def __init__(self, *, model: str = "fake-model") -> None:
        self.model = model
        self.default = Reply()
        self.models_status = 200
        #: When set, ``/models`` answers 401 to a request without ``Authorization: Bearer <this key>``.
        self.required_key: str | None = None
        #: /models answers 200 with a body that never ends (a hostile probe target).
        self.models_flood = False
        self.requests: list[RecordedRequest] = []
        #: POST /v1/completions (raw text completion) exists; False: it answers 404 like a chat-only server.
        self.text_completions_enabled = True
        #: Answer 400 to any request carrying ``response_format`` (a server without JSON Schema support).
        self.reject_response_format = False
        self._script: list[Reply] = []
        self._closing = asyncio.Event()
        self._seen = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> FakeOpenAIServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        app.router.add_post("/v1/completions", self._text_completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)  # ephemeral port: tests can run in parallel
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def aclose(self) -> None:
        self._closing.set()  # releases stalled handlers so shutdown is immediate
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAIServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- test API ------------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order; later requests get ``default``."""
        self._script.extend(replies)

    async def wait_for_requests(self, n: int) -> None:
        """Wait until ``n`` requests arrived (e.g. before releasing a stalled one)."""
        async with self._seen:
            await self._seen.wait_for(lambda: len(self.requests) >= n)

    @property
    def completions(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def text_completions(self) -> list[RecordedRequest]:
        """Requests to the legacy ``/v1/completions`` (raw prompts)."""
        return [r for r in self.requests if r.path == "/v1/completions"]

    # --- handlers ------------------------------------------------------------------------------------
    async def _record(self, request: web.Request) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        self.requests.append(RecordedRequest(request.method, request.path, dict(request.headers), body))
        async with self._seen:
            self._seen.notify_all()
        return body

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        if self.models_flood:
            return await self._flood(request, "application/json", b'{"data": [', b'{"id": "m"}, ')
        if self.required_key is not None and request.headers.get("Authorization") != f"Bearer {self.required_key}":
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        if self.models_status != 200:
            return web.json_response({"error": {"message": "no"}}, status=self.models_status)
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    async def _text_completions(self, request: web.Request) -> web.StreamResponse:
        if not self.text_completions_enabled:
            await self._record(request)
            return web.json_response({"error": {"message": "Not Found"}}, status=404)
        return await self._completions(request)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if self.reject_response_format and isinstance(body, dict) and "response_format" in body:
            return web.json_response({"error": {"message": "response_format is not supported"}}, status=400)
        reply = self._script.pop(0) if self._script else self.default
        text_mode = request.path == "/v1/completions"
        if reply.status >= 400:
            text = reply.body
            if text is None:
                text = json.dumps({"error": {"message": f"fake error {reply.status}", "code": reply.status}})
            return web.Response(status=reply.status, text=text, headers=dict(reply.headers))
        if reply.flood is not None:
            return await self._flood_reply(request, reply)
        wants_stream = bool(isinstance(body, dict) and body.get("stream"))
        if reply.sse or (reply.sse is None and wants_stream):
            return await self._stream(request, reply, text_mode=text_mode)
        if not await self._wait(reply):
            return web.Response(status=503)
        if reply.body is not None:  # a raw (possibly malformed) success body
            return web.Response(text=reply.body, content_type="application/json", headers=dict(reply.headers))
        choice: dict[str, Any] = {"index": 0, "finish_reason": reply.finish_reason}
        if text_mode:
            choice["text"] = reply.text
        else:
            choice["message"] = {"role": "assistant", "content": reply.text}
        if reply.logprobs is not None:
            choice["logprobs"] = _logprobs_block(reply.logprobs, text_mode=text_mode)
        payload = {
            "id": "chatcmpl-fake",
            "object": "text_completion" if text_mode else "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [choice],
        }
        return web.json_response(payload, status=reply.status, headers=dict(reply.headers))

    async def _wait(self, reply: Reply) -> bool:
        """Wait for the reply's stall event; False if the server is closing instead."""
        if reply.stall is None:
            return True
        waits = {asyncio.ensure_future(reply.stall.wait()), asyncio.ensure_future(self._closing.wait())}
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return reply.stall.is_set()

    async def _stream(self, request: web.Request, reply: Reply, *, text_mode: bool = False) -> web.StreamResponse:
        resp = web.StreamResponse(status=reply.status, headers={"Content-Type": "text/event-stream"})
        resp.headers.update(reply.headers)
        await resp.prepare(request)
        try:
            if not await self._wait(reply):
                return resp
            if not text_mode:
                await self._send(resp, {"role": "assistant"}, None)
            for i, piece in enumerate(reply.split()):
                if reply.break_after is not None and i >= reply.break_after:
                    # Abrupt close mid-stream: no final chunk, no terminating zero-length chunk.
                    assert request.transport is not None
                    request.transport.close()
                    return resp
                if reply.keepalive:
                    await resp.write(b": keep-alive\n\n")
                    await self._send(resp, {}, None)
                extra: dict[str, Any] = {}
                if i == 0 and reply.logprobs is not None:
                    extra["logprobs"] = _logprobs_block(reply.logprobs, text_mode=text_mode)
                if text_mode:
                    extra["text"] = piece
                await self._send(resp, {} if text_mode else {"content": piece}, None, **extra)
            if reply.finish_reason is not None:
                await self._send(resp, {}, reply.finish_reason)
            if reply.done:
                await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass  # the client went away (e.g. it timed out and closed the stream)
        return resp

    async def _flood_reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        sse = "text/event-stream"
        if reply.flood == "line":
            return await self._flood(request, sse, b"data: ", b"x" * 1024)
        if reply.flood == "event":
            return await self._flood(request, sse, b"", b"data: " + b"x" * 1018 + b"\n")
        if reply.flood == "json":
            head = b'{"choices": [{"message": {"content": "'
            return await self._flood(request, "application/json", head, b"x" * 1024)
        chunk = json.dumps({"choices": [{"index": 0, "delta": {"content": "more "}, "finish_reason": None}]})
        return await self._flood(request, sse, b"", f"data: {chunk}\n\n".encode())

    async def _flood(self, request: web.Request, content_type: str, head: bytes, unit: bytes) -> web.StreamResponse:
        """Send ``head`` then ``unit`` forever (chunked, no length), until the client goes away."""
        resp = web.StreamResponse(status=200, headers={"Content-Type": content_type})
        await resp.prepare(request)
        block = unit * max(1, _FLOOD_CHUNK // len(unit))
        try:
            await resp.write(head)
            while not self._closing.is_set():
                await resp.write(block)
                await asyncio.sleep(0)  # a yield, not a wait: lets the client (same loop) read
        except (ConnectionError, RuntimeError):
            pass  # the client hung up: what a bounded client does
        return resp

    async def _send(
        self, resp: web.StreamResponse, delta: dict[str, str], finish: str | None, **choice_fields: Any
    ) -> None:
        chunk = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, **choice_fields}],
        }
        await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())


def _logprobs_block(entries: tuple[tuple[str, float, Mapping[str, float]], ...], *, text_mode: bool) -> dict[str, Any]:
    """Log-probabilities as OpenAI sends them: chat's ``content`` list, or legacy completions' lists."""
    if text_mode:
        return {
            "tokens": [t for t, _, _ in entries],
            "token_logprobs": [lp for _, lp, _ in entries],
            "top_logprobs": [dict(top) for _, _, top in entries],
        }
    content = [
        {"token": t, "logprob": lp, "top_logprobs": [{"token": k, "logprob": v} for k, v in top.items()]}
        for t, lp, top in entries
    ]
    return {"content": content}


def unused_port() -> int:
    """A local port nothing listens on (bound then released), for 'connection refused'."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spec_for(base_url: str | FakeOpenAIServer, **overrides: Any) -> OpenAIModel:
    """An :class:`OpenAIModel` pointing at ``base_url`` (or a fake server), fields overridable."""
    url = base_url.base_url if isinstance(base_url, FakeOpenAIServer) else base_url
    fields: dict[str, Any] = {"tier": Tier.SMALL, "base_url": url, "model": "fake-model"}
    fields.update(overrides)
    return OpenAIModel.model_validate(fields)


@pytest_asyncio.fixture
async def openai_server() -> AsyncIterator[FakeOpenAIServer]:
    """A started :class:`FakeOpenAIServer`, closed after the test."""
    async with FakeOpenAIServer() as server:
        yield server
