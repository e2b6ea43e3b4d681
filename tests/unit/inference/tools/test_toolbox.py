"""ToolBox: arguments validated before a tool runs, a time limit per call, every failure an error result."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inference.tools import ToolBox, ToolCall, ToolError, builtin_tools
from inference.tools.base import MAX_OUTPUT_CHARS, Tool


class Recorder(Tool):
    """Records the arguments it ran with; ``behaviour`` decides what a call does."""

    name = "recorder"
    description = "records its calls"
    parameters = {  # noqa: RUF012 - a JSON Schema, read only
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 10}},
        "required": ["n"],
        "additionalProperties": False,
    }
    timeout_s = 0.05

    def __init__(self, behaviour: str = "ok") -> None:
        self.behaviour = behaviour
        self.ran: list[dict[str, Any]] = []
        self.never = asyncio.Event()

    async def run(self, args: dict[str, Any]) -> str | dict[str, Any]:
        self.ran.append(args)
        if self.behaviour == "hang":
            await self.never.wait()  # never set: only the time limit ends it
        if self.behaviour == "refuse":
            raise ToolError("n is unlucky")
        if self.behaviour == "bug":
            raise KeyError("oops")
        if self.behaviour == "huge":
            return "x" * (MAX_OUTPUT_CHARS * 3)
        return {"double": args["n"] * 2}


async def test_a_valid_call_runs_and_its_result_is_text_for_the_model() -> None:
    tool = Recorder()
    result = await ToolBox([tool]).execute(ToolCall("c1", "recorder", {"n": 4}))
    assert result.ok and result.output == '{"double": 8}' and tool.ran == [{"n": 4}]
    assert result.as_json() == {"tool": "recorder", "arguments": {"n": 4}, "result": '{"double": 8}', "ok": True}
    assert result.duration_s >= 0


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({}, "'n' is a required property"),
        ({"n": "4"}, "'4' is not of type 'integer'"),
        ({"n": 11}, "11 is greater than the maximum of 10"),
        ({"n": 1, "rm": "-rf"}, "Additional properties are not allowed"),
    ],
)
async def test_invalid_arguments_are_refused_before_the_tool_runs(arguments: dict[str, Any], words: str) -> None:
    tool = Recorder()
    result = await ToolBox([tool]).execute(ToolCall("c1", "recorder", arguments))
    assert not result.ok and words in (result.error or "") and "invalid arguments for recorder" in result.output
    assert tool.ran == []  # never ran


async def test_unknown_tools_and_unreadable_arguments_are_error_results() -> None:
    box = ToolBox([Recorder()])
    unknown = await box.execute(ToolCall("c1", "rm_rf", {}))
    assert not unknown.ok and "no tool named 'rm_rf'" in unknown.output and "recorder" in unknown.output
    garbled = await box.execute(ToolCall("c2", "recorder", {}, error="the arguments are not valid JSON"))
    assert not garbled.ok and garbled.output == "the arguments are not valid JSON"


async def test_a_call_past_its_time_limit_is_stopped_and_reported() -> None:
    result = await ToolBox([Recorder("hang")]).execute(ToolCall("c1", "recorder", {"n": 1}))
    assert not result.ok and "took longer than 0.05s" in result.output


@pytest.mark.parametrize(("behaviour", "words"), [("refuse", "n is unlucky"), ("bug", "recorder failed (KeyError)")])
async def test_a_failing_tool_becomes_an_error_the_model_sees_never_an_exception(behaviour: str, words: str) -> None:
    result = await ToolBox([Recorder(behaviour)]).execute(ToolCall("c1", "recorder", {"n": 1}))
    assert not result.ok and result.output == words
    assert '"ok": false' in result.for_model() and words in result.for_model()


async def test_output_is_bounded() -> None:
    result = await ToolBox([Recorder("huge")]).execute(ToolCall("c1", "recorder", {"n": 1}))
    assert result.ok and len(result.output) < MAX_OUTPUT_CHARS + 100 and result.output.endswith("more characters]")


async def test_parallel_calls_run_together_and_keep_their_order() -> None:
    gate = asyncio.Event()
    seen: list[int] = []

    class Waiter(Recorder):
        timeout_s = 5.0

        async def run(self, args: dict[str, Any]) -> str:
            seen.append(args["n"])
            if len(seen) == 3:
                gate.set()  # the third call releases all three: they must be running at once
            await gate.wait()
            return str(args["n"])

    box = ToolBox([Waiter()])
    results = await box.execute_all([ToolCall(str(n), "recorder", {"n": n}) for n in (3, 1, 2)])
    assert [r.output for r in results] == ["3", "1", "2"] and all(r.ok for r in results)


def test_registration_refuses_bad_names_duplicates_and_unenforceable_schemas() -> None:
    box = ToolBox([Recorder()])
    with pytest.raises(ValueError, match="already registered"):
        box.register(Recorder())
    for bad in ("has space", "none", "", "x" * 65):
        tool = Recorder()
        tool.name = bad
        with pytest.raises(ValueError, match="tool name"):
            ToolBox([tool])
    tool = Recorder()
    tool.parameters = {"type": "object", "properties": {"a": {"$ref": "#/x"}}}
    with pytest.raises(ValueError, match="unsupported keyword '\\$ref'"):
        ToolBox([tool])
    tool.parameters = {"type": "string"}
    with pytest.raises(ValueError, match="type object"):
        ToolBox([tool])


async def test_only_enabled_tools_are_offered_or_run() -> None:
    box = ToolBox(builtin_tools()).enabled(["calculator", "roll_dice", "gone_since"])
    assert box.names == ["calculator", "roll_dice"]
    assert [s["function"]["name"] for s in box.openai_specs()] == ["calculator", "roll_dice"]
    spec = box.openai_specs()[0]
    assert spec["type"] == "function" and spec["function"]["parameters"]["required"] == ["expression"]
    result = await box.execute(ToolCall("c", "convert_units", {"value": 1, "from_unit": "km", "to_unit": "m"}))
    assert not result.ok and "no tool named 'convert_units'" in result.output


class Poster(Recorder):
    """A tool that acts (speaks for the bot elsewhere): it may run only when the person confirms."""

    name = "poster"
    acts = True


@pytest.mark.parametrize("answer", [None, False, True, "raises"])
async def test_a_call_that_acts_runs_only_when_the_person_confirms(answer: object) -> None:
    tool = Poster()
    asked: list[tuple[str, dict[str, Any]]] = []

    async def confirm(t: Tool, args: dict[str, Any]) -> bool:
        asked.append((t.name, args))
        if answer == "raises":
            raise RuntimeError("the prompt could not be posted")
        return bool(answer)

    box = ToolBox([tool])
    call = ToolCall("c1", "poster", {"n": 1})
    result = await box.execute(call, confirm=None if answer is None else confirm)
    if answer is True:
        assert result.ok and not result.unconfirmed and tool.ran == [{"n": 1}] and asked == [("poster", {"n": 1})]
    else:
        assert not result.ok and tool.ran == [] and result.unconfirmed
        assert "confirm" in result.output
    # A call with invalid arguments is refused before anyone is asked.
    asked.clear()
    bad = await box.execute(ToolCall("c2", "poster", {"n": 99}), confirm=confirm)
    assert not bad.ok and asked == []


async def test_calls_that_do_not_act_never_ask() -> None:
    async def confirm(t: Tool, args: dict[str, Any]) -> bool:
        raise AssertionError("asked for a tool that does not act")

    result = await ToolBox([Recorder()]).execute(ToolCall("c1", "recorder", {"n": 2}), confirm=confirm)
    assert result.ok
