"""Operator-defined HTTP tools: config/tools.yaml, the network guard, bounded answers, no redirects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from inference.errors import ConfigError
from inference.serving.netguard import Guard
from inference.tools import ToolBox, ToolCall, default_toolbox
from inference.tools.base import Tool
from inference.tools.http import DEFAULT_PATH, HttpTool, HttpToolSpec, load_tools_config

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 80}}, "required": ["city"]}


class Endpoint:
    """A local HTTP API: records each request; ``stall`` holds /slow until set (or the server closes)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.stall = asyncio.Event()
        self.port = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _record(self, request: web.Request) -> None:
        body = await request.json() if request.can_read_body else None
        self.seen.append({"method": request.method, "query": dict(request.query), "body": body,
                          "key": request.headers.get("X-Api-Key")})  # fmt: skip

    async def weather(self, request: web.Request) -> web.Response:
        await self._record(request)
        city = request.query.get("city") or (await request.json())["city"]
        return web.json_response({"city": city, "temperature_c": 4})

    async def huge(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        for _ in range(100):
            await resp.write(b"x" * 4096)
        return resp

    async def moved(self, request: web.Request) -> web.Response:
        await self._record(request)
        raise web.HTTPFound("http://169.254.169.254/latest/meta-data/")

    async def broken(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.Response(status=500, text="boom")

    async def slow(self, request: web.Request) -> web.Response:
        await self._record(request)
        await self.stall.wait()
        return web.Response(text="late")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/weather", self.weather)
        app.router.add_get("/huge", self.huge)
        app.router.add_get("/moved", self.moved)
        app.router.add_get("/broken", self.broken)
        app.router.add_get("/slow", self.slow)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def aclose(self) -> None:
        self.stall.set()
        if self._runner is not None:
            await self._runner.cleanup()


@pytest_asyncio.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    e = Endpoint()
    await e.start()
    yield e
    await e.aclose()


LOCAL = Guard(allowed_hosts=["127.0.0.1"])  # the operator allowed this host (http, loopback)


def tool(url: str, guard: Guard | None = LOCAL, **fields: Any) -> HttpTool:
    spec = HttpToolSpec.model_validate({"name": "weather", "description": "Weather for a city.", "url": url,
                                        "parameters": CITY, **fields})  # fmt: skip
    return HttpTool(spec, guard)


async def call(t: HttpTool, **arguments: Any) -> tuple[bool, str]:
    result = await ToolBox([t]).execute(ToolCall("c", t.name, arguments))
    return result.ok, result.output


async def test_get_sends_the_arguments_as_the_query_and_reads_json(endpoint: Endpoint) -> None:
    t = tool(endpoint.url("/weather"), headers={"X-Api-Key": "k-123"})
    assert await call(t, city="Oslo") == (True, '{"city": "Oslo", "temperature_c": 4}')
    assert endpoint.seen == [{"method": "GET", "query": {"city": "Oslo"}, "body": None, "key": "k-123"}]
    assert "k-123" not in repr(t) and "k-123" not in repr(t.spec)


async def test_post_sends_the_arguments_as_json(endpoint: Endpoint) -> None:
    assert (await call(tool(endpoint.url("/weather"), method="POST", acts=False), city="Bergen"))[0]
    assert endpoint.seen[0]["method"] == "POST" and endpoint.seen[0]["body"] == {"city": "Bergen"}


async def test_a_post_acts_unless_the_operator_says_not_and_runs_only_when_confirmed(endpoint: Endpoint) -> None:
    post = tool(endpoint.url("/weather"), method="POST")
    assert post.acts and not tool(endpoint.url("/weather")).acts
    refused = await ToolBox([post]).execute(ToolCall("c", "weather", {"city": "Bergen"}))  # nobody to ask
    assert refused.unconfirmed and endpoint.seen == []

    async def yes(t: Tool, args: dict[str, Any]) -> bool:
        return True

    confirmed = await ToolBox([post]).execute(ToolCall("c", "weather", {"city": "Bergen"}), confirm=yes)
    assert confirmed.ok and endpoint.seen[0]["body"] == {"city": "Bergen"}


async def test_invalid_arguments_never_reach_the_endpoint(endpoint: Endpoint) -> None:
    ok, output = await call(tool(endpoint.url("/weather")), town="Oslo")
    assert not ok and "'city' is a required property" in output and endpoint.seen == []


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://127.0.0.1:{port}/weather", "plain http is only allowed"),
        ("https://127.0.0.1:{port}/weather", "loopback"),
        ("https://localhost:{port}/weather", "loopback"),
        ("https://169.254.169.254/latest", "link-local"),
        ("https://10.0.0.5/x", "private"),
        ("https://user:pw@example.com/x", "user-info"),
    ],
)
async def test_the_network_guard_refuses_unsafe_endpoints(endpoint: Endpoint, url: str, words: str) -> None:
    ok, output = await call(tool(url.format(port=endpoint.port), guard=None), city="Oslo")
    assert not ok and "the endpoint is refused" in output and words in output
    assert endpoint.seen == []


