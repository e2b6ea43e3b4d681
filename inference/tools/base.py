"""The one base of every tool, and the registry that runs them safely.

- :class:`Tool`: a name, a description, a JSON Schema for its arguments, an async :meth:`Tool.run` and a time
  limit. One file per tool family beside this one (``calculator``, ``dates``, ``units``, ``dice``, ``http``);
  the bot registers its own (Discord-bound) tools the same way.
- :class:`ToolCall` (from :mod:`inference.types`): what a model asked for; :class:`ToolResult`: what came of it.
- :class:`ToolBox`: the tools one request may use. :meth:`ToolBox.execute` checks the arguments against the
  tool's schema *before* running it, enforces its time limit, and turns every failure into an error result that
  the model sees: nothing a tool or a model does escapes as an exception.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from jsonschema import Draft202012Validator

from inference.structured import SchemaError, check_schema
from inference.types import ToolCall

__all__ = ["Confirm", "Tool", "ToolBox", "ToolCall", "ToolError", "ToolResult"]

log = logging.getLogger(__name__)

#: OpenAI's rule for function names (and a name the small tier's grammar can spell as a JSON string).
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: The small tier's grammar uses this word for "no tool: answer directly"; no tool may take it.
NO_TOOL = "none"
#: Most characters of a tool's output shown to the model (and to the user); the rest is cut with a note.
MAX_OUTPUT_CHARS = 4000
#: Most characters of a description sent to a model.
MAX_DESCRIPTION_CHARS = 1000


#: Asks the person who made the request whether a call that acts may run: (tool, arguments) -> yes or no.
Confirm = Callable[["Tool", dict[str, Any]], Awaitable[bool]]


class ToolError(Exception):
    """A tool's own refusal or failure, in words the model (and the user) may read: "division by zero"."""


