"""Tool-call accuracy: the small tier under the JSON grammar vs a real OpenAI-compatible server with ``tools``.

    bash bench/setup_llama_cpp.sh                # once: llama-cpp-python[server] 0.3.36, built from source
    python bench/tool_calls.py --limit 30        # the first 30 cases of each category (both sides)
    python bench/tool_calls.py --readme          # all cases, and the table written into README.md
    python bench/tool_calls.py --endpoint http://127.0.0.1:8000/v1 --endpoint-model NAME   # a server of yours
    python bench/tool_calls.py --limit 20 --probe-examples   # plus a probe row (below)

Cases: 120 single-turn cases of the Berkeley Function Calling Leaderboard (``bfcl-eval`` 2026.3.23 on PyPI,
Apache-2.0; bench/data/README.md says which files and how they were taken), 60 ``simple`` (one function
offered) and 60 ``multiple`` (2-4 functions offered: the model must pick one). Evaluation only: nothing is
trained or tuned on them. Each function becomes a stub :class:`~inference.tools.base.Tool` whose parameters are
the BFCL schema mapped into the supported subset (:func:`convert_schema`); a case that can't be mapped is
skipped and counted.

Both sides go through the project's real path, :func:`inference.tools.loop.run_with_tools`, on the same cases:

- **small tier, grammar**: the routing policy's small model (``smollm2-onnx``) gets one JSON choice of tool and
  arguments held to :func:`inference.tasks.tool_use.choice_schema` while decoding;
- **endpoint, native ``tools``**: a llama.cpp server (llama-cpp-python, ``--chat_format
  chatml-function-calling``) started here, reached through the project's OpenAI backend with the OpenAI
  ``tools``/``tool_calls`` protocol. Offline it serves the same SmolLM2-135M-Instruct (the packaged Q4_1 GGUF
  requantised to F16, which holds exactly the weights the ONNX fp32 export holds), so the table compares the
  protocols on the same model, not a small model with a large one.

The bench stops each case at the model's decision (the toolbox records the calls instead of running them), so
no second generation is timed. Scored per case, on the first call: **right tool**; **valid arguments** (the
project's own check against the tool's schema, the one every call passes before it runs); **accuracy** = both;
**values match** = also BFCL's expected values (its possible answers, strings compared as BFCL does); **no
call** = the model answered without calling; **errors** = the request failed. Latency: median seconds per case
until the decision.

``--probe-examples`` adds a row that is not the product's path: the small tier again, with each stub tool given one
example made from its own description and schema (:func:`with_examples`; no case's question or answer), to
see how much the grammar prompt's few-shot examples matter when a tool brings none of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from inference.structured import SUPPORTED_KEYWORDS, SchemaError, check_schema  # noqa: E402
from inference.tools.base import NO_TOOL, Confirm, Tool, ToolBox, ToolResult  # noqa: E402
from inference.types import ToolCall  # noqa: E402

if TYPE_CHECKING:
    from inference.serving.service import Switchboard

DATA = Path(__file__).resolve().parent / "data" / "bfcl_tool_calls.jsonl"
CATEGORIES = ("simple", "multiple")
#: BFCL's type names (Python-flavoured) -> JSON Schema's; None: any type (the keyword is dropped).
TYPES: dict[str, str | None] = {
    "dict": "object",
    "object": "object",
    "float": "number",
    "number": "number",
    "integer": "integer",
    "int": "integer",
    "string": "string",
    "str": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "any": None,
}
#: Catalogue name of the endpoint this bench talks to.
ENDPOINT = "bench-endpoint"
#: llama-cpp-python's server version the setup script pins (the table names what actually ran).
LLAMA_CPP_VERSION = "0.3.36"
#: New tokens allowed for the decision on both sides (the grammar path's own default is the same).
MAX_NEW_TOKENS = 256
#: Longest one case may take on one side before it counts as an error.
CASE_TIME_LIMIT_S = 240.0
#: Seconds to wait for the llama.cpp server to load and answer.
SERVER_START_S = 180.0


class ConversionError(ValueError):
    """A BFCL function the project's tools can't express (named in the skip count)."""


# -- cases -----------------------------------------------------------------------------------------


class StubTool(Tool):
    """A BFCL function as a project tool: its schema and description; :meth:`run` returns a canned result."""

    def __init__(self, name: str, description: str, parameters: dict[str, Any]) -> None:
        self.name = name
        self.description = description
        self.parameters = parameters

    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"status": "ok", "note": "benchmark stub: no real work was done"}


def tool_name(name: str) -> str:
    """A BFCL function name as a tool name OpenAI accepts (``math.hypot`` -> ``math_hypot``), as BFCL does."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)[:64]