async def test_a_public_name_that_resolves_to_a_private_address_is_refused() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return ["10.0.0.5"]

    ok, output = await call(tool("https://weather.example.com/x", guard=Guard(resolve=resolve)), city="Oslo")
    assert not ok and "resolves to a private address" in output


async def test_the_answer_is_bounded_and_redirects_are_not_followed(endpoint: Endpoint) -> None:
    ok, output = await call(tool(endpoint.url("/huge"), max_response_bytes=10_000), city="x")
    assert not ok and "too large (over 10000 bytes)" in output
    ok, output = await call(tool(endpoint.url("/moved")), city="x")
    assert not ok and output == "the endpoint answered HTTP 302"
    ok, output = await call(tool(endpoint.url("/broken")), city="x")
    assert not ok and output == "the endpoint answered HTTP 500"


async def test_a_stalled_endpoint_hits_the_tools_time_limit(endpoint: Endpoint) -> None:
    ok, output = await call(tool(endpoint.url("/slow"), timeout_s=0.1), city="x")
    assert not ok and "took longer than 0.1s" in output


def test_the_config_file_loads_with_the_operators_environment(tmp_path: Path) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text(
        "tools:\n  - name: weather\n    description: Weather.\n    url: https://w.example.com/v1\n"
        "    parameters: {type: object, properties: {city: {type: string}}}\n"
        '    headers: {X-Api-Key: "${WEATHER_KEY}"}\n'
    )
    (spec,) = load_tools_config(path, {"WEATHER_KEY": "secret-1"}).tools
    assert spec.headers["X-Api-Key"].get_secret_value() == "secret-1" and spec.method == "GET"
    box = default_toolbox(env={"WEATHER_KEY": "secret-1"}, config_path=path)
    assert "weather" in box and "calculator" in box


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ("{name: w, description: d, url: 'ftp://x/y'}", "must be an http(s) URL"),
        ("{name: w, description: d, url: 'https://x/y', verb: GET}", "Extra inputs are not permitted"),
        ("{name: 'a b', description: d, url: 'https://x/y'}", "tool name 'a b'"),
        (
            "{name: w, description: d, url: 'https://x/y', parameters: {properties: {e: {format: email}}}}",
            "unsupported keyword 'format'",
        ),
        ("{name: calculator, description: d, url: 'https://x/y'}", None),
    ],
)
def test_a_bad_config_is_refused_naming_the_file(tmp_path: Path, entry: str, words: str | None) -> None:
    path = tmp_path / "tools.yaml"
    path.write_text(f"tools:\n  - {entry}\n")
    if words is None:  # valid on its own; clashes with a built-in when the toolbox is built
        with pytest.raises(ConfigError, match="already registered"):
            default_toolbox(config_path=path)
        return
    with pytest.raises(ConfigError, match=str(path)) as err:
        load_tools_config(path)
    assert words in str(err.value)


def test_the_shipped_config_is_empty_and_a_named_missing_file_is_an_error(tmp_path: Path) -> None:
    assert DEFAULT_PATH.exists() and load_tools_config().tools == []
    with pytest.raises(ConfigError, match="file not found"):
        load_tools_config(tmp_path / "nope.yaml")
