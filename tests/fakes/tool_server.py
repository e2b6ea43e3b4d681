"""An OpenAI-compatible server on 127.0.0.1 that plays raw replies: tool calls as JSON or as streamed deltas.

``tests/fakes/openai_server.py`` scripts text answers and faults; this one scripts the tools protocol:

    server.json({"role": "assistant", "content": None, "tool_calls": [...]})   # one JSON answer
    server.sse([{"tool_calls": [...]}, ...])                                    # streamed deltas
    server.text("the answer")                                                   # a plain answer
    server.error(400)                                                           # a refusal

Each POST /v1/chat/completions takes the next reply (the last one repeats); request bodies are recorded.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web


class ScriptedServer:
    """POST /v1/chat/completions answers with the next (content type, body) of the script; bodies recorded."""

    def __init__(self) -> None:
        self.replies: list[tuple[str, bytes, int]] = []
        self.bodies: list[dict[str, Any]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def json(self, message: dict[str, Any], finish: str = "tool_calls") -> None:
        payload = {"choices": [{"index": 0, "message": message, "finish_reason": finish}]}
        self.replies.append(("application/json", json.dumps(payload).encode(), 200))

    def text(self, content: str) -> None:
        self.json({"role": "assistant", "content": content}, finish="stop")

    def calls(self, *calls: dict[str, Any], content: str | None = None) -> None:
        """One JSON answer that calls tools (``tool_call(...)`` entries)."""
        self.json({"role": "assistant", "content": content, "tool_calls": [dict(c) for c in calls]})

    def error(self, status: int, message: str = "tools are not supported") -> None:
        self.replies.append(("application/json", json.dumps({"error": {"message": message}}).encode(), status))

    def sse(self, deltas: list[dict[str, Any]], *, finish: str | None = "tool_calls", done: bool = True) -> None:
        chunks: list[dict[str, Any]] = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
        if finish is not None:
            chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + ("data: [DONE]\n\n" if done else "")
        self.replies.append(("text/event-stream", body.encode(), 200))

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        ctype, body, status = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        return web.Response(body=body, content_type=ctype, status=status)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def __aenter__(self) -> ScriptedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def tool_call(index: int, ident: str, name: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
    """One ``tool_calls`` entry (``arguments`` as the JSON text a server sends; a dict is encoded)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"index": index, "id": ident, "type": "function", "function": {"name": name, "arguments": text}}