def convert_schema(schema: object, dropped: list[str] | None = None, where: str = "") -> dict[str, Any]:
    """A BFCL parameter schema as JSON Schema within :data:`inference.structured.SUPPORTED_KEYWORDS`.

    ``dict``/``float``/``tuple`` become ``object``/``number``/``array``, ``any`` drops the type; keywords
    outside the subset (BFCL's ``optional``, ``format``) are dropped and appended to ``dropped``. Objects
    with properties get ``additionalProperties: false`` (BFCL counts an unexpected argument wrong) and their
    ``required`` is cut to properties that exist. Raises :class:`ConversionError` for what can't be mapped.
    """
    dropped = dropped if dropped is not None else []
    if not isinstance(schema, dict):
        raise ConversionError(f"expected a schema at {where or '/'}, found {type(schema).__name__}")
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            if not isinstance(value, str) or value not in TYPES:
                raise ConversionError(f"unknown type {value!r} at {where or '/'}")
            if TYPES[value] is not None:
                out["type"] = TYPES[value]
        elif key == "properties":
            if not isinstance(value, dict):
                raise ConversionError(f"properties at {where or '/'} is not an object")
            out["properties"] = {
                name: convert_schema(sub, dropped, f"{where}/properties/{name}") for name, sub in value.items()
            }
        elif key == "items":
            out["items"] = convert_schema(value, dropped, f"{where}/items")
        elif key in SUPPORTED_KEYWORDS:
            out[key] = value
        else:
            dropped.append(key)
    if "properties" in out:
        if "type" not in out:
            out["type"] = "object"
        out["additionalProperties"] = False
        required = out.get("required", [])
        if not isinstance(required, list):
            raise ConversionError(f"required at {where or '/'} is not a list")
        out["required"] = [name for name in required if name in out["properties"]]
        if not out["required"]:
            del out["required"]
    return out


@dataclass
class Case:
    id: str
    category: str
    prompt: str
    tools: list[StubTool]
    #: tool name -> the BFCL function name it stands for.
    names: dict[str, str]
    #: BFCL's possible answers: [{function name: {parameter: [acceptable values]}}] (one call in these sets).
    expected: list[dict[str, dict[str, list[Any]]]]
    #: Keywords dropped while converting (``optional``, ``format`` ...).
    dropped: list[str] = field(default_factory=list)

    def toolbox(self) -> ToolBox:
        return ToolBox(self.tools)


