"""``convert_units``: a value from one unit to another, by pint (temperatures with their offsets included).

pint parses unit names with its own parser (no ``eval``); its registry takes a moment to build, so it is built
once, off the event loop, on first use.
"""

from __future__ import annotations

import asyncio
import functools
import math
from typing import Any

from inference.tools.base import Tool, ToolError
from inference.tools.calculator import format_number


@functools.cache
def _registry() -> Any:
    import pint

    return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


def convert(value: float, from_unit: str, to_unit: str) -> float:
    """``value`` in ``from_unit`` expressed in ``to_unit``; :class:`ToolError` for unknown or unrelated units."""
    import pint

    ureg = _registry()
    try:
        source, target = ureg.parse_units(_unit(from_unit)), ureg.parse_units(_unit(to_unit))
        result = ureg.Quantity(value, source).to(target).magnitude
    except pint.errors.UndefinedUnitError as exc:
        names = exc.unit_names if isinstance(exc.unit_names, list | tuple) else [exc.unit_names]
        raise ToolError(f"unknown unit {', '.join(map(str, names))}"[:120]) from None
    except pint.errors.DimensionalityError as exc:
        raise ToolError(f"can't convert {exc.dim1 or from_unit} into {exc.dim2 or to_unit}"[:200]) from None
    except (pint.errors.PintError, ValueError, TypeError, AttributeError, SyntaxError) as exc:
        raise ToolError(f"can't read those units ({type(exc).__name__})") from None
    result = float(result)
    if not math.isfinite(result):
        raise ToolError("the result is not a finite number")
    return result


#: Words people (and small models) write that pint spells otherwise.
_SPELLINGS = {"celsius": "degC", "fahrenheit": "degF", "°c": "degC", "°f": "degF", "c": "degC", "f": "degF"}


def _unit(text: str) -> str:
    text = text.strip()
    return _SPELLINGS.get(text.lower(), text)


class ConvertUnits(Tool):
    name = "convert_units"
    description = "Convert a quantity between units: length, mass, volume, temperature, speed, energy, data, time..."
    parameters = {  # noqa: RUF012 - a JSON Schema, read only
        "type": "object",
        "properties": {
            "value": {"type": "number"},
            "from_unit": {"type": "string", "description": "e.g. km, mile, kg, lb, degC, degF, km/h", "maxLength": 40},
            "to_unit": {"type": "string", "maxLength": 40},
        },
        "required": ["value", "from_unit", "to_unit"],
        "additionalProperties": False,
    }
    timeout_s = 10.0  # the first call builds pint's registry
    examples = (("how many miles is 42 km?", {"value": 42, "from_unit": "km", "to_unit": "mile"}),)

    async def run(self, args: dict[str, Any]) -> str:
        value, source, target = float(args["value"]), str(args["from_unit"]), str(args["to_unit"])
        result = await asyncio.to_thread(convert, value, source, target)
        return f"{format_number(value)} {source} = {format_number(round(result, 6))} {target}"
