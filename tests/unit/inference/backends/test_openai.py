"""OpenAIBackend (and ResilientBackend in front of it) against the fault-injecting fake server.

Everything runs on 127.0.0.1. Nothing sleeps: backoff runs on a FakeClock (which records each sleep),
and the one stall test waits on a real 0.2 s first-token limit while the server waits on an event.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import os
import time
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from inference.backends.openai import OpenAIBackend
from inference.catalogue import Cooldown, RetryPolicy, Timeouts
from inference.errors import (
    AuthenticationError,
    BackendOverloaded,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    EndpointRejected,
    InferenceError,
    ModelNotFound,
    parse_retry_after,
)
from inference.serving.clock import FakeClock
from inference.serving.resilience import ResilientBackend
from inference.types import ChatMessage, Constraint, GenerationParams, TokenLogprob
from tests.fakes.openai_server import (
    FakeOpenAIServer,
    Reply,
    broken,
    ok,
    openai_server,
    spec_for,
    stall,
    status,
    unused_port,
)

__all__ = ["openai_server"]  # pytest fixture, imported for the tests below

MESSAGES = [ChatMessage("system", "Be brief."), ChatMessage("user", "Say hi")]
PARAMS = GenerationParams(max_new_tokens=16, temperature=0.0)
SENTINEL = "sk-test-SENTINEL-0123456789abcdef"
KEY_ENV = "SWITCHBOARD_TEST_OPENAI_KEY"


@pytest.fixture
async def make(openai_server: FakeOpenAIServer):  # type: ignore[no-untyped-def]
    """make(stream=..., **spec overrides) -> OpenAIBackend pointing at the fake server; closed after."""
    made: list[OpenAIBackend] = []

    def factory(*, stream: bool = True, url: str | None = None, **overrides: Any) -> OpenAIBackend:
        # The operator's environment, as the service passes it for operator models.
        spec = spec_for(url or openai_server.base_url, **overrides)
        backend = OpenAIBackend("fake", spec, stream=stream, env=os.environ)
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        await backend.aclose()


def resilient(backend: OpenAIBackend, clock: FakeClock, **retry: Any) -> ResilientBackend:
    spec = backend.spec.model_copy(
        update={
            "retry": RetryPolicy(**{"max_attempts": 3, "retry_after_cap_s": 30, **retry}),
            "timeouts": Timeouts(connect_s=2, first_token_s=10, total_s=100),
        }
    )
    return ResilientBackend(backend, spec, clock=clock)


# --- the happy paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stream", "reply"),
    [
        (True, ok("Hello there friend")),
        (False, ok("Hello there friend")),
        (False, ok("Hello there friend", sse=True)),  # transformers serve answers SSE to stream=false
        (True, ok("Hello there friend", sse=False)),  # a server that ignores stream=true
        (True, ok("Hello there friend", keepalive=True)),  # comments and empty deltas are skipped
        (True, ok("Hello there friend", done=False)),  # finish_reason without [DONE] is complete
        (True, ok("Hello there friend", finish_reason=None)),  # [DONE] without finish_reason too
    ],
    ids=["sse", "json", "sse-for-nonstream", "json-for-stream", "keepalive", "no-done", "no-finish"],
)
async def test_answers(openai_server: FakeOpenAIServer, make: Any, stream: bool, reply: Reply) -> None:
    openai_server.script(reply)
    backend = make(stream=stream)
    text = await backend.stream(MESSAGES, PARAMS).text()
    assert text == "Hello there friend"


async def test_stream_yields_pieces(openai_server: FakeOpenAIServer, make: Any) -> None:
    openai_server.script(ok(pieces=("Hel", "lo", "", " you")))
    pieces = [p async for p in make().stream(MESSAGES, PARAMS)]
    assert pieces == ["Hel", "lo", " you"]


async def test_request_body(openai_server: FakeOpenAIServer, make: Any) -> None:
    backend = make(extra_body={"guided_json": {"type": "object"}, "stream": False, "repetition_penalty": 1.1})
    params = GenerationParams(max_new_tokens=12, temperature=0.3, top_p=0.9, stop=("\n\n",))
    await backend.stream(MESSAGES, params).text()
    request = openai_server.completions[0]
    assert request.body == {
        "model": "fake-model",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}],
        "max_tokens": 12,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": ["\n\n"],
        "stream": True,  # extra_body cannot flip the parsing-relevant fields
        "guided_json": {"type": "object"},
        "repetition_penalty": 1.1,
    }
    assert request.headers["Accept"] == "text/event-stream"
    assert "Authorization" not in request.headers


async def test_no_stop_field_when_empty(openai_server: FakeOpenAIServer, make: Any) -> None:
    await make(stream=False).stream(MESSAGES, GenerationParams()).text()
    assert "stop" not in openai_server.completions[0].body
    assert openai_server.completions[0].body["stream"] is False


def test_provider_and_context_window() -> None:
    backend = OpenAIBackend("x", spec_for("https://api.example.com:8443/v1", context_window=8192))
    assert backend.provider == "openai:api.example.com"
    assert backend.context_window == 8192
    assert backend.kind == "openai"


# --- the API key -------------------------------------------------------------------------------------


async def test_api_key_sent_as_bearer_and_never_logged(
    openai_server: FakeOpenAIServer, make: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(KEY_ENV, SENTINEL)
    caplog.set_level(logging.DEBUG)
    backend = make(api_key_env=KEY_ENV)
    await backend.stream(MESSAGES, PARAMS).text()
    assert openai_server.completions[0].headers["Authorization"] == f"Bearer {SENTINEL}"

    # A server (or proxy) that echoes the key in an error body must not get it into our errors.
    openai_server.script(status(401, body=f"invalid key {SENTINEL}"))
    with pytest.raises(AuthenticationError) as info:
        await backend.stream(MESSAGES, PARAMS).text()
    assert SENTINEL not in str(info.value) and "***" in str(info.value)

    assert await backend.probe()
    assert openai_server.requests[-1].headers["Authorization"] == f"Bearer {SENTINEL}"
    assert SENTINEL not in repr(backend)
    assert KEY_ENV in repr(backend)
    assert SENTINEL not in caplog.text
    assert caplog.records  # DEBUG logging was on and did log


async def test_api_key_read_at_request_time(
    openai_server: FakeOpenAIServer, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = make(api_key_env=KEY_ENV)
    monkeypatch.setenv(KEY_ENV, "first")
    await backend.stream(MESSAGES, PARAMS).text()
    monkeypatch.setenv(KEY_ENV, "rotated")
    await backend.stream(MESSAGES, PARAMS).text()
    assert [r.headers["Authorization"] for r in openai_server.completions] == ["Bearer first", "Bearer rotated"]


async def test_an_unset_key_variable_means_a_keyless_endpoint(
    openai_server: FakeOpenAIServer, make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Most local servers need no key; and an error naming the variable would tell whoever configured the
    # endpoint whether the operator has it.
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert await make(api_key_env=KEY_ENV).stream(MESSAGES, PARAMS).text()
    assert await make().stream(MESSAGES, PARAMS).text()
    assert all("Authorization" not in r.headers for r in openai_server.completions)
    assert len(openai_server.completions) == 2


async def test_without_the_operators_environment_no_variable_is_ever_read(
    openai_server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server admin's endpoint is built without `env`: naming DISCORD_TOKEN (or any variable) sends nothing.
    monkeypatch.setenv("DISCORD_TOKEN", SENTINEL)
    backend = OpenAIBackend("theirs", spec_for(openai_server.base_url, api_key_env="DISCORD_TOKEN"))
    try:
        await backend.stream(MESSAGES, PARAMS).text()
        assert await backend.probe()
    finally:
        await backend.aclose()
    assert openai_server.requests and all("Authorization" not in r.headers for r in openai_server.requests)


async def test_a_key_given_with_the_spec_is_sent_and_masked(openai_server: FakeOpenAIServer) -> None:
    spec = spec_for(openai_server.base_url, api_key=SecretStr(SENTINEL))
    assert SENTINEL not in spec.model_dump_json() and SENTINEL not in repr(spec)
    backend = OpenAIBackend("theirs", spec)
    try:
        await backend.stream(MESSAGES, PARAMS).text()
    finally:
        await backend.aclose()
    assert openai_server.completions[0].headers["Authorization"] == f"Bearer {SENTINEL}"
    # Another key is another spec (a new backend), though neither key appears in the dump.
    other = spec_for(openai_server.base_url, api_key=SecretStr("sk-other"))
    assert other.model_dump_json() != spec.model_dump_json()


# --- status codes and broken streams (one attempt each, no resilience layer) ---------------------------


@pytest.mark.parametrize(
    ("reply", "error", "retryable"),
    [
        (status(400), BadRequest, False),
        (status(422), BadRequest, False),
        (status(401), AuthenticationError, False),
        (status(403), AuthenticationError, False),
        (status(404), ModelNotFound, False),
        (status(408), BackendTimeout, True),
        (status(409), BackendUnavailable, True),
        (status(429, retry_after="3"), BackendOverloaded, True),
        (status(500), BackendUnavailable, True),
        (status(502, body="<html>bad gateway</html>"), BackendUnavailable, True),
        (status(503, retry_after="1"), BackendOverloaded, True),
        (status(302, headers={"Location": "http://169.254.169.254/"}), EndpointRejected, False),
        (broken(after=0), BackendUnavailable, True),
        (broken(after=2), BackendUnavailable, True),
        (ok(done=False, finish_reason=None, sse=True), BackendUnavailable, True),
        (ok(body="not json", sse=False), BackendUnavailable, True),
    ],
    ids=lambda v: getattr(v, "__name__", None) if isinstance(v, type) else None,
)
async def test_errors_map_to_hierarchy(
    openai_server: FakeOpenAIServer, make: Any, reply: Reply, error: type[InferenceError], retryable: bool
) -> None:
    openai_server.script(reply)
    with pytest.raises(error) as info:
        await make().stream(MESSAGES, PARAMS).text()
    assert type(info.value) is error
    assert info.value.retryable is retryable
    assert info.value.backend == "fake"
    assert len(openai_server.completions) == 1  # the backend itself never retries, nor follows redirects


async def test_status_and_retry_after_on_error(openai_server: FakeOpenAIServer, make: Any) -> None:
    openai_server.script(status(429, retry_after="7"))
    with pytest.raises(BackendOverloaded) as info:
        await make().stream(MESSAGES, PARAMS).text()
    assert info.value.status == 429 and info.value.retry_after == 7.0


async def test_retry_after_ms_preferred(openai_server: FakeOpenAIServer, make: Any) -> None:
    openai_server.script(status(429, retry_after="7", headers={"retry-after-ms": "1500"}))
    with pytest.raises(BackendOverloaded) as info:
        await make().stream(MESSAGES, PARAMS).text()
    assert info.value.retry_after == 1.5


async def test_broken_stream_after_tokens(openai_server: FakeOpenAIServer, make: Any) -> None:
    openai_server.script(broken(after=2, text="one two three four"))
    pieces: list[str] = []
    with pytest.raises(BackendUnavailable, match="stream broken"):
        async for piece in make().stream(MESSAGES, PARAMS):
            pieces.append(piece)
    assert pieces == ["one ", "two "]


async def test_connection_refused(make: Any) -> None:
    backend = make(url=f"http://127.0.0.1:{unused_port()}/v1")
    with pytest.raises(BackendUnavailable):
        await backend.stream(MESSAGES, PARAMS).text()
    assert await backend.probe() is False


# --- through the resilience layer --------------------------------------------------------------------


async def test_429_retry_after_is_honoured(openai_server: FakeOpenAIServer, make: Any) -> None:
    openai_server.script(status(429, retry_after="2"), ok("after the wait"))
    clock = FakeClock()
    assert await resilient(make(), clock).stream(MESSAGES, PARAMS).text() == "after the wait"
    assert clock.sleeps == [2.0]
    assert len(openai_server.completions) == 2


async def test_429_retry_after_http_date_is_honoured(openai_server: FakeOpenAIServer, make: Any) -> None:
    when = email.utils.formatdate(timeval=time.time() + 20, usegmt=True)
    openai_server.script(status(429, retry_after=when), ok("later"))
    clock = FakeClock()
    assert await resilient(make(), clock).stream(MESSAGES, PARAMS).text() == "later"
    assert len(clock.sleeps) == 1 and 17 <= clock.sleeps[0] <= 20


@pytest.mark.parametrize("retry_after", ["120", "inf"])
async def test_429_retry_after_beyond_cap_gives_up(
    openai_server: FakeOpenAIServer, make: Any, retry_after: str
) -> None:
    openai_server.script(status(429, retry_after=retry_after), ok("never"))
    clock = FakeClock()
    with pytest.raises(BackendOverloaded):
        await resilient(make(), clock).stream(MESSAGES, PARAMS).text()
    assert clock.sleeps == []
    assert len(openai_server.completions) == 1


async def test_429_without_retry_after_uses_backoff(openai_server: FakeOpenAIServer, make: Any) -> None:
    openai_server.script(status(429, retry_after=""), ok("ok"))
    clock = FakeClock()
    rb = resilient(make(), clock, backoff_base_s=0.5, backoff_cap_s=8)
    assert await rb.stream(MESSAGES, PARAMS).text() == "ok"
    assert len(clock.sleeps) == 1 and 0.375 <= clock.sleeps[0] <= 0.5


async def test_500_then_success(openai_server: FakeOpenAIServer, make: Any) -> None:
    openai_server.script(status(500), ok("second time lucky"))
    clock = FakeClock()
    assert await resilient(make(), clock).stream(MESSAGES, PARAMS).text() == "second time lucky"
    assert len(openai_server.completions) == 2
    assert len(clock.sleeps) == 1


async def test_broken_before_first_token_is_retried(openai_server: FakeOpenAIServer, make: Any) -> None:
    openai_server.script(broken(after=0), ok("whole answer"))
    assert await resilient(make(), FakeClock()).stream(MESSAGES, PARAMS).text() == "whole answer"
    assert len(openai_server.completions) == 2


async def test_broken_after_tokens_is_not_retried(openai_server: FakeOpenAIServer, make: Any) -> None:
    openai_server.script(broken(after=1), ok("whole answer"))
    clock = FakeClock()
    stream = resilient(make(), clock).stream(MESSAGES, PARAMS)
    pieces: list[str] = []
    with pytest.raises(BackendUnavailable, match="stream broken"):
        async for piece in stream:
            pieces.append(piece)
    assert pieces == ["one "]
    assert len(openai_server.completions) == 1 and clock.sleeps == []


async def test_connection_refused_after_retries(make: Any) -> None:
    clock = FakeClock()
    rb = resilient(make(url=f"http://127.0.0.1:{unused_port()}/v1"), clock, max_attempts=3)
    with pytest.raises(BackendUnavailable, match="Cannot connect"):
        await rb.stream(MESSAGES, PARAMS).text()
    assert len(clock.sleeps) == 2


@pytest.mark.parametrize("code", [400, 404, 422])
async def test_bad_request_not_retried_and_no_cooldown(openai_server: FakeOpenAIServer, make: Any, code: int) -> None:
    clock = FakeClock()
    rb = resilient(make(), clock)
    for _ in range(5):
        openai_server.script(status(code))
        with pytest.raises(BadRequest):
            await rb.stream(MESSAGES, PARAMS).text()
    assert len(openai_server.completions) == 5 and clock.sleeps == []
    assert rb.available


async def test_401_cools_down_at_once(openai_server: FakeOpenAIServer, make: Any) -> None:
    openai_server.script(status(401))
    clock = FakeClock()
    backend = make()
    rb = ResilientBackend(backend, backend.spec.model_copy(update={"cooldown": Cooldown(duration_s=45)}), clock=clock)
    with pytest.raises(AuthenticationError):
        await rb.stream(MESSAGES, PARAMS).text()
    assert not rb.available and rb.cooldown_remaining == 45
    with pytest.raises(BackendUnavailable, match="cooling down"):
        await rb.stream(MESSAGES, PARAMS).text()
    assert len(openai_server.completions) == 1  # the second request never left the process
    clock.advance(45)
    assert await rb.stream(MESSAGES, PARAMS).text()  # the half-open probe succeeds
    assert rb.available


async def test_stalled_first_token_times_out(openai_server: FakeOpenAIServer, make: Any) -> None:
    release = asyncio.Event()  # never set by the test: closing the server releases the handler
    openai_server.script(stall(release))
    backend = make()
    spec = backend.spec.model_copy(
        update={
            "timeouts": Timeouts(connect_s=2, first_token_s=0.2, total_s=30),
            "retry": RetryPolicy(max_attempts=1),
        }
    )
    rb = ResilientBackend(backend, spec, clock=FakeClock())
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BackendTimeout, match="first-token"):
        await rb.stream(MESSAGES, PARAMS).text()
    assert 0.2 <= loop.time() - started < 5
    assert len(openai_server.completions) == 1
    # The timed-out stream was closed: the next request gets a fresh connection and an answer.
    assert await rb.stream(MESSAGES, PARAMS).text()


async def test_stalled_then_released_answers(openai_server: FakeOpenAIServer, make: Any) -> None:
    release = asyncio.Event()
    openai_server.script(stall(release, text="finally here"))
    task = asyncio.create_task(make().stream(MESSAGES, PARAMS).text())
    await openai_server.wait_for_requests(1)  # the server now holds the request
    assert not task.done()
    release.set()
    assert await task == "finally here"


# --- probe and sessions ------------------------------------------------------------------------------


async def test_probe(openai_server: FakeOpenAIServer, make: Any) -> None:
    backend = make()
    assert await backend.probe()
    assert [r.path for r in openai_server.requests] == ["/v1/models"]

    openai_server.models_status = 500  # transformers serve: /models fails, completions work
    assert await backend.probe()
    assert openai_server.requests[-1].path == "/v1/chat/completions"
    assert openai_server.requests[-1].body["max_tokens"] == 1

    openai_server.models_status = 401
    assert await backend.probe() is False


async def test_shared_session_is_not_closed(openai_server: FakeOpenAIServer) -> None:
    async with aiohttp.ClientSession() as session:
        backend = OpenAIBackend("shared", spec_for(openai_server), session)
        await backend.start()
        assert await backend.stream(MESSAGES, PARAMS).text()
        await backend.aclose()
        assert not session.closed


async def test_own_session_is_closed_and_aclose_twice_is_safe(openai_server: FakeOpenAIServer) -> None:
    backend = OpenAIBackend("own", spec_for(openai_server))
    await backend.start()
    session = backend._session
    assert session is not None
    assert await backend.stream(MESSAGES, PARAMS).text()
    await backend.aclose()
    await backend.aclose()
    assert session.closed


# --- Retry-After parsing -----------------------------------------------------------------------------

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2", 2.0),
        ("0", 0.0),
        ("1.5", 1.5),
        (" 30 ", 30.0),
        ("120", 120.0),
        ("inf", math.inf),
        ("Infinity", math.inf),
        (email.utils.formatdate(NOW + 45, usegmt=True), 45.0),
        (email.utils.formatdate(NOW - 45, usegmt=True), 0.0),  # a date in the past: retry now
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("", None),
        ("   ", None),
        (None, None),
        ("-1", None),
        ("nan", None),
        ("soon", None),
        ("Wed, 99 Foo 2015", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


# --- structured output: response_format, vLLM's fields on opt-in, raw completions, logprobs ---------------


PERSON = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


async def test_json_constraint_goes_out_as_response_format(openai_server: FakeOpenAIServer, make: Any) -> None:
    openai_server.script(ok('{"name": "Ann"}'))
    params = GenerationParams(constraint=Constraint("json_schema", schema=PERSON))
    assert await make().stream(MESSAGES, params).text() == '{"name": "Ann"}'
    body = openai_server.completions[0].body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {**PERSON, "additionalProperties": False}, "strict": True},
    }


async def test_a_server_that_refuses_response_format_is_asked_again_without_it(
    openai_server: FakeOpenAIServer, make: Any
) -> None:
    openai_server.reject_response_format = True
    backend = make()
    params = GenerationParams(constraint=Constraint("json_schema", schema=PERSON))
    assert await backend.stream(MESSAGES, params).text() == "Hello from the fake server."
    assert await backend.stream(MESSAGES, params).text() == "Hello from the fake server."
    sent = [r.body for r in openai_server.completions]
    assert ["response_format" in b for b in sent] == [True, False, False]  # learnt once, remembered


@pytest.mark.parametrize(
    ("constraint", "field", "value"),
    [
        (Constraint("regex", pattern="[0-9]+"), "guided_regex", "[0-9]+"),
        (Constraint("choice", choices=("yes", "no")), "guided_choice", ["yes", "no"]),
    ],
)
async def test_regex_and_choice_use_vllm_fields_only_when_the_endpoint_opts_in(
    openai_server: FakeOpenAIServer, make: Any, constraint: Constraint, field: str, value: object
) -> None:
    params = GenerationParams(constraint=constraint)
    await make().stream(MESSAGES, params).text()
    await make(extra_body={"guided_decoding": "vllm"}).stream(MESSAGES, params).text()
    plain, opted = (r.body for r in openai_server.completions)
    assert field not in plain and "response_format" not in plain
    assert opted[field] == value and "guided_decoding" not in opted  # the opt-in itself is not sent


@pytest.mark.parametrize("stream", [True, False])
async def test_raw_goes_to_completions_with_the_joined_prompt(
    openai_server: FakeOpenAIServer, make: Any, stream: bool
) -> None:
    openai_server.script(ok("and they lived happily"))
    text = await make(stream=stream).stream(MESSAGES, GenerationParams(raw=True)).text()
    assert text == "and they lived happily"
    (request,) = openai_server.text_completions
    assert request.body["prompt"] == "Be brief.\n\nSay hi" and "messages" not in request.body
    assert openai_server.completions == []


async def test_raw_falls_back_to_chat_on_a_server_without_completions(
    openai_server: FakeOpenAIServer, make: Any
) -> None:
    openai_server.text_completions_enabled = False
    backend = make()
    assert await backend.stream(MESSAGES, GenerationParams(raw=True)).text() == "Hello from the fake server."
    assert await backend.stream(MESSAGES, GenerationParams(raw=True)).text() == "Hello from the fake server."
    assert len(openai_server.text_completions) == 1 and len(openai_server.completions) == 2


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("raw", [True, False])
async def test_logprobs_are_asked_for_and_recorded(
    openai_server: FakeOpenAIServer, make: Any, stream: bool, raw: bool
) -> None:
    logprobs = (("ye", -0.1, {"ye": -0.1, "no": -2.5}), ("s", -0.01, {"s": -0.01}))
    openai_server.script(ok("yes", logprobs=logprobs))
    answer = make(stream=stream).stream(MESSAGES, GenerationParams(logprobs=3, raw=raw))
    assert await answer.text() == "yes"
    assert answer.logprobs == [
        TokenLogprob("ye", -0.1, (("ye", -0.1), ("no", -2.5))),
        TokenLogprob("s", -0.01, (("s", -0.01),)),
    ]
    body = openai_server.requests[-1].body
    assert body["logprobs"] == 3 if raw else (body["logprobs"] is True and body["top_logprobs"] == 3)