def convert_case(row: Mapping[str, Any]) -> Case:
    """One BFCL line as a :class:`Case`; :class:`ConversionError` (with the reason) when it can't be one."""
    turns = row.get("question")
    if not (isinstance(turns, list) and len(turns) == 1 and isinstance(turns[0], list) and len(turns[0]) == 1):
        raise ConversionError("not a single-turn, single-message case")
    message = turns[0][0]
    if not isinstance(message, dict) or message.get("role") != "user" or not str(message.get("content", "")).strip():
        raise ConversionError("the message is not a user's text")
    tools: list[StubTool] = []
    names: dict[str, str] = {}
    dropped: list[str] = []
    for fn in row.get("function") or []:
        original = str(fn.get("name", ""))
        name = tool_name(original)
        if not name or name == NO_TOOL or name in names:
            raise ConversionError(f"function name {original!r} can't be a distinct tool name")
        parameters = convert_schema(fn.get("parameters", {}), dropped)
        parameters.setdefault("type", "object")
        try:
            check_schema(parameters)
        except SchemaError as exc:
            raise ConversionError(f"{original}: {exc}") from None
        tools.append(StubTool(name, str(fn.get("description", "")), parameters))
        names[name] = original
    if not tools:
        raise ConversionError("no functions offered")
    try:
        ToolBox(tools)  # the same checks the bot makes when a tool is registered
    except ValueError as exc:
        raise ConversionError(str(exc)) from None
    expected = row.get("ground_truth")
    if not isinstance(expected, list) or len(expected) != 1 or not isinstance(expected[0], dict):
        raise ConversionError("not exactly one expected call")
    return Case(str(row["id"]), str(row["category"]), str(message["content"]), tools, names, expected, dropped)


def placeholder(schema: Mapping[str, Any]) -> Any:
    """A value of ``schema`` made from the schema alone (its first enum value or default, else a plain value of
    its type; objects get their required properties): the arguments of a tool's example, never a case's answer."""
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: placeholder(properties[name]) for name in schema.get("required", []) if name in properties}
    if kind == "array":
        item = schema.get("items")
        return [placeholder(item)] * schema.get("minItems", 0) if isinstance(item, dict) else []
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return max(1.5, float(schema.get("minimum", 1.5)))
    if kind == "boolean":
        return True
    return "example"


def with_examples(case: Case) -> Case:
    """``case`` with one example per tool: its description as the request, :func:`placeholder` arguments (a tool
    whose placeholder would not validate gets none)."""
    from jsonschema import Draft202012Validator

    tools: list[StubTool] = []
    for tool in case.tools:
        arguments = placeholder(tool.parameters)
        shown: tuple[tuple[str, dict[str, Any]], ...] = ()
        if isinstance(arguments, dict) and Draft202012Validator(tool.parameters).is_valid(arguments):
            shown = ((tool.description or tool.name, arguments),)
        # ``examples`` is a class attribute of Tool: one small subclass per tool carries its own.
        cls = type(f"Shown_{tool.name}", (StubTool,), {"examples": shown})
        tools.append(cls(tool.name, tool.description, tool.parameters))
    return replace(case, tools=tools)


def load_cases(path: Path = DATA, limit: int | None = None) -> tuple[list[Case], list[tuple[str, str]]]:
    """The cases (at most ``limit`` per category, in file order) and the skipped ones as (id, reason)."""
    cases: list[Case] = []
    skipped: list[tuple[str, str]] = []
    taken = dict.fromkeys(CATEGORIES, 0)
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        category = row.get("category")
        if category not in taken or (limit is not None and taken[category] >= limit):
            continue
        try:
            cases.append(convert_case(row))
        except ConversionError as exc:
            skipped.append((str(row.get("id")), str(exc)))
            continue
        taken[category] += 1
    return cases, skipped


# -- scoring ---------------------------------------------------------------------------------------


def _standard(text: str) -> str:
    """BFCL's string comparison: case, spaces and ``,./-_*^`` don't count; single quotes read as double."""
    return re.sub(r"[ ,./\-_*^]", "", text).lower().replace("'", '"')


def same_value(got: object, want: object) -> bool:
    """``got`` equals one expected value, compared as BFCL compares (numbers by value, strings standardised)."""
    if isinstance(want, bool) or isinstance(got, bool):
        return isinstance(want, bool) and isinstance(got, bool) and got is want
    if isinstance(want, (int, float)):
        return isinstance(got, (int, float)) and float(got) == float(want)
    if isinstance(want, str):
        return isinstance(got, str) and _standard(got) == _standard(want)
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(same_value(g, w) for g, w in zip(got, want, strict=True))
        )
    if isinstance(want, dict):
        return isinstance(got, dict) and set(got) == set(want) and all(same_value(got[k], want[k]) for k in want)
    return got == want


