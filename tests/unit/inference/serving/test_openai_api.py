"""Switchboard over the OpenAI chat-completions protocol: routes, the route header, streaming, errors, keys, metrics.

The board is the real one (the router and its policy, the task pipelines, the service with its resilience layer
and tier fallback) over a fixed classifier (the real one routes the same board in tests/e2e/test_cli_serve.py);
both tiers are OpenAI-compatible endpoints on a scripted fake server, so answers and failures are chosen by the
test.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from bot.settings import Settings
from inference.catalogue import Catalogue, RoutingPolicy, load_routing
from inference.errors import (
    AuthenticationError,
    BackendOverloaded,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    InferenceError,
    ModelNotFound,
    QueueFull,
)
from inference.router import Router
from inference.serve_cli import serve_command
from inference.serving.openai_api import ROUTE_HEADER, ApiLimits, api_error_from, create_app, is_loopback
from inference.serving.service import Switchboard
from inference.structured import InvalidOutput
from inference.types import Classification, Request, TaskId, Tier
from tests.fakes.openai_server import FakeOpenAIServer, broken, ok, openai_server, spec_for, status

__all__ = ["openai_server"]  # the fixture, used below

CHAT = "hey how's it going? :)"
KEY = "sk-serve-SENTINEL"


def catalogue_for(server: FakeOpenAIServer) -> Catalogue:
    one_try = {"retry": {"max_attempts": 1}}
    return Catalogue(
        models={
            "small-fake": spec_for(server, tier=Tier.SMALL, **one_try),
            "large-fake": spec_for(server, tier=Tier.LARGE, **one_try),
        }
    )


def policy_for(catalogue: Catalogue) -> RoutingPolicy:
    base = load_routing()
    policy = RoutingPolicy(
        tiers=base.tiers,
        models={Tier.SMALL: "small-fake", Tier.LARGE: "large-fake"},
        escalation=base.escalation,
    )
    policy.check_against(catalogue)
    return policy


class Fixed:
    """The classifier's part, fixed: ``task`` for text, ``multimodal`` with a media attachment (its rule)."""

    def __init__(self, task: TaskId = "chat") -> None:
        self.task = task

    def classify(self, request: Request) -> Classification:
        task: TaskId = "multimodal" if any(a.is_media for a in request.attachments) else self.task
        return Classification(task=task, confidence=0.9, difficulty=0.1, prompt_tokens=5)


def board_for(server: FakeOpenAIServer, task: TaskId = "chat") -> Switchboard:
    catalogue = catalogue_for(server)
    return Switchboard(Router(Fixed(task), policy_for(catalogue), catalogue), cache_dir=Path("unused"))


@pytest_asyncio.fixture
async def board(openai_server: FakeOpenAIServer) -> AsyncIterator[Switchboard]:
    board = board_for(openai_server)
    await board.start(probe=True)
    try:
        yield board
    finally:
        await board.aclose()


@pytest_asyncio.fixture
async def api(board: Switchboard) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(board))) as client:
        yield client


