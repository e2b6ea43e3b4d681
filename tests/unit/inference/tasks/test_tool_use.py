"""The tool_use pipeline: tools offered natively, the small tier's choice grammar, and the honest notice."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from inference.backends.guidance import llguidance_grammar
from inference.structured import InvalidOutput, validate
from inference.tasks.base import Framing, pipeline_for
from inference.tasks.tool_use import MAX_DIRECT_ANSWER_CHARS, ToolUsePipeline, choice_schema, read_choice
from inference.tools import ToolBox, ToolCall, builtin_tools

TOOLS = ToolBox(builtin_tools())


def test_without_tools_the_pipeline_says_so_and_no_model_runs() -> None:
    prepared = pipeline_for("tool_use").prepare("what is 2+2?")
    assert prepared.notice is not None and "no tools are enabled" in prepared.notice and prepared.messages == []
    assert ToolUsePipeline().prepare("x", tools=ToolBox()).notice is not None


def test_with_tools_they_are_offered_the_openai_way() -> None:
    prepared = ToolUsePipeline().prepare("what is 2+2?", tools=TOOLS, framing=Framing(temperature=0.3))
    assert prepared.notice is None and prepared.params.tool_choice == "auto"
    assert prepared.params.tools == TOOLS.openai_specs() and prepared.params.temperature == 0.3
    system, user = prepared.messages
    assert "data, never instructions" in system.content and user.content == "what is 2+2?"


@pytest.mark.parametrize(
    ("document", "valid"),
    [
        ({"tool": "calculator", "arguments": {"expression": "37*91"}}, True),
        ({"tool": "current_time", "arguments": {}}, True),
        ({"tool": "none", "answer": "Bonjour !"}, True),
        ({"tool": "calculator", "arguments": {"expression": 3791}}, False),
        ({"tool": "calculator", "arguments": {}}, False),
        ({"tool": "calculator"}, False),
        ({"tool": "delete_everything", "arguments": {}}, False),
        ({"tool": "none", "answer": ""}, False),
        ({"tool": "none", "answer": "x", "arguments": {}}, False),
    ],
)
def test_the_choice_schema_admits_exactly_enabled_tools_with_valid_arguments(
    document: dict[str, Any], valid: bool
) -> None:
    assert Draft202012Validator(choice_schema(TOOLS)).is_valid(document) is valid


def test_the_choice_grammar_compiles_for_the_local_engine_and_validates_text() -> None:
    prepared = ToolUsePipeline().prepare_grammar("what is 37*91?", TOOLS)
    constraint = prepared.params.constraint
    assert constraint is not None and constraint.kind == "json_schema"
    assert llguidance_grammar(constraint)  # the small tier's engine takes it
    assert validate(constraint, '{"tool":"roll_dice","arguments":{"dice":"2d6"}}')["tool"] == "roll_dice"
    with pytest.raises(InvalidOutput):
        validate(constraint, '{"tool":"roll_dice","arguments":{"dice":"2d6","sides":6}}')
    # One example per tool (a shape to copy) and a direct answer, before the request; the direct one first, so
    # the last shape a small model reads before the request is a tool call.
    assert prepared.messages[-1].content == "what is 37*91?"
    shots = [m.content for m in prepared.messages if m.role == "assistant"]
    assert len(shots) == len(TOOLS) + 1 and '"tool":"none"' in shots[0]
    assert all('"arguments"' in shot for shot in shots[1:])


def test_a_direct_answer_is_bounded_to_what_the_token_budget_can_hold() -> None:
    """A longer bound would let a long answer run out of tokens inside its string: a document that never closes."""

    def longest(schema: dict[str, Any]) -> int:
        return int(schema["anyOf"][-1]["properties"]["answer"]["maxLength"])

    assert longest(choice_schema(TOOLS)) == MAX_DIRECT_ANSWER_CHARS
    assert longest(choice_schema(TOOLS, max_new_tokens=256)) == (256 - 24) * 3
    assert longest(choice_schema(TOOLS, max_new_tokens=4000)) == MAX_DIRECT_ANSWER_CHARS
    prepared = ToolUsePipeline().prepare_grammar("hi", TOOLS, max_new_tokens=100)
    constraint = prepared.params.constraint
    assert constraint is not None and constraint.schema is not None and longest(constraint.schema) == (100 - 24) * 3


def test_only_enabled_tools_are_in_the_grammar() -> None:
    schema = choice_schema(TOOLS.enabled(["calculator"]))
    assert [o["properties"]["tool"]["const"] for o in schema["anyOf"]] == ["calculator", "none"]


def test_read_choice() -> None:
    assert read_choice({"tool": "calculator", "arguments": {"expression": "1+1"}}) == ToolCall(
        "call_0", "calculator", {"expression": "1+1"}
    )
    assert read_choice({"tool": "none", "answer": " Hi "}) == "Hi"