def values_match(arguments: Mapping[str, Any], acceptable: Mapping[str, Sequence[Any]]) -> bool:
    """Every argument is expected and has an acceptable value; an absent one is fine only where BFCL lists ``""``
    (optional). Dicts' own values may again be lists of acceptable values (BFCL's nested answers)."""
    if any(name not in acceptable for name in arguments):
        return False
    for name, options in acceptable.items():
        if name not in arguments:
            if "" not in options:
                return False
            continue
        if not any(_acceptable(arguments[name], option) for option in options if option != ""):
            return False
    return True


def _acceptable(got: object, option: object) -> bool:
    if isinstance(option, dict) and isinstance(got, dict) and all(isinstance(v, list) for v in option.values()):
        return values_match(got, option)  # a nested answer: each key with its own acceptable values
    return same_value(got, option)


@dataclass
class Outcome:
    """One case on one side: the calls the model decided on (none: it answered directly), or an error."""

    case: str
    category: str
    calls: list[ToolCall] = field(default_factory=list)
    text: str = ""
    error: str | None = None
    seconds: float = 0.0
    right_tool: bool = False
    valid: bool = False
    values: bool = False

    @property
    def called(self) -> bool:
        return bool(self.calls)


def score(case: Case, outcome: Outcome, toolbox: ToolBox | None = None) -> Outcome:
    """Fill in ``right_tool``, ``valid`` and ``values`` from the first call (these sets expect one)."""
    outcome.right_tool = outcome.valid = outcome.values = False
    if outcome.error is not None or not outcome.calls:
        return outcome
    call = outcome.calls[0]
    (want_name, acceptable), *_ = case.expected[0].items()
    outcome.right_tool = case.names.get(call.name) == want_name
    outcome.valid = (toolbox or case.toolbox()).check(call) is None
    outcome.values = outcome.right_tool and outcome.valid and values_match(call.arguments, acceptable)
    return outcome


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def table_rows(label: str, outcomes: Sequence[Outcome]) -> list[str]:
    """Markdown rows for one side: all cases, then per category."""
    rows = []
    for category in (None, *CATEGORIES):
        part = [o for o in outcomes if category is None or o.category == category]
        if not part:
            continue
        n = len(part)
        accuracy = sum(o.right_tool and o.valid for o in part)
        seconds = [o.seconds for o in part if o.error is None]
        median = f"{statistics.median(seconds):.1f} s" if seconds else "-"
        name = f"**{label}**" if category is None else f"{label}: {category}"
        rows.append(
            f"| {name} | {n} | **{_share(accuracy, n)}** | {_share(sum(o.right_tool for o in part), n)} "
            f"| {_share(sum(o.valid for o in part), n)} | {_share(sum(o.values for o in part), n)} "
            f"| {_share(sum(o.error is None and not o.called for o in part), n)} "
            f"| {_share(sum(len(o.calls) > 1 for o in part), n)} "
            f"| {_share(sum(o.error is not None for o in part), n)} | {median} |"
        )
    return rows


HEADER = [
    "| side | cases | accuracy (right tool, valid arguments) | right tool | valid arguments | values match (BFCL) "
    "| no call | several calls | errors | median per case |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
]


# -- running ---------------------------------------------------------------------------------------


class Decided(Exception):
    """Raised by :class:`RecordingToolBox` to end the loop at the model's decision."""

    def __init__(self, calls: list[ToolCall]) -> None:
        super().__init__(f"{len(calls)} call(s)")
        self.calls = calls