def chat(text: str = CHAT, **extra: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


def events(raw: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [block.removeprefix("data: ") for block in raw.split("\n\n") if block.startswith("data: ")]


def assert_openai_error(body: dict[str, Any], *, code: str | None = None, param: str | None = None) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code
    if param is not None:
        assert body["error"]["param"] == param


# --- models, answers, the route ------------------------------------------------------------------------------------


async def test_models_lists_auto_and_every_catalogue_model(api: TestClient[Any, Any]) -> None:
    resp = await api.get("/v1/models")
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["auto", "small-fake", "large-fake"]
    assert all(m["object"] == "model" for m in body["data"])
    assert (await (await api.get("/v1/models/auto")).json())["id"] == "auto"
    assert (await api.get("/v1/models/nope")).status == 404


async def test_auto_is_routed_and_the_route_is_in_the_header_and_the_body(
    api: TestClient[Any, Any], openai_server: FakeOpenAIServer
) -> None:
    openai_server.script(ok("Hello there, friend."))
    resp = await api.post("/v1/chat/completions", json=chat())
    assert resp.status == 200, await resp.text()
    route = json.loads(resp.headers[ROUTE_HEADER])
    assert (route["task"], route["tier"], route["model"]) == ("chat", "small", "small-fake")
    assert route["reason"]
    body = await resp.json()
    assert body["object"] == "chat.completion" and body["model"] == "small-fake"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Hello there, friend."}
    assert choice["finish_reason"] == "stop"
    assert body["switchboard_route"]["task"] == "chat" and body["switchboard_route"]["tokens"] > 0
    assert body["usage"]["completion_tokens"] > 0 and body["usage"]["total_tokens"] > body["usage"]["completion_tokens"]
    # The chat pipeline framed it: its persona went to the model, the user's text last.
    (sent,) = openai_server.completions
    assert sent.body["messages"][0]["role"] == "system" and sent.body["messages"][-1]["content"] == CHAT


async def test_streaming_sends_chunks_then_the_route_in_the_final_chunk_then_done(
    api: TestClient[Any, Any], openai_server: FakeOpenAIServer
) -> None:
    openai_server.script(ok("one two three"))
    resp = await api.post("/v1/chat/completions", json=chat(stream=True, stream_options={"include_usage": True}))
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    assert json.loads(resp.headers[ROUTE_HEADER])["model"] == "small-fake"
    data = events(await resp.text())
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "one two three"
    final = next(c for c in reversed(chunks) if c["choices"])
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["switchboard_route"]["task"] == "chat" and final["switchboard_route"]["tier"] == "small"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 3


async def test_a_catalogue_name_forces_that_model(api: TestClient[Any, Any], openai_server: FakeOpenAIServer) -> None:
    openai_server.script(ok("from the large one"))
    resp = await api.post("/v1/chat/completions", json={**chat(), "model": "large-fake"})
    assert resp.status == 200
    route = json.loads(resp.headers[ROUTE_HEADER])
    assert (route["task"], route["tier"], route["model"]) == ("chat", "large", "large-fake")
    assert "named in the request" in route["reason"]


async def test_max_tokens_temperature_and_stop_reach_the_model(
    api: TestClient[Any, Any], openai_server: FakeOpenAIServer
) -> None:
    resp = await api.post("/v1/chat/completions", json=chat(max_tokens=7, temperature=0.7, top_p=0.9, stop="END"))
    assert resp.status == 200
    (sent,) = openai_server.completions
    assert sent.body["max_tokens"] == 7 and sent.body["temperature"] == 0.7 and sent.body["top_p"] == 0.9
    assert "END" in sent.body["stop"]


async def test_max_tokens_is_capped_by_the_operator(board: Switchboard, openai_server: FakeOpenAIServer) -> None:
    async with TestClient(TestServer(create_app(board, limits=ApiLimits(max_new_tokens=5)))) as client:
        resp = await client.post("/v1/chat/completions", json=chat(max_tokens=4000))
        assert resp.status == 200
    assert openai_server.completions[0].body["max_tokens"] == 5


async def test_system_messages_and_earlier_turns_go_along(
    api: TestClient[Any, Any], openai_server: FakeOpenAIServer
) -> None:
    body = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "You are a pirate."},
            {"role": "user", "content": "my name is Ann"},
            {"role": "assistant", "content": "Ahoy Ann"},
            {"role": "user", "content": [{"type": "text", "text": CHAT}]},
        ],
    }
    resp = await api.post("/v1/chat/completions", json=body)
    assert resp.status == 200
    sent = openai_server.completions[0].body["messages"]
    assert "You are a pirate." in sent[0]["content"]
    assert {"role": "assistant", "content": "Ahoy Ann"} in sent and sent[-1] == {"role": "user", "content": CHAT}


async def test_an_image_part_makes_the_request_multimodal(api: TestClient[Any, Any]) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "what is it?"}, image]}],
    }
    resp = await api.post("/v1/chat/completions", json=body)
    assert json.loads(resp.headers[ROUTE_HEADER])["task"] == "multimodal"


