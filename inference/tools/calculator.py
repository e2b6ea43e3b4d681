"""``calculator``: arithmetic only, by simpleeval restricted to numbers, operators and a list of maths functions.

Never ``eval``: the expression is parsed with :mod:`ast` by simpleeval, and only number literals, the arithmetic
operators, the names ``pi``/``e``/``tau`` and the functions below are evaluated. Names, attributes, subscripts,
strings, comparisons and every other node are refused by what they are. Results are bounded: an exponent or a
product that would make a number of more than :data:`MAX_BITS` bits is refused before it is computed.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from simpleeval import InvalidExpression, SimpleEval

from inference.tools.base import Tool, ToolError

#: Largest integer result, in bits (about 3,000 decimal digits): big enough for any arithmetic a person asks.
MAX_BITS = 10_000
#: Longest expression accepted.
MAX_EXPRESSION_CHARS = 200
#: Largest argument of factorial (1000! has 2,568 digits).
MAX_FACTORIAL = 1000


def _check_size(value: Any) -> Any:
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise ToolError("the result is too large")
    return value


def _bits(value: Any) -> float:
    """Bits of an integer's magnitude; floats overflow on their own (OverflowError), so they count as 0."""
    return float(abs(value).bit_length()) if isinstance(value, int) and not isinstance(value, bool) else 0.0


def _power(base: Any, exponent: Any) -> Any:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if _bits(base) > 1 and _bits(base) * exponent > MAX_BITS:
            raise ToolError("the result is too large")
    if isinstance(exponent, int | float) and abs(exponent) > MAX_BITS:
        if base not in (0, 1, -1):
            raise ToolError("the exponent is too large")
    return _check_size(base**exponent)


def _multiply(a: Any, b: Any) -> Any:
    if _bits(a) + _bits(b) > MAX_BITS:
        raise ToolError("the result is too large")
    return a * b


def _factorial(n: Any) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ToolError("factorial takes a whole number of 0 or more")
    if n > MAX_FACTORIAL:
        raise ToolError(f"factorial is limited to {MAX_FACTORIAL}")
    return math.factorial(n)


OPERATORS: dict[type[ast.AST], Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _multiply,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "cbrt": math.cbrt,
    "exp": math.exp,
    "log": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "degrees": math.degrees,
    "radians": math.radians,
    "floor": math.floor,
    "ceil": math.ceil,
    "hypot": math.hypot,
    "factorial": _factorial,
}
NAMES: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}


class _Arithmetic(SimpleEval):  # type: ignore[misc]
    """simpleeval with every node but arithmetic taken away (its default also allows attributes, strings...)."""

    def __init__(self) -> None:
        super().__init__(operators=dict(OPERATORS), functions=dict(FUNCTIONS), names=dict(NAMES))
        self.nodes = {
            ast.Expr: self._eval_expr,
            ast.Constant: self._number,
            ast.Name: self._eval_name,
            ast.UnaryOp: self._eval_unaryop,
            ast.BinOp: self._eval_binop,
            ast.Call: self._call,
        }

    def _number(self, node: ast.Constant) -> int | float:
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ToolError(f"only numbers are allowed, not {type(node.value).__name__} values")
        return _check_size(node.value)

    def _call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):
            raise ToolError("not arithmetic: only maths functions may be called, by name")
        if node.func.id not in FUNCTIONS:
            raise ToolError(f"{node.func.id}() is not a maths function here; allowed: {', '.join(FUNCTIONS)}")
        if node.keywords:
            raise ToolError("functions take plain arguments here, not name=value")
        return self._eval_call(node)


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression; :class:`ToolError` for anything that is not arithmetic."""
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    if not text:
        raise ToolError("the expression is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is too long (at most {MAX_EXPRESSION_CHARS} characters)")
    try:
        value = _Arithmetic().eval(text)
    except ToolError:
        raise
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("the result is too large") from None
    except SyntaxError:
        raise ToolError("that is not an arithmetic expression") from None
    except InvalidExpression as exc:  # names, attributes and other nodes simpleeval refuses by kind
        raise ToolError(f"not arithmetic: {_first_line(exc)}") from None
    except (ValueError, TypeError) as exc:  # sqrt(-1), log(0), min() ...
        raise ToolError(f"maths error: {exc}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError("the expression did not give a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is too large (not a finite number)")
    return value


def format_number(value: int | float) -> str:
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.12g}"
    return str(value)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


class Calculator(Tool):
    name = "calculator"
    description = (
        "Evaluate an arithmetic expression exactly: + - * / // % ** and parentheses, the constants pi, e, tau "
        "and the functions " + ", ".join(FUNCTIONS) + ". Use it for any calculation."
    )
    parameters = {  # noqa: RUF012 - a JSON Schema, read only
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "description": "the arithmetic expression, e.g. 37*91 or sqrt(2)/2",
                "minLength": 1,
                "maxLength": MAX_EXPRESSION_CHARS,
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    }
    timeout_s = 2.0
    examples = (("what is 12 times (3 plus 4)?", {"expression": "12*(3+4)"}),)

    async def run(self, args: dict[str, Any]) -> str:
        return format_number(evaluate(str(args["expression"])))

    def summary(self, args: dict[str, Any], output: str) -> str:
        return f"{args.get('expression', '').strip()} = {output}"