class RecordingToolBox(ToolBox):
    """A toolbox that records the calls of the first round and stops there (nothing runs, no second answer)."""

    async def execute_all(self, calls: Sequence[ToolCall], *, confirm: Confirm | None = None) -> list[ToolResult]:
        raise Decided(list(calls))


class _ByHand:
    """The bench routes every case itself; the task classifier is never asked."""

    def classify(self, request: object) -> Any:
        raise RuntimeError("bench/tool_calls.py routes by hand")


class _GrammarFallbacks(logging.Handler):
    """Counts the loop's 'refused tools; calling under the grammar' (the endpoint then decided under a grammar)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "refused tools" in record.getMessage():
            self.count += 1


async def run_case(board: Switchboard, model: str, case: Case) -> Outcome:
    """``case`` through :func:`run_with_tools` on ``model``, stopped at the decision."""
    from inference.tools.loop import run_with_tools
    from inference.types import RouteDecision, Tier

    tier = board.catalogue.get(model).tier
    decision = RouteDecision("tool_use", tier, model, 1.0, 1.0 if tier is Tier.LARGE else 0.0, "bench: forced")
    box = RecordingToolBox(case.tools)
    outcome = Outcome(case.id, case.category)
    started = time.perf_counter()
    try:
        run = await run_with_tools(
            board, decision, case.prompt, box, max_new_tokens=MAX_NEW_TOKENS, max_rounds=1,
            time_limit_s=CASE_TIME_LIMIT_S,
        )  # fmt: skip
        outcome.text = run.text
    except Decided as decided:
        outcome.calls = decided.calls
    except Exception as exc:  # a failed request (InferenceError above all) is an error in the table, never a crash
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.seconds = time.perf_counter() - started
    return score(case, outcome, box)


def f16_gguf(cache_dir: Path) -> Path:
    """The packaged Q4_1 SmolLM2 requantised to F16 once (a second): the same values the fp32 export holds."""
    import llama_cpp

    from inference.artifacts import smollm2_gguf

    out = cache_dir / "bench" / "smollm2-135m-instruct-f16.gguf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_F16
    params.allow_requantize = True
    partial = out.with_suffix(".part")
    if llama_cpp.llama_model_quantize(str(smollm2_gguf()).encode(), str(partial).encode(), params) != 0:
        raise SystemExit("llama.cpp could not requantise the packaged SmolLM2 GGUF to F16")
    partial.replace(out)
    return out


def unused_port() -> int:
    """A free local port (bound, then released for the server)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as resp:  # 127.0.0.1, a URL we built
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def llama_server(gguf: Path, port: int, log_path: Path, threads: int) -> Iterator[str]:
    """A llama-cpp-python OpenAI-compatible server on 127.0.0.1:``port``; yields its ``/v1`` base URL."""
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "smollm2-135m-instruct-f16",
        "--chat_format", "chatml-function-calling", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096",
        "--n_threads", str(threads), "--n_threads_batch", str(threads),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-1500:]
                raise SystemExit(f"the llama.cpp server did not start (log {log_path}):\n{tail}")
            time.sleep(0.5)  # polling a subprocess's readiness, bounded by the deadline
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def build_boards(cache_dir: Path, url: str, served: str) -> tuple[Switchboard, Switchboard, str]:
    """Two boards over one catalogue (the defaults plus the endpoint): one per side, each with both tiers on its
    own model, so a failure is an error here rather than an answer from the other side's model."""
    from inference.backends.openai import OpenAIBackend
    from inference.catalogue import Cooldown, Limits, ModelSpec, OpenAIModel, RetryPolicy, Timeouts
    from inference.cli import load_config
    from inference.router import Router
    from inference.serving.service import Switchboard
    from inference.types import Tier

    catalogue, policy = load_config(None, None)
    endpoint = OpenAIModel(
        tier=Tier.LARGE,
        base_url=url,
        model=served,
        description="the bench's local llama.cpp server",
        context_window=4096,
        max_new_tokens=MAX_NEW_TOKENS,
        # One answer at a time on a 2-core machine: the whole answer arrives at once (no streaming), so the
        # first-token limit is the answer's. No retries and no cool-down: every failure shows as an error.
        timeouts=Timeouts(connect_s=5, first_token_s=CASE_TIME_LIMIT_S, total_s=CASE_TIME_LIMIT_S),
        retry=RetryPolicy(max_attempts=1),
        cooldown=Cooldown(min_requests=10_000),
        limits=Limits(max_concurrency=1, max_queue=4),
    )
    catalogue = catalogue.with_models({ENDPOINT: endpoint}, untrusted=False)

    def factory(name: str, spec: ModelSpec) -> OpenAIBackend | None:
        # llama-cpp-python's server refuses to stream an automatic tool choice (it answers 200 and an empty
        # event stream), so this endpoint is asked without streaming: the backend reads either shape.
        if name == ENDPOINT and isinstance(spec, OpenAIModel):
            return OpenAIBackend(name, spec, stream=False)
        return None

    small = policy.models[Tier.SMALL]
    boards = []
    for model in (small, ENDPOINT):
        own = policy.model_copy(update={"models": {Tier.SMALL: model, Tier.LARGE: model}})
        boards.append(Switchboard(Router(_ByHand(), own, catalogue), cache_dir=cache_dir, backend_factory=factory))
    return boards[0], boards[1], small


