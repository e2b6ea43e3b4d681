"""OpenAI's tools protocol in OpenAIBackend: ``tools`` out, ``tool_calls`` back (JSON and SSE, parallel calls),
the calls and their results sent back in the next request, and the bounds on what a server may send.

A scripted server on 127.0.0.1 (tests/fakes/tool_server.py) answers each POST with the next body of its script.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from inference.backends.openai import OpenAIBackend
from inference.errors import ResponseTooLarge
from inference.types import ChatMessage, GenerationParams, ToolCall
from tests.fakes.openai_server import spec_for
from tests.fakes.tool_server import ScriptedServer

CALC = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "arithmetic",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}
PARAMS = GenerationParams(max_new_tokens=64, tools=(CALC,), tool_choice="auto")
ASK = [ChatMessage("user", "what is 37*91 and 2+2?")]


@pytest_asyncio.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    s = ScriptedServer()
    await s.start()
    yield s
    await s.aclose()


@pytest_asyncio.fixture
async def backend(server: ScriptedServer) -> AsyncIterator[OpenAIBackend]:
    b = OpenAIBackend("tools", spec_for(server.base_url))
    yield b
    await b.aclose()


def call(index: int, ident: str, name: str, arguments: str) -> dict[str, Any]:
    return {"index": index, "id": ident, "type": "function", "function": {"name": name, "arguments": arguments}}


async def test_tools_go_out_and_parallel_calls_come_back_from_json(server: ScriptedServer, backend: OpenAIBackend):
    server.json(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "a",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression":"37*91"}'},
                },
                {
                    "id": "b",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression":"2+2"}'},
                },
            ],
        }
    )
    stream = backend.stream(ASK, PARAMS)
    assert await stream.text() == ""
    assert stream.tool_calls == [
        ToolCall("a", "calculator", {"expression": "37*91"}),
        ToolCall("b", "calculator", {"expression": "2+2"}),
    ]
    (body,) = server.bodies
    assert body["tools"] == [CALC] and body["tool_choice"] == "auto"


async def test_streamed_deltas_are_accumulated_by_index(server: ScriptedServer, backend: OpenAIBackend):
    # Two calls interleaved, arguments split mid-token, the name and id only in each call's first delta.
    server.sse(
        [
            {"role": "assistant", "content": "Let me check. "},
            {"tool_calls": [call(0, "a", "calculator", "")]},
            {"tool_calls": [{"index": 0, "function": {"arguments": '{"expre'}}]},
            {"tool_calls": [call(1, "b", "calculator", '{"expression"')]},
            {"tool_calls": [{"index": 0, "function": {"arguments": 'ssion":"37*91"}'}}]},
            {"tool_calls": [{"index": 1, "function": {"arguments": ':"2+2"}'}}]},
        ]
    )
    stream = backend.stream(ASK, PARAMS)
    assert await stream.text() == "Let me check. "
    assert [(c.id, c.name, c.arguments) for c in stream.tool_calls] == [
        ("a", "calculator", {"expression": "37*91"}),
        ("b", "calculator", {"expression": "2+2"}),
    ]


async def test_arguments_that_are_not_a_json_object_become_the_calls_error(
    server: ScriptedServer, backend: OpenAIBackend
):
    server.sse(
        [{"tool_calls": [call(0, "a", "calculator", '{"expression": ')]}, {"tool_calls": [call(1, "", "x", "[1]")]}]
    )
    stream = backend.stream(ASK, PARAMS)
    await stream.text()
    first, second = stream.tool_calls
    assert first.error is not None and "not valid JSON" in first.error and first.arguments == {}
    assert second.id == "call_1" and second.error == "the arguments are not a JSON object"


async def test_a_broken_stream_runs_no_half_written_call(server: ScriptedServer, backend: OpenAIBackend):
    from inference.errors import BackendUnavailable

    server.sse([{"tool_calls": [call(0, "a", "calculator", '{"expression":"1+1"}')]}], finish=None, done=False)
    stream = backend.stream(ASK, PARAMS)
    with pytest.raises(BackendUnavailable):
        await stream.text()
    assert stream.tool_calls == []


async def test_calls_and_results_go_back_in_the_next_request(server: ScriptedServer, backend: OpenAIBackend):
    server.json({"role": "assistant", "content": "37*91 = 3367"}, finish="stop")
    convo = [
        *ASK,
        ChatMessage("assistant", "", tool_calls=(ToolCall("a", "calculator", {"expression": "37*91"}),)),
        ChatMessage("tool", '{"tool": "calculator", "ok": true, "result": "3367"}', tool_call_id="a"),
    ]
    stream = backend.stream(convo, PARAMS)
    assert await stream.text() == "37*91 = 3367" and stream.tool_calls == []
    messages = server.bodies[0]["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "37*91"}'}}
        ],
    }
    assert messages[2] == {"role": "tool", "content": '{"tool": "calculator", "ok": true, "result": "3367"}',
                           "tool_call_id": "a"}  # fmt: skip


async def test_without_tools_nothing_about_tools_is_sent(server: ScriptedServer, backend: OpenAIBackend):
    server.json({"role": "assistant", "content": "hi"}, finish="stop")
    assert await backend.stream(ASK, GenerationParams(max_new_tokens=8)).text() == "hi"
    assert "tools" not in server.bodies[0] and "tool_choice" not in server.bodies[0]


async def test_a_server_streaming_tool_call_arguments_forever_is_cut_off(
    server: ScriptedServer, backend: OpenAIBackend
):
    piece = {"tool_calls": [{"index": 0, "function": {"arguments": "x" * 60_000}}]}
    server.sse([{"tool_calls": [call(0, "a", "calculator", "")]}, *[piece] * 6])
    with pytest.raises(ResponseTooLarge):
        await backend.stream(ASK, PARAMS).text()


async def test_too_many_parallel_calls_are_refused(server: ScriptedServer, backend: OpenAIBackend):
    server.sse([{"tool_calls": [call(i, f"c{i}", "calculator", "{}") for i in range(40)]}])
    with pytest.raises(ResponseTooLarge):
        await backend.stream(ASK, PARAMS).text()


async def test_a_server_that_streams_nothing_for_tools_is_asked_again_unstreamed(
    server: ScriptedServer, backend: OpenAIBackend
):
    """llama-cpp-python's server answers a streamed request with an automatic tool choice by an empty stream."""
    calculator = {"id": "a", "type": "function", "function": {"name": "calculator", "arguments": '{"expression":"2"}'}}
    server.sse([], finish=None, done=False)  # 200, text/event-stream, not one event
    server.json({"role": "assistant", "content": None, "tool_calls": [calculator]})
    server.json({"role": "assistant", "content": None, "tool_calls": [calculator]})
    for _ in range(2):
        stream = backend.stream(ASK, PARAMS)
        assert await stream.text() == ""
        assert [(c.name, c.arguments) for c in stream.tool_calls] == [("calculator", {"expression": "2"})]
    # Asked once streamed, then unstreamed, and unstreamed from then on.
    assert [body["stream"] for body in server.bodies] == [True, False, False]


async def test_an_empty_stream_without_tools_is_still_an_error(server: ScriptedServer, backend: OpenAIBackend):
    from inference.errors import BackendUnavailable

    server.sse([], finish=None, done=False)
    with pytest.raises(BackendUnavailable, match="ended without"):
        await backend.stream(ASK, GenerationParams(max_new_tokens=8)).text()
    assert len(server.bodies) == 1
