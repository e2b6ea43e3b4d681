"""The built-in tools: calculator (arithmetic only), dates and time zones, units, dice."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import pytest

from inference.tools import ToolBox, ToolCall, builtin_tools
from inference.tools.calculator import evaluate

#: A fixed "now" for the date tools: Tuesday 1 December 2026, 12:00 UTC.
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def box() -> ToolBox:
    return ToolBox(builtin_tools(now=lambda: NOW, rng=random.Random(7)))


async def run(name: str, **arguments: Any) -> tuple[bool, str]:
    result = await box().execute(ToolCall("c", name, arguments))
    return result.ok, result.output


# --- calculator ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("37*91", "3367"),
        ("12*(3+4)", "84"),
        ("2**10 - 1", "1023"),
        ("7/2", "3.5"),
        ("7//2 + 7%2", "4"),
        ("-3 + +4", "1"),
        ("sqrt(16) + abs(-2)", "6"),
        ("round(pi, 4)", "3.1416"),
        ("factorial(10)", "3628800"),
        ("3 × 4 ÷ 2", "6"),
        ("2^8", "256"),
        ("1.5e3 * 2", "3000"),
    ],
)
async def test_calculator_does_arithmetic(expression: str, value: str) -> None:
    assert await run("calculator", expression=expression) == (True, value)


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("__import__('os')", "__import__() is not a maths function"),
        ("__import__('os').system('id')", "not arithmetic"),
        ("a.b", "not arithmetic"),
        ("(1).real", "not arithmetic"),
        ("x", "not arithmetic"),
        ("open('/etc/passwd')", "open() is not a maths function"),
        ("'a' * 3", "only numbers"),
        ("[1, 2][0]", "not arithmetic"),
        ("(lambda: 1)()", "not arithmetic"),
        ("1 < 2", "not arithmetic"),
        ("True + 1", "only numbers"),
        ("sqrt(x=4)", "plain arguments"),
        ("9**9**9", "too large"),
        ("10**5000", "too large"),
        ("(10**3000) * (10**3000)", "too large"),
        ("2.0**5000", "too large"),
        ("factorial(100000)", "factorial is limited"),
        ("1/0", "division by zero"),
        ("sqrt(-1)", "maths error"),
        ("1 +", "not an arithmetic expression"),
        ("", "empty"),
    ],
)
async def test_calculator_refuses_anything_that_is_not_bounded_arithmetic(expression: str, words: str) -> None:
    ok, output = await run("calculator", expression=expression or " ")
    assert not ok and words in output


def test_calculator_never_evaluates_with_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    def no_eval(*args: object, **kw: object) -> None:
        raise AssertionError("eval was called")

    monkeypatch.setattr(builtins, "eval", no_eval)
    assert evaluate("6*7") == 42


async def test_a_too_long_expression_is_refused_by_its_schema() -> None:
    ok, output = await run("calculator", expression="1+" * 150 + "1")
    assert not ok and "invalid arguments" in output and "too long" in output


# --- dates and time zones ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Asia/Tokyo", "2026-12-01 21:00 JST (UTC+09:00), Tuesday"),
        ("tokyo", "2026-12-01 21:00 JST (UTC+09:00), Tuesday"),
        ("New York", "2026-12-01 07:00 EST (UTC-05:00), Tuesday"),
        ("utc", "2026-12-01 12:00 UTC (UTC+00:00), Tuesday"),
    ],
)
async def test_current_time_in_a_zone(zone: str, expected: str) -> None:
    assert await run("current_time", zone=zone) == (True, expected)


async def test_current_time_defaults_to_utc_and_refuses_unknown_zones() -> None:
    assert await run("current_time") == (True, "2026-12-01 12:00 UTC (UTC+00:00), Tuesday")
    ok, output = await run("current_time", zone="Mars/Olympus")
    assert not ok and "unknown time zone 'Mars/Olympus'" in output


async def test_convert_time_between_zones_with_daylight_saving() -> None:
    ok, output = await run("convert_time", time="2026-07-01 09:00", from_zone="Europe/London", to_zone="Asia/Tokyo")
    assert ok and output.endswith("is 2026-07-01 17:00 JST (UTC+09:00), Wednesday")
    assert "BST (UTC+01:00)" in output  # London is on summer time in July
    ok, output = await run("convert_time", time="09:00", from_zone="Europe/Oslo", to_zone="UTC")
    assert ok and output.endswith("is 2026-12-01 08:00 UTC (UTC+00:00), Tuesday")
    ok, output = await run("convert_time", time="teatime", from_zone="UTC", to_zone="UTC")
    assert not ok and "can't read the time" in output


async def test_date_arithmetic() -> None:
    assert await run("date_add", start="2025-03-01", days=90) == (True, "2025-05-30, Friday")
    assert await run("date_add", start="today", weeks=-1) == (True, "2026-11-24, Tuesday")
    assert await run("date_add", start="2026-12-31", hours=25) == (True, "2027-01-01 01:00, Friday")
    assert await run("days_between", start="2025-01-01", end="2025-12-25") == (True, "358 days")
    assert await run("days_between", start="today", end="2026-11-30") == (True, "-1 days")
    ok, output = await run("date_add", start="9999-12-30", days=5)
    assert not ok and "out of range" in output
    ok, output = await run("date_add", start="2025-01-01", days=10**9)
    assert not ok and "invalid arguments" in output  # past the schema's bound, refused before running


# --- units ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "source", "target", "expected"),
    [
        (42, "km", "mile", "42 km = 26.097590 mile"),
        (100, "celsius", "fahrenheit", "100 celsius = 212 fahrenheit"),
        (-40, "degF", "degC", "-40 degF = -40 degC"),
        (1, "kg", "lb", "1 kg = 2.204623 lb"),
        (90, "km/h", "m/s", "90 km/h = 25 m/s"),
        (1, "GiB", "MiB", "1 GiB = 1024 MiB"),
    ],
)
async def test_convert_units(value: float, source: str, target: str, expected: str) -> None:
    ok, output = await run("convert_units", value=value, from_unit=source, to_unit=target)
    assert ok, output
    number = float(output.split(" = ")[1].split(" ")[0])
    assert number == pytest.approx(float(expected.split(" = ")[1].split(" ")[0]), rel=1e-6)


async def test_convert_units_refuses_unknown_and_unrelated_units() -> None:
    ok, output = await run("convert_units", value=1, from_unit="km", to_unit="kg")
    assert not ok and "can't convert [length] into [mass]" in output
    ok, output = await run("convert_units", value=1, from_unit="blorp", to_unit="kg")
    assert not ok and "unknown unit blorp" in output
    ok, output = await run("convert_units", value=1, from_unit="__import__('os')", to_unit="kg")
    assert not ok


# --- dice ----------------------------------------------------------------------------------------------------


async def test_dice_roll_within_bounds_with_an_injected_rng() -> None:
    import json

    ok, output = await run("roll_dice", dice="2d6+1")
    roll = json.loads(output)
    assert ok and roll["dice"] == "2d6+1" and len(roll["rolls"]) == 2 and roll["modifier"] == 1
    assert all(1 <= r <= 6 for r in roll["rolls"]) and roll["total"] == sum(roll["rolls"]) + 1
    again = json.loads((await run("roll_dice", dice="2d6+1"))[1])
    assert again == roll  # the same seed, the same rolls: tests can pin dice
    assert json.loads((await run("roll_dice", dice="d20"))[1])["dice"] == "1d20"


@pytest.mark.parametrize(
    ("dice", "words"),
    [
        ("101d6", "roll 1 to 100 dice"),
        ("1000d6", "can't read"),
        ("0d6", "roll 1 to 100"),
        ("2d1", "2 to 1000 sides"),
        ("2d6*3", "can't read"),
    ],
)
async def test_dice_refuse_what_they_cannot_roll(dice: str, words: str) -> None:
    ok, output = await run("roll_dice", dice=dice)
    assert not ok and words in output


def test_summaries_for_a_composed_answer() -> None:
    tools = {tool.name: tool for tool in builtin_tools()}
    assert tools["calculator"].summary({"expression": "37*91"}, "3367") == "37*91 = 3367"
    dice = '{"dice": "2d6+1", "rolls": [3, 5], "modifier": 1, "total": 9}'
    assert tools["roll_dice"].summary({"dice": "2d6+1"}, dice) == "🎲 2d6+1: 3 + 5 (+1) = 9"