@dataclass
class Side:
    """One way of answering every case: a row group of the table."""

    label: str
    board: Switchboard
    model: str
    #: Give each tool one example built from its schema (:func:`with_examples`): a probe, not the product path.
    probe: bool = False


async def run_all(cases: Sequence[Case], sides: Sequence[Side], verbose: bool) -> dict[str, list[Outcome]]:
    """Every case on every side, rotating which goes first (a busy neighbour slows all alike)."""
    for side in sides:
        await side.board.backend(side.model)  # loaded before the clock starts
    results: dict[str, list[Outcome]] = {side.label: [] for side in sides}
    for i, case in enumerate(cases):
        shift = i % len(sides)
        for side in [*sides[shift:], *sides[:shift]]:
            outcome = await run_case(side.board, side.model, with_examples(case) if side.probe else case)
            results[side.label].append(outcome)
            if verbose:
                shown = outcome.error or (
                    ", ".join(f"{c.name}({json.dumps(c.arguments)})" for c in outcome.calls)
                    or f"answer {outcome.text!r}"
                )
                mark = "ok" if outcome.values else "tool+args" if outcome.right_tool and outcome.valid else "wrong"
                where = f"{side.model}{' +examples' if side.probe else ''}"
                print(f"  [{where}] {case.id}: {shown[:160]} -> {mark} ({outcome.seconds:.1f}s)", file=sys.stderr)
        print(f"{i + 1}/{len(cases)} cases", file=sys.stderr)
    return results


def report(
    results: Mapping[str, Sequence[Outcome]],
    *,
    skipped: Sequence[tuple[str, str]],
    dropped: Mapping[str, int],
    fell_back: int,
    endpoint_note: str,
) -> str:
    lines = [*HEADER]
    for label, outcomes in results.items():
        lines += table_rows(label, outcomes)
    grammar = next(iter(results.values()))
    n = len(grammar)
    per = {c: sum(o.category == c for o in grammar) for c in CATEGORIES}
    drops = ", ".join(f"`{k}` {v}" for k, v in sorted(dropped.items())) or "none"
    notes = [
        "",
        f"{n} BFCL cases (`bfcl-eval` 2026.3.23: {per['simple']} `simple`, one function offered; "
        f"{per['multiple']} `multiple`, 2-4 offered), the same on every side; {len(skipped)} case(s) skipped as "
        f"not convertible; keywords dropped while mapping schemas: {drops}. {endpoint_note} "
        "Scored on the first call; values match = BFCL's expected values too; no call = answered without calling. "
        f"Greedy, at most {MAX_NEW_TOKENS} new tokens, each case stopped at the decision (no tool runs, no second "
        "answer); median per case = wall time to the decision, on a shared machine.",
    ]
    if any("probe" in label for label in results):
        notes += [
            "",
            "The probe row is not the product's path: each stub tool got one example, a request made of its "
            "description and arguments made of placeholders from its schema (no case's question or answer), to "
            "test whether the small tier's few-shot prompt, whose only example is otherwise the no-tool one, is "
            "what keeps it from calling.",
        ]
    if fell_back:
        notes += ["", f"The endpoint refused `tools` in {fell_back} case(s); those were decided under the grammar."]
    return "\n".join(lines + notes)


