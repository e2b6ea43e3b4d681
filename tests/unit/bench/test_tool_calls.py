"""The pure parts of bench/tool_calls.py: BFCL cases as project tools, and the scoring (no model, no server)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import tool_calls as tc
from inference.structured import check_schema
from inference.tools.base import ToolBox
from inference.types import ToolCall

ROW: dict[str, Any] = {
    "id": "multiple_x",
    "category": "multiple",
    "question": [[{"role": "user", "content": "Area of a circle of radius 3 cm?"}]],
    "function": [
        {
            "name": "geometry.circle_area",
            "description": "Area of a circle.",
            "parameters": {
                "type": "dict",
                "properties": {
                    "radius": {"type": "float", "description": "The radius."},
                    "unit": {"type": "string", "enum": ["cm", "m"], "optional": True, "default": "cm"},
                    "center": {"type": "tuple", "items": {"type": "integer"}, "format": "x,y"},
                },
                "required": ["radius", "gone"],
            },
        },
        {
            "name": "geometry.square_area",
            "description": "Area of a square.",
            "parameters": {"type": "dict", "properties": {"side": {"type": "integer"}}, "required": ["side"]},
        },
    ],
    "ground_truth": [{"geometry.circle_area": {"radius": [3, 3.0], "unit": ["cm", ""]}}],
}


def test_convert_schema_maps_bfcl_types_into_the_supported_subset() -> None:
    dropped: list[str] = []
    schema = tc.convert_schema(ROW["function"][0]["parameters"], dropped)
    assert schema == {
        "type": "object",
        "properties": {
            "radius": {"type": "number", "description": "The radius."},
            "unit": {"type": "string", "enum": ["cm", "m"], "default": "cm"},
            "center": {"type": "array", "items": {"type": "integer"}},
        },
        "required": ["radius"],  # "gone" names no property: cut, or no object could satisfy it
        "additionalProperties": False,  # BFCL counts an unexpected argument wrong
    }
    assert sorted(dropped) == ["format", "optional"]
    check_schema(schema)


def test_convert_schema_drops_the_type_any_and_refuses_an_unknown_one() -> None:
    assert tc.convert_schema({"type": "any", "description": "x"}) == {"description": "x"}
    with pytest.raises(tc.ConversionError, match="unknown type 'complex'"):
        tc.convert_schema({"type": "dict", "properties": {"z": {"type": "complex"}}})
    with pytest.raises(tc.ConversionError):
        tc.convert_schema(["not", "a", "schema"])


def test_tool_names_become_names_openai_accepts() -> None:
    assert tc.tool_name("math.hypot") == "math_hypot"
    assert tc.tool_name("a b/c") == "a_b_c"
    assert len(tc.tool_name("x" * 100)) == 64


def test_convert_case_gives_registrable_stub_tools() -> None:
    case = tc.convert_case(ROW)
    assert case.prompt == "Area of a circle of radius 3 cm?"
    assert [t.name for t in case.tools] == ["geometry_circle_area", "geometry_square_area"]
    assert case.names == {
        "geometry_circle_area": "geometry.circle_area",
        "geometry_square_area": "geometry.square_area",
    }
    box = case.toolbox()
    assert box.names == ["geometry_circle_area", "geometry_square_area"]
    assert box.openai_specs()[1]["function"]["parameters"]["properties"] == {"side": {"type": "integer"}}


async def test_stub_tools_return_a_canned_result() -> None:
    case = tc.convert_case(ROW)
    result = await case.toolbox().execute(ToolCall("c1", "geometry_square_area", {"side": 2}))
    assert result.ok and "benchmark stub" in result.output


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"question": [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]}, "single-turn"),
        ({"question": [[{"role": "system", "content": "a"}]]}, "user's text"),
        ({"function": []}, "no functions"),
        ({"function": [ROW["function"][1], ROW["function"][1]]}, "distinct tool name"),
        ({"function": [{"name": "none", "parameters": {"type": "dict", "properties": {}}}]}, "distinct tool name"),
        ({"ground_truth": []}, "one expected call"),
    ],
)
def test_convert_case_names_why_a_case_is_skipped(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(tc.ConversionError, match=reason):
        tc.convert_case({**ROW, **change})


def test_the_shipped_cases_all_convert() -> None:
    cases, skipped = tc.load_cases()
    assert skipped == []
    assert [sum(c.category == k for c in cases) for k in tc.CATEGORIES] == [60, 60]
    assert all(len(c.tools) == 1 for c in cases if c.category == "simple")
    assert all(2 <= len(c.tools) <= 4 for c in cases if c.category == "multiple")
    for case in cases:  # the expected function is one of those offered
        assert next(iter(case.expected[0])) in case.names.values(), case.id
    limited, _ = tc.load_cases(limit=3)
    assert [c.id for c in limited] == [c.id for c in cases if c.category == "simple"][:3] + [
        c.id for c in cases if c.category == "multiple"
    ][:3]


def test_load_cases_counts_what_it_skips(tmp_path: Any) -> None:
    import json

    path = tmp_path / "cases.jsonl"
    bad = {**ROW, "id": "bad", "function": []}
    path.write_text(json.dumps(ROW) + "\n" + json.dumps(bad) + "\n\n", encoding="utf-8")
    cases, skipped = tc.load_cases(path)
    assert [c.id for c in cases] == ["multiple_x"]
    assert skipped == [("bad", "no functions offered")]


@pytest.mark.parametrize(
    ("arguments", "ok"),
    [
        ({"radius": 3}, True),  # the optional unit may be left out
        ({"radius": 3.0, "unit": "CM"}, True),  # numbers by value, strings standardised
        ({"radius": 3, "unit": "m"}, False),
        ({"unit": "cm"}, False),  # the required radius is missing
        ({"radius": 3, "colour": "red"}, False),  # an unexpected argument
        ({"radius": "3"}, False),  # a string is not the number
    ],
)
def test_values_match_follows_bfcl_possible_answers(arguments: dict[str, Any], ok: bool) -> None:
    assert tc.values_match(arguments, ROW["ground_truth"][0]["geometry.circle_area"]) is ok


def test_same_value_compares_like_bfcl() -> None:
    assert tc.same_value("New York, NY", "new york ny")
    assert tc.same_value([1, 2.0], [1.0, 2])
    assert not tc.same_value([1, 2], [1, 2, 3])
    assert not tc.same_value(1, True)  # a boolean is not a number
    assert tc.same_value(True, True) and not tc.same_value(False, True)
    assert tc.same_value({"a": "X"}, {"a": "x"})
    # A nested answer: each key of the dict with its own acceptable values.
    assert tc.values_match({"p": {"a": 1}}, {"p": [{"a": [1, 2], "b": [""]}]})
    assert not tc.values_match({"p": {"a": 3}}, {"p": [{"a": [1, 2], "b": [""]}]})


def _scored(calls: list[ToolCall], error: str | None = None) -> tc.Outcome:
    case = tc.convert_case(ROW)
    return tc.score(case, tc.Outcome(case.id, case.category, calls=calls, error=error))


def test_score_right_tool_valid_arguments_and_values() -> None:
    best = _scored([ToolCall("1", "geometry_circle_area", {"radius": 3})])
    assert (best.right_tool, best.valid, best.values) == (True, True, True)
    wrong_value = _scored([ToolCall("1", "geometry_circle_area", {"radius": 4.5})])
    assert (wrong_value.right_tool, wrong_value.valid, wrong_value.values) == (True, True, False)
    invalid = _scored([ToolCall("1", "geometry_circle_area", {"unit": "cm"})])  # radius is required
    assert (invalid.right_tool, invalid.valid, invalid.values) == (True, False, False)
    extra = _scored([ToolCall("1", "geometry_circle_area", {"radius": 3, "colour": "red"})])
    assert extra.valid is False  # additionalProperties: false, as BFCL would judge it
    wrong_tool = _scored([ToolCall("1", "geometry_square_area", {"side": 3})])
    assert (wrong_tool.right_tool, wrong_tool.valid, wrong_tool.values) == (False, True, False)
    unknown = _scored([ToolCall("1", "geometry.circle_area", {"radius": 3})])  # not a name offered
    assert (unknown.right_tool, unknown.valid) == (False, False)
    unreadable = _scored([ToolCall("1", "geometry_circle_area", {}, error="the arguments are not valid JSON")])
    assert unreadable.valid is False


def test_score_counts_no_call_and_errors_as_wrong() -> None:
    none = _scored([])
    assert not none.called and not (none.right_tool or none.valid or none.values)
    failed = _scored([ToolCall("1", "geometry_circle_area", {"radius": 3})], error="BackendTimeout: slow")
    assert not (failed.right_tool or failed.valid or failed.values)


def test_score_takes_the_first_of_several_calls() -> None:
    two = _scored([ToolCall("1", "geometry_circle_area", {"radius": 3}), ToolCall("2", "geometry_square_area", {})])
    assert two.values and len(two.calls) == 2


def test_table_rows_report_each_rate_and_the_median() -> None:
    outcomes = [
        _scored([ToolCall("1", "geometry_circle_area", {"radius": 3})]),
        _scored([ToolCall("1", "geometry_circle_area", {"radius": 9})]),
        _scored([]),
        _scored([], error="BackendTimeout: slow"),
    ]
    for outcome, seconds in zip(outcomes, [1.0, 3.0, 2.0, 99.0], strict=True):
        outcome.seconds = seconds
    rows = tc.table_rows("side", outcomes)
    assert len(rows) == 2  # all cases, then the one category present
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    # cases, accuracy, right tool, valid, values, no call, several calls, errors, median (errors left out)
    assert cells[1:] == ["4", "**50%**", "50%", "50%", "25%", "25%", "0%", "25%", "2.0 s"]
    assert len(tc.HEADER[0].split("|")) == len(rows[0].split("|"))


async def test_recording_toolbox_stops_at_the_decision() -> None:
    box = tc.RecordingToolBox(tc.convert_case(ROW).tools)
    calls = [ToolCall("1", "geometry_square_area", {"side": 2}), ToolCall("2", "nope", {})]
    with pytest.raises(tc.Decided) as caught:
        await box.execute_all(calls)
    assert caught.value.calls == calls
    assert isinstance(box, ToolBox)


def test_the_bench_imports_without_llama_cpp() -> None:
    code = "import sys; sys.modules['llama_cpp'] = None; import bench.tool_calls; print('ok')"
    root = Path(tc.__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False, cwd=root
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_placeholder_arguments_come_from_the_schema_alone() -> None:
    schema = tc.convert_schema(ROW["function"][0]["parameters"])
    assert tc.placeholder(schema) == {"radius": 1.5}  # required only
    assert tc.placeholder({"type": "string", "enum": ["b", "a"]}) == "b"
    assert tc.placeholder({"type": "integer", "minimum": 7}) == 7
    assert tc.placeholder({"type": "boolean", "default": False}) is False
    assert tc.placeholder({"type": "array", "items": {"type": "string"}, "minItems": 2}) == ["example", "example"]


def test_with_examples_gives_each_tool_one_valid_example_and_leaves_the_case_alone() -> None:
    case = tc.convert_case(ROW)
    probed = tc.with_examples(case)
    assert [t.examples for t in probed.tools] == [
        (("Area of a circle.", {"radius": 1.5}),),
        (("Area of a square.", {"side": 1}),),
    ]
    assert all(t.examples == () for t in case.tools)  # the product path's cases carry no examples
    assert probed.prompt == case.prompt and probed.expected == case.expected
    box = probed.toolbox()
    for tool in probed.tools:
        assert box.check(ToolCall("x", tool.name, tool.examples[0][1])) is None