async def test_a_task_that_cannot_be_served_says_so_and_runs_no_model(openai_server: FakeOpenAIServer) -> None:
    board = board_for(openai_server, "rag")
    try:
        async with TestClient(TestServer(create_app(board))) as client:
            resp = await client.post("/v1/chat/completions", json=chat("what does our handbook say about leave?"))
            assert resp.status == 200
            body = await resp.json()
    finally:
        await board.aclose()
    assert body["choices"][0]["message"]["content"]
    assert body["switchboard_route"]["task"] == "rag" and "no model was run" in body["switchboard_route"]["notes"]
    assert openai_server.completions == []


async def test_a_json_schema_response_format_gives_a_valid_document(
    api: TestClient[Any, Any], openai_server: FakeOpenAIServer
) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    openai_server.script(ok("not json"), ok('{"ok": true}'))  # one repair attempt
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    resp = await api.post("/v1/chat/completions", json=chat("is water wet?", response_format=fmt))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert json.loads(body["choices"][0]["message"]["content"]) == {"ok": True}
    assert body["switchboard_route"]["task"] == "grammar"
    assert len(openai_server.completions) == 2


# --- refusals and errors ---------------------------------------------------------------------------------------------


async def test_an_unknown_model_is_an_openai_404(api: TestClient[Any, Any], openai_server: FakeOpenAIServer) -> None:
    resp = await api.post("/v1/chat/completions", json={**chat(), "model": "gpt-17"})
    assert resp.status == 404
    assert_openai_error(await resp.json(), code="model_not_found", param="model")
    assert openai_server.completions == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "auto", "messages": [', None),  # malformed JSON
        (b'["not", "an", "object"]', None),
        (json.dumps({"model": "auto"}).encode(), "messages"),  # missing messages
        (json.dumps({"model": "auto", "messages": []}).encode(), "messages"),
        (json.dumps(chat(max_tokens="16")).encode(), "max_tokens"),  # wrong type: strings are not numbers
        (json.dumps(chat(stream="yes")).encode(), "stream"),
        (json.dumps(chat(temperature=3)).encode(), "temperature"),
        (json.dumps({"model": "auto", "messages": [{"role": "user", "content": 5}]}).encode(), None),
        (json.dumps({"model": "auto", "messages": [{"role": "wizard", "content": "x"}]}).encode(), None),
        (json.dumps({**chat(), "messages": [{"role": "assistant", "content": "x"}]}).encode(), "messages"),
        (json.dumps(chat("   ")).encode(), "messages"),
        (json.dumps(chat(stop=["a", "b", "c", "d", "e"])).encode(), "stop"),
        (json.dumps(chat(response_format={"type": "json_object"})).encode(), "response_format"),
        (
            json.dumps(
                chat(response_format={"type": "json_schema", "json_schema": {"schema": {"$ref": "#/x"}}})
            ).encode(),
            "response_format",
        ),
    ],
)
async def test_bad_requests_get_openai_shaped_400s(
    api: TestClient[Any, Any], openai_server: FakeOpenAIServer, body: bytes, param: str | None
) -> None:
    resp = await api.post("/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    error = await resp.json()
    assert_openai_error(error)
    if param is not None:
        assert (error["error"]["param"] or "").startswith(param), error
    assert openai_server.completions == []


async def test_an_oversized_body_is_413_and_a_long_prompt_400(board: Switchboard) -> None:
    limits = ApiLimits(max_body_bytes=2000, max_prompt_chars=100)
    async with TestClient(TestServer(create_app(board, limits=limits))) as client:
        big = await client.post("/v1/chat/completions", json=chat("x" * 5000))
        assert big.status == 413
        assert_openai_error(await big.json(), code="request_too_large")
        long = await client.post("/v1/chat/completions", json=chat("y" * 500))
        assert long.status == 400
        assert_openai_error(await long.json(), code="prompt_too_long")

        # Sent in pieces with no Content-Length: still cut off at the cap.
        async def pieces() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        chunked = await client.post("/v1/chat/completions", data=pieces())
        assert chunked.status == 413


@pytest.mark.parametrize(
    ("reply", "http", "code"),
    [
        (status(503), 502, "unavailable"),
        (status(429, retry_after="3"), 503, "overloaded"),
        (status(400), 400, "upstream_bad_request"),
        (status(401), 502, "upstream_error"),
    ],
)
async def test_backend_errors_become_openai_errors(
    api: TestClient[Any, Any], openai_server: FakeOpenAIServer, reply: Any, http: int, code: str
) -> None:
    openai_server.script(reply)
    # A named model: no fallback to the other tier, so the error is the response.
    resp = await api.post("/v1/chat/completions", json={**chat(), "model": "small-fake"})
    assert resp.status == http
    assert_openai_error(await resp.json(), code=code)
    assert json.loads(resp.headers[ROUTE_HEADER])["model"] == "small-fake"
    if http == 503:
        assert resp.headers["Retry-After"] == "3"
    # The server is still there.
    assert (await api.get("/v1/models")).status == 200


@pytest.mark.parametrize(
    ("error", "http"),
    [
        (BackendTimeout("t"), 504),
        (QueueFull("q"), 503),
        (BackendOverloaded("o", retry_after=float("inf")), 503),
        (BackendUnavailable("u"), 502),
        (BadRequest("b"), 400),
        (AuthenticationError("a"), 502),
        (ModelNotFound("m"), 502),
        (InvalidOutput("i"), 502),
        (InferenceError("e"), 500),
    ],
)
def test_every_typed_error_has_its_status(error: InferenceError, http: int) -> None:
    api_error = api_error_from(error, "abc123")
    assert api_error.status == http
    assert_openai_error(api_error.body())
    assert "abc123" in api_error.message
    if http == 503:
        assert int(api_error.headers["Retry-After"]) >= 1


async def test_a_failing_tier_falls_back_and_says_so(
    api: TestClient[Any, Any], openai_server: FakeOpenAIServer
) -> None:
    openai_server.script(status(500), ok("the large tier answered"))
    resp = await api.post("/v1/chat/completions", json=chat())
    assert resp.status == 200
    route = (await resp.json())["switchboard_route"]
    assert route["tier"] == "large" and route["model"] == "large-fake" and route["fell_back"] is True
    assert json.loads(resp.headers[ROUTE_HEADER])["tier"] == "large"
    metrics = await (await api.get("/metrics")).text()
    assert 'switchboard_fallbacks_total{from_tier="small",to_tier="large"} 1.0' in metrics


async def test_a_stream_broken_half_way_ends_with_an_error_event(
    api: TestClient[Any, Any], openai_server: FakeOpenAIServer
) -> None:
    openai_server.script(broken(after=1))
    resp = await api.post("/v1/chat/completions", json=chat(stream=True))
    assert resp.status == 200
    data = events(await resp.text())
    assert data[-1] == "[DONE]"
    last = json.loads(data[-2])
    assert_openai_error({"error": last["error"]})
    assert last["switchboard_route"]["model"] == "small-fake"


async def test_an_error_before_the_first_token_of_a_stream_has_its_status(
    api: TestClient[Any, Any], openai_server: FakeOpenAIServer
) -> None:
    openai_server.script(status(503))
    resp = await api.post("/v1/chat/completions", json={**chat(stream=True), "model": "small-fake"})
    assert resp.status == 502
    assert_openai_error(await resp.json(), code="unavailable")


# --- binding and keys ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_loopback_is_told_apart(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_serving_beyond_loopback_without_a_key_is_refused(tmp_path: Path) -> None:
    catalogue = catalogue_for(FakeOpenAIServer())
    err = io.StringIO()
    code = await serve_command(
        host="0.0.0.0",
        port=0,
        catalogue=catalogue,
        policy=policy_for(catalogue),
        cache_dir=tmp_path,
        stderr=err,
    )
    assert code == 2
    assert "SWITCHBOARD_SERVE_API_KEY" in err.getvalue() and err.getvalue().count("\n") == 1


async def test_serve_listens_answers_and_stops_cleanly(tmp_path: Path, openai_server: FakeOpenAIServer) -> None:
    catalogue = catalogue_for(openai_server)
    err = io.StringIO()
    stop = asyncio.Event()
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(
        serve_command(
            host="127.0.0.1",
            port=0,
            catalogue=catalogue,
            policy=policy_for(catalogue),
            cache_dir=tmp_path,
            classifier=Fixed(),
            api_key=KEY,
            warm=False,
            stderr=err,
            stop=stop,
            listening=listening,
        )
    )
    url = await listening
    assert url in err.getvalue()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/models", headers={"Authorization": f"Bearer {KEY}"}) as resp:
            assert resp.status == 200
    stop.set()
    assert await serving == 0
    assert err.getvalue().strip().endswith("stopped")


async def test_with_a_key_requests_must_carry_it(board: Switchboard, openai_server: FakeOpenAIServer) -> None:
    async with TestClient(TestServer(create_app(board, api_key=KEY))) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}, {"Authorization": "Bearer é"}):
            resp = await client.post("/v1/chat/completions", json=chat(), headers=headers)
            assert resp.status == 401
            assert_openai_error(await resp.json(), code="invalid_api_key")
            assert KEY not in await resp.text()
        assert (await client.get("/v1/models")).status == 401
        assert (await client.get("/metrics")).status == 401
        assert (await client.get("/health")).status == 200  # for health checks
        assert openai_server.completions == []
        resp = await client.post("/v1/chat/completions", json=chat(), headers={"Authorization": f"Bearer {KEY}"})
        assert resp.status == 200
        metrics = await (await client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})).text()
        assert 'switchboard_refusals_total{reason="unauthorized"} 6.0' in metrics


