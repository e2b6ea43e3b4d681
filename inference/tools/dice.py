"""``roll_dice``: dice notation such as ``2d6+1`` or ``d20``, bounded, from the system's random source."""

from __future__ import annotations

import json
import random
import re
from typing import Any

from inference.tools.base import Tool, ToolError

MAX_DICE = 100
MAX_SIDES = 1000
_NOTATION = re.compile(r"^\s*(\d{0,3})\s*[dD]\s*(\d{1,4})\s*(?:([+-])\s*(\d{1,5}))?\s*$")


def parse(notation: str) -> tuple[int, int, int]:
    """(count, sides, modifier) of ``NdS+M``; :class:`ToolError` outside the bounds."""
    match = _NOTATION.fullmatch(notation)
    if match is None:
        raise ToolError(f"can't read {notation[:40]!r}; write dice like 2d6+1 or d20")
    count = int(match.group(1) or 1)
    sides = int(match.group(2))
    modifier = int(match.group(4) or 0) * (-1 if match.group(3) == "-" else 1)
    if not 1 <= count <= MAX_DICE:
        raise ToolError(f"roll 1 to {MAX_DICE} dice at a time")
    if not 2 <= sides <= MAX_SIDES:
        raise ToolError(f"a die has 2 to {MAX_SIDES} sides")
    return count, sides, modifier


class RollDice(Tool):
    name = "roll_dice"
    description = "Roll dice written in dice notation, e.g. 2d6+1 (two six-sided dice plus one) or d20."
    parameters = {  # noqa: RUF012 - a JSON Schema, read only
        "type": "object",
        "properties": {"dice": {"type": "string", "description": "e.g. 2d6+1, d20, 3d8-2", "maxLength": 20}},
        "required": ["dice"],
        "additionalProperties": False,
    }
    timeout_s = 1.0
    examples = (("roll two six-sided dice", {"dice": "2d6"}),)

    def __init__(self, rng: random.Random | None = None) -> None:
        # SystemRandom: nobody can predict (or replay) a roll; tests inject a seeded Random.
        self._rng = rng or random.SystemRandom()

    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        count, sides, modifier = parse(str(args["dice"]))
        rolls = [self._rng.randint(1, sides) for _ in range(count)]
        return {"dice": f"{count}d{sides}{modifier:+d}" if modifier else f"{count}d{sides}", "rolls": rolls,
                "modifier": modifier, "total": sum(rolls) + modifier}  # fmt: skip

    def summary(self, args: dict[str, Any], output: str) -> str:
        try:
            roll = json.loads(output)
            shown = " + ".join(map(str, roll["rolls"])) + (f" ({roll['modifier']:+d})" if roll["modifier"] else "")
            return f"🎲 {roll['dice']}: {shown} = {roll['total']}"
        except (ValueError, KeyError, TypeError):
            return output