async def main_async(args: argparse.Namespace) -> str:
    from inference.artifacts import default_cache_dir

    cache_dir = args.cache_dir or default_cache_dir()
    cases, skipped = load_cases(args.data, args.limit)
    if not cases:
        raise SystemExit(f"no usable cases in {args.data}")
    dropped: dict[str, int] = {}
    for case in cases:
        for key in case.dropped:
            dropped[key] = dropped.get(key, 0) + 1
    print(f"{len(cases)} cases, {len(skipped)} skipped", file=sys.stderr)
    fallbacks = _GrammarFallbacks()
    logging.getLogger("inference.tools.loop").addHandler(fallbacks)
    logging.getLogger("inference.tools.loop").setLevel(logging.INFO)

    with contextlib.ExitStack() as stack:
        if args.endpoint:
            url, served = args.endpoint.rstrip("/"), args.endpoint_model
            endpoint_note = f"Endpoint: `{served}` at a server given with `--endpoint`."
        else:
            try:
                import llama_cpp
            except ImportError:
                raise SystemExit("llama-cpp-python is missing: run `bash bench/setup_llama_cpp.sh` first") from None
            gguf = f16_gguf(cache_dir)
            log_path = cache_dir / "bench" / "llama-server.log"
            url = stack.enter_context(llama_server(gguf, unused_port(), log_path, args.threads))
            served = "smollm2-135m-instruct-f16"
            endpoint_note = (
                f"Endpoint: llama-cpp-python {llama_cpp.__version__}'s OpenAI-compatible server "
                "(`--chat_format chatml-function-calling`, which also holds the arguments to each tool's schema by a "
                "grammar) serving **the same SmolLM2-135M-Instruct** as the small tier (the packaged GGUF as F16): "
                "offline there is no larger model, so this compares the two protocols on one model, not a small "
                "model with a large one."
            )
        small_board, endpoint_board, small = build_boards(cache_dir, url, served)
        sides = [
            Side(f"small tier `{small}`, grammar", small_board, small),
            Side(f"endpoint `{served}`, native `tools`", endpoint_board, ENDPOINT),
        ]
        if args.probe_examples:
            sides.append(Side(f"probe: small tier `{small}`, grammar + an example per tool", small_board, small, True))
        try:
            results = await run_all(cases, sides, args.verbose)
        finally:
            await small_board.aclose()
            await endpoint_board.aclose()
    return report(results, skipped=skipped, dropped=dropped, fell_back=fallbacks.count, endpoint_note=endpoint_note)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="only the first N cases of each category")
    parser.add_argument("--data", type=Path, default=DATA, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--endpoint", default=None, help="an OpenAI-compatible /v1 URL to use instead of starting one")
    parser.add_argument("--endpoint-model", default="default", help="the model name to ask --endpoint for")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="llama.cpp server threads")
    parser.add_argument(
        "--probe-examples",
        action="store_true",
        help="add a row: the small tier with one schema-derived example per tool (a probe, not the product path)",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="print every decision to stderr")
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    text = asyncio.run(main_async(args))
    print(text)
    if args.readme:
        from bench._readme import write_section

        write_section("tool-calls", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