def test_the_key_setting_is_read_and_kept_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SWITCHBOARD_SERVE_API_KEY", KEY)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.serve_api_key is not None and settings.serve_api_key.get_secret_value() == KEY
    assert KEY not in repr(settings)
    monkeypatch.delenv("SWITCHBOARD_SERVE_API_KEY")
    env_file = tmp_path / ".env"
    env_file.write_text(f"SWITCHBOARD_SERVE_API_KEY={KEY}\n")
    from_file = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert from_file.serve_api_key is not None and from_file.serve_api_key.get_secret_value() == KEY
    env_file.write_text("SWITCHBOARD_SERVE_API_KEY=\n")
    assert Settings(_env_file=env_file).serve_api_key is None  # type: ignore[call-arg]


# --- health and metrics ---------------------------------------------------------------------------------------------


async def test_health_reports_the_models(api: TestClient[Any, Any]) -> None:
    resp = await api.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["ok"] is True and set(body["models"]) == {"small-fake", "large-fake"}
    assert body["models"]["small-fake"]["tier"] == "small"


async def test_metrics_count_requests_latency_and_refusals(
    api: TestClient[Any, Any], openai_server: FakeOpenAIServer
) -> None:
    before = await (await api.get("/metrics")).text()
    assert "switchboard_requests_total{" not in before
    for _ in range(2):
        assert (await api.post("/v1/chat/completions", json=chat())).status == 200
    assert (await api.post("/v1/chat/completions", data=b"{")).status == 400
    openai_server.script(status(503))
    assert (await api.post("/v1/chat/completions", json={**chat(), "model": "small-fake"})).status == 502
    resp = await api.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert 'switchboard_requests_total{model="small-fake",outcome="ok",task="chat",tier="small"} 2.0' in text
    assert 'switchboard_requests_total{model="small-fake",outcome="error",task="chat",tier="small"} 1.0' in text
    assert 'switchboard_request_seconds_count{task="chat",tier="small"} 2.0' in text
    assert 'switchboard_time_to_first_token_seconds_count{task="chat",tier="small"} 2.0' in text
    assert 'switchboard_refusals_total{reason="invalid_request"} 1.0' in text
    assert 'switchboard_errors_total{error="BackendUnavailable"} 1.0' in text
    assert 'switchboard_backend_in_flight{model="small-fake"} 0.0' in text
