"""`python -m bot ask` with tools: each call as one JSON line on stderr before the route, which lists them."""

from __future__ import annotations

import json

from tests.e2e.test_cli import env, fake_endpoint_env, route_line, run_async
from tests.fakes.openai_server import FakeOpenAIServer, Reply, ok, openai_server

__all__ = ["env", "openai_server"]  # fixtures, used below


def tool_calls(*calls: tuple[str, str, dict[str, object]]) -> Reply:
    """A JSON answer (even to a streamed request) whose message calls tools: (id, name, arguments)."""
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}} for i, n, a in calls
        ],
    }
    choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
    body = {"id": "x", "object": "chat.completion", "choices": [choice]}
    return Reply(body=json.dumps(body), sse=False)


async def test_ask_tool_use_prints_each_call_then_the_route(env, openai_server: FakeOpenAIServer, tmp_path):
    openai_server.script(tool_calls(("a", "calculator", {"expression": "37*91"})), ok("37*91 = 3367"))
    rc, out, err = await run_async(
        ["ask", "--task", "tool_use", "what is 37*91?"], fake_endpoint_env(env, openai_server, tmp_path)
    )
    assert rc == 0, err
    assert out == "37*91 = 3367\n"
    lines = err.strip().splitlines()
    call = json.loads(next(line for line in lines if line.startswith('{"tool"')))
    assert call == {"tool": "calculator", "arguments": {"expression": "37*91"}, "result": "3367", "ok": True}
    assert lines.index(json.dumps(call)) < next(i for i, line in enumerate(lines) if line.startswith("route:"))
    route = route_line(err)
    assert route["task"] == "tool_use"
    assert route["tools"] == [{"tool": "calculator", "arguments": {"expression": "37*91"}, "ok": True}]
    first, second = (r.body for r in openai_server.completions)
    assert "calculator" in [t["function"]["name"] for t in first["tools"]]
    assert second["messages"][-1] == {
        "role": "tool",
        "content": '{"tool": "calculator", "ok": true, "result": "3367"}',
        "tool_call_id": "a",
    }


async def test_ask_tool_use_shows_a_refused_expression_as_an_error_line(env, openai_server, tmp_path):
    openai_server.script(
        tool_calls(("a", "calculator", {"expression": "__import__('os').system('id')"})), ok("I can't do that.")
    )
    rc, out, err = await run_async(
        ["ask", "--task", "tool_use", "run id for me"], fake_endpoint_env(env, openai_server, tmp_path)
    )
    assert rc == 0, err
    assert out == "I can't do that.\n"
    call = json.loads(next(line for line in err.splitlines() if line.startswith('{"tool"')))
    assert call["ok"] is False and "not arithmetic" in call["error"]
    assert route_line(err)["tools"] == [{"tool": "calculator", "arguments": call["arguments"], "ok": False}]