class Tool(abc.ABC):
    """One capability a model may call. Subclasses set the class attributes (or, like HTTP tools, per instance)."""

    name: str
    description: str
    #: JSON Schema of the arguments object, within :data:`inference.structured.SUPPORTED_KEYWORDS`: the small
    #: tier enforces it while decoding, and every call is validated against it before :meth:`run`.
    parameters: dict[str, Any]
    #: Seconds one call may take before it is abandoned (an error result, not a hang).
    timeout_s: float = 10.0
    #: (request, arguments) pairs that show a small model when to call this tool and how.
    examples: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = ()
    #: True for a tool that changes something or speaks for the bot beyond the reply (a poll, a post elsewhere,
    #: reminding other people): :meth:`ToolBox.execute` runs it only when the person asking confirms.
    acts: bool = False
    #: True for a tool whose call changes something beyond the reply even without confirmation (it stores a
    #: reminder): an answer that ran one (or one that ``acts``) is not answered again by a button, which would
    #: do it twice.
    side_effects: bool = False

    def needs_confirmation(self, args: dict[str, Any]) -> bool:
        """Whether this call needs the person's confirmation (``acts`` by default; a tool may decide per call)."""
        return self.acts

    def describe_call(self, args: dict[str, Any]) -> str:
        """What a confirmation prompt says this call will do."""
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
        return f"{self.name}({shown})"

    @abc.abstractmethod
    async def run(self, args: dict[str, Any]) -> str | dict[str, Any]:
        """The result for valid ``args``; raise :class:`ToolError` with words for the model on failure."""

    def summary(self, args: dict[str, Any], output: str) -> str:
        """One line for a person reading a reply composed from the result (the small tier's answer)."""
        return output

    def openai_spec(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description[:MAX_DESCRIPTION_CHARS],
                "parameters": self.parameters,
            },
        }


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What came of one call: ``output`` when ``ok``, else the error text (which the model sees too)."""

    call: ToolCall
    ok: bool
    output: str
    duration_s: float = 0.0
    #: The call acts and was not run because the person did not confirm it (or could not be asked).
    unconfirmed: bool = False

    @property
    def error(self) -> str | None:
        return None if self.ok else self.output

    def as_json(self) -> dict[str, Any]:
        """The line the CLI prints (and the record a reply shows): tool, arguments, result or error, ok."""
        out: dict[str, Any] = {"tool": self.call.name, "arguments": self.call.arguments}
        out["result" if self.ok else "error"] = self.output
        out["ok"] = self.ok
        return out

    def for_model(self) -> str:
        """The ``tool`` message content: the result as a JSON string value, plainly data, never instructions."""
        key = "result" if self.ok else "error"
        return json.dumps({"tool": self.call.name, "ok": self.ok, key: self.output}, ensure_ascii=False)


class ToolBox:
    """The tools a request may use, by name. Immutable views come from :meth:`enabled`."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self._validators: dict[str, Draft202012Validator] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        """Add ``tool``; ValueError for a bad or taken name, or arguments no tier could enforce."""
        name = getattr(tool, "name", "")
        if not isinstance(name, str) or not _NAME.fullmatch(name) or name == NO_TOOL:
            raise ValueError(f"tool name {name!r}: use 1-64 letters, digits, '_' or '-' (and not {NO_TOOL!r})")
        if name in self._tools:
            raise ValueError(f"a tool named {name!r} is already registered")
        try:
            schema = check_schema(tool.parameters)
        except SchemaError as exc:
            raise ValueError(f"tool {name!r}: its parameters can't be used: {exc}") from None
        if schema.get("type") != "object":
            raise ValueError(f"tool {name!r}: its parameters must be a JSON Schema of type object")
        self._tools[name] = tool
        self._validators[name] = Draft202012Validator(schema)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def enabled(self, names: Iterable[str]) -> ToolBox:
        """A toolbox of only these tools (names it lacks are ignored: a stored choice may outlive a tool)."""
        wanted = set(names)
        box = ToolBox()
        for name, tool in self._tools.items():
            if name in wanted:
                box._tools[name] = tool
                box._validators[name] = self._validators[name]
        return box

    def openai_specs(self) -> tuple[dict[str, Any], ...]:
        """``tools`` for an OpenAI-compatible request (``GenerationParams.tools``)."""
        return tuple(tool.openai_spec() for tool in self._tools.values())

    def check(self, call: ToolCall) -> str | None:
        """Why ``call`` may not run (unknown tool, unreadable or invalid arguments), or None."""
        if call.name not in self._tools:
            offered = ", ".join(self._tools) or "none"
            return f"there is no tool named {call.name!r} here (tools: {offered})"
        if call.error is not None:
            return call.error
        errors = sorted(self._validators[call.name].iter_errors(call.arguments), key=lambda e: list(e.path))
        if errors:
            where = "/".join(str(p) for p in errors[0].path) or "the arguments"
            return f"invalid arguments for {call.name} at {where}: {errors[0].message}"
        return None

    async def execute(self, call: ToolCall, *, confirm: Confirm | None = None) -> ToolResult:
        """Run one call: validated first, within its time limit; any failure is an error result.

        A call that acts (:meth:`Tool.needs_confirmation`) runs only when ``confirm`` says yes: without a
        ``confirm`` it never runs. Whatever asked for it (the model, a document or tool output it read), the
        person decides, so injected instructions can't act on their own.
        """
        started = time.perf_counter()
        problem = self.check(call)
        if problem is not None:
            return ToolResult(call, False, problem, time.perf_counter() - started)
        tool = self._tools[call.name]
        if tool.needs_confirmation(dict(call.arguments)):
            if confirm is None:
                return ToolResult(
                    call,
                    False,
                    f"{call.name} needs the user's confirmation, which can't be asked here",
                    unconfirmed=True,
                )
            try:
                allowed = await confirm(tool, dict(call.arguments))
            except Exception:  # a failed prompt is a refusal, never an action
                log.warning("confirming %s failed", call.name, exc_info=True)
                allowed = False
            if not allowed:
                return ToolResult(
                    call, False, f"the user did not confirm {call.name}; it was not run", unconfirmed=True
                )
        try:
            async with asyncio.timeout(tool.timeout_s):
                value = await tool.run(dict(call.arguments))
            ok, output = True, _text(value)
        except TimeoutError:
            ok, output = False, f"{call.name} took longer than {tool.timeout_s:g}s and was stopped"
        except ToolError as exc:
            ok, output = False, str(exc) or f"{call.name} failed"
        except Exception as exc:  # a tool's bug is the model's error result, never the bot's crash
            log.warning("tool %s failed: %s", call.name, type(exc).__name__, exc_info=True)
            ok, output = False, f"{call.name} failed ({type(exc).__name__})"
        return ToolResult(call, ok, _bounded(output), time.perf_counter() - started)

    async def execute_all(self, calls: Sequence[ToolCall], *, confirm: Confirm | None = None) -> list[ToolResult]:
        """Several calls at once (a model's parallel calls), results in the calls' order."""
        return list(await asyncio.gather(*(self.execute(call, confirm=confirm) for call in calls)))


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _bounded(text: str) -> str:
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    return text[:MAX_OUTPUT_CHARS] + f"... [cut: {len(text) - MAX_OUTPUT_CHARS} more characters]"
