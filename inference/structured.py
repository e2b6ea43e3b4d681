"""Structured output as a guarantee: JSON Schema, regular expressions and fixed choices.

Every tier enforces the constraint while decoding where it can (onnxruntime-genai's guidance, a logits
processor for transformers, ``response_format`` for OpenAI-compatible servers), and the result is always
validated here: one repair attempt, then an honest error. Invalid output is never returned as valid.

The API (other modules call these):

- :func:`check_schema` validates a user's JSON Schema against the supported subset and size limits and
  raises :class:`SchemaError` naming the problem;
- :func:`json_constraint`, :func:`choice_constraint`, :func:`regex_constraint` build :class:`Constraint`s;
- :func:`validate` checks a text against a constraint and returns the parsed value (raises :class:`InvalidOutput`);
- :func:`generate` runs a routed request under a constraint on the board (with one repair attempt);
- :func:`classify` answers with one (or several) of the given labels and nothing else, with scores.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from inference.errors import BadRequest, InferenceError
from inference.types import ChatMessage, Constraint, GenerationParams, RouteDecision, TokenLogprob

if TYPE_CHECKING:
    from inference.catalogue import Catalogue, RoutingOverrides
    from inference.serving.service import Answer, Switchboard


log = logging.getLogger(__name__)


class SchemaError(BadRequest):
    """The schema (or pattern, or label set) is invalid, too large or outside the supported subset."""

    user_text = "That schema can't be used."


class InvalidOutput(InferenceError):
    """No output satisfying the constraint could be produced (after one repair attempt)."""

    fallback = False
    short = "invalid output"
    user_text = "The model could not produce output in the required format."


@dataclass
class StructuredResult:
    """A validated output: the parsed ``value`` (a JSON document, or the matched text) and its raw ``text``."""

    value: Any
    text: str
    answer: Answer
    repaired: bool = False


@dataclass
class LabelResult:
    labels: list[str]
    #: label -> score in [0, 1] (from log-probabilities where the backend exposes them, else 1.0/0.0).
    scores: dict[str, float] = field(default_factory=dict)
    answer: Answer | None = None


#: The JSON Schema keywords every tier can enforce while decoding (llguidance's subset, which
#: onnxruntime-genai, the transformers logits processor and vLLM/llama.cpp servers share) and
#: :func:`validate` checks. Anything else is refused by name rather than silently ignored.
SUPPORTED_KEYWORDS: frozenset[str] = frozenset(
    {
        # structure
        "type", "properties", "required", "additionalProperties", "items", "minItems", "maxItems",
        "enum", "const", "anyOf",
        # numbers and strings
        "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern",
        # annotations: no effect on validity
        "$schema", "title", "description", "default", "examples",
    }
)  # fmt: skip
#: Largest schema accepted, as compact JSON.
MAX_SCHEMA_BYTES = 16 * 1024
#: Deepest nesting of subschemas (an object in an array in an object... counts one per level).
MAX_SCHEMA_DEPTH = 8
#: Most properties over the whole schema.
MAX_SCHEMA_PROPERTIES = 64
#: Most values in one ``enum`` and most labels of a choice.
MAX_CHOICES = 256
#: Longest label of a choice, and longest regular expression, in characters.
MAX_CHOICE_CHARS = 200
MAX_PATTERN_CHARS = 1000

_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})


def check_schema(schema: object) -> dict[str, Any]:
    """``schema`` as a dict if it is a valid JSON Schema within the supported subset and size limits.

    Accepts a dict or JSON text. Raises :class:`SchemaError` whose message names the problem and where
    it is (a JSON Pointer such as ``/properties/age``).
    """
    if isinstance(schema, (str, bytes)):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise SchemaError(f"the schema is not valid JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise SchemaError(f"a schema must be a JSON object, not {_json_type(schema)}")
    size = len(json.dumps(schema, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_SCHEMA_BYTES:
        raise SchemaError(f"the schema is too large: {size} bytes (at most {MAX_SCHEMA_BYTES})")
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError as MetaSchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except MetaSchemaError as exc:
        where = _pointer(exc.path)
        raise SchemaError(f"not a valid JSON Schema at {where}: {exc.message}") from None
    counts = {"properties": 0}
    _check_subschema(schema, "", 1, counts)
    return schema


def _check_subschema(schema: object, path: str, depth: int, counts: dict[str, int]) -> None:
    where = path or "/"
    if isinstance(schema, bool):
        return  # true accepts anything, false nothing: both enforceable
    if not isinstance(schema, dict):
        raise SchemaError(f"expected a schema at {where}, found {_json_type(schema)}")
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaError(f"the schema is nested too deeply at {where} (at most {MAX_SCHEMA_DEPTH} levels)")
    for key in schema:
        if key not in SUPPORTED_KEYWORDS:
            raise SchemaError(
                f"unsupported keyword {key!r} at {where}; supported: {', '.join(sorted(SUPPORTED_KEYWORDS))}"
            )
    types = schema.get("type")
    for name in [types] if isinstance(types, str) else types or []:
        if name not in _TYPES:
            raise SchemaError(f"unknown type {name!r} at {where}")
    if "enum" in schema and len(schema["enum"]) > MAX_CHOICES:
        raise SchemaError(f"the enum at {where} has {len(schema['enum'])} values (at most {MAX_CHOICES})")
    if "pattern" in schema:
        _check_pattern(schema["pattern"], f"the pattern at {path}/pattern")
    low, high = schema.get("minLength", 0), schema.get("maxLength")
    if high is not None and low > high:
        raise SchemaError(f"minLength is above maxLength at {where}: nothing can satisfy it")
    low, high = schema.get("minItems", 0), schema.get("maxItems")
    if high is not None and low > high:
        raise SchemaError(f"minItems is above maxItems at {where}: nothing can satisfy it")
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None and low > high:
        raise SchemaError(f"minimum is above maximum at {where}: nothing can satisfy it")
    properties = schema.get("properties", {})
    counts["properties"] += len(properties)
    if counts["properties"] > MAX_SCHEMA_PROPERTIES:
        raise SchemaError(f"the schema has too many properties (at most {MAX_SCHEMA_PROPERTIES})")
    for name in schema.get("required", []):
        if name not in properties and schema.get("additionalProperties", True) is False:
            raise SchemaError(f"{name!r} is required at {where} but no property may have that name")
    for name, sub in properties.items():
        _check_subschema(sub, f"{path}/properties/{_escape(name)}", depth + 1, counts)
    extra = schema.get("additionalProperties")
    if extra is not None:
        _check_subschema(extra, f"{path}/additionalProperties", depth + 1, counts)
    if "items" in schema:
        _check_subschema(schema["items"], f"{path}/items", depth + 1, counts)
    for i, sub in enumerate(schema.get("anyOf", [])):
        _check_subschema(sub, f"{path}/anyOf/{i}", depth + 1, counts)


def _check_pattern(pattern: object, what: str) -> str:
    if not isinstance(pattern, str) or not pattern:
        raise SchemaError(f"{what} must be a non-empty string")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise SchemaError(f"{what} is too long: {len(pattern)} characters (at most {MAX_PATTERN_CHARS})")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise SchemaError(f"{what} is not a valid regular expression: {exc}") from None
    feature = _unsupported_regex_feature(pattern)
    if feature:
        raise SchemaError(f"{what} uses {feature}, which guided decoding cannot enforce")
    return pattern


def _unsupported_regex_feature(pattern: str) -> str | None:
    """What Python's ``re`` takes but Rust-regex engines (llguidance) do not: lookaround, backreferences,
    word boundaries, ``\\Z``, atomic groups and possessive quantifiers (outside character classes)."""
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not in_class and nxt.isdigit() and nxt != "0":
                return "a backreference"
            if not in_class and nxt in ("b", "B"):
                return "a word boundary"
            if nxt == "Z":
                return "the Python-only \\Z anchor (use $)"
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":  # a leading ] is a literal
                i += 1
        elif ch in "*+?}" and pattern[i + 1 : i + 2] == "+":
            return "a possessive quantifier"
        elif ch == "(" and pattern[i + 1 : i + 2] == "?":
            rest = pattern[i + 2 : i + 5]
            if rest[:1] == ">":
                return "an atomic group"
            if rest[:1] in ("=", "!"):
                return "a lookahead"
            if rest[:2] in ("<=", "<!"):
                return "a lookbehind"
            if rest[:2] == "P=":
                return "a backreference"
        i += 1
    return None


def json_constraint(schema: dict[str, Any]) -> Constraint:
    """A JSON document valid against ``schema`` (checked with :func:`check_schema`)."""
    return Constraint(kind="json_schema", schema=check_schema(schema))


def choice_constraint(choices: Sequence[str]) -> Constraint:
    """Exactly one of ``choices`` (trimmed; empty and duplicate labels refused)."""
    if isinstance(choices, str):
        raise SchemaError("choices must be a list of labels, not one string")
    labels = tuple(str(c).strip() for c in choices)
    if not labels:
        raise SchemaError("give at least one label")
    if len(labels) > MAX_CHOICES:
        raise SchemaError(f"too many labels: {len(labels)} (at most {MAX_CHOICES})")
    for label in labels:
        if not label:
            raise SchemaError("a label is empty")
        if len(label) > MAX_CHOICE_CHARS:
            raise SchemaError(f"the label {label[:40]!r}... is too long (at most {MAX_CHOICE_CHARS} characters)")
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise SchemaError(f"labels appear twice: {', '.join(dupes)}")
    return Constraint(kind="choice", choices=labels)


def regex_constraint(pattern: str) -> Constraint:
    """Text matching ``pattern`` in full (Python/Rust common syntax: no lookaround, no backreferences)."""
    return Constraint(kind="regex", pattern=_check_pattern(pattern, "the regular expression"))


def choice_regex(choices: Sequence[str]) -> str:
    """A regular expression matching exactly one of ``choices`` (how a choice is enforced while decoding)."""
    return "(" + "|".join(re.escape(c) for c in choices) + ")"


def decoding_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema the decoder is held to: ``schema`` with ``additionalProperties: false`` on every object that
    lists its properties and leaves extras open. A small model otherwise keeps inventing properties until its
    token budget runs out; every document this allows is still valid against ``schema`` itself.
    """

    def tighten(node: Any) -> Any:
        if isinstance(node, list):
            return [tighten(n) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: (v if k in ("enum", "const", "default", "examples") else tighten(v)) for k, v in node.items()}
        props = node.get("properties")
        if isinstance(props, dict) and "additionalProperties" not in node:
            if set(node.get("required", [])) <= set(props):
                out["additionalProperties"] = False
        if isinstance(props, dict):
            out["properties"] = {name: tighten(sub) for name, sub in props.items()}
        return out

    return dict(tighten(schema))


def validate(constraint: Constraint, text: str) -> Any:
    """The value ``text`` stands for under ``constraint``, or :class:`InvalidOutput` saying why not.

    JSON: the parsed document (a whole-answer Markdown fence is tolerated), valid against the schema;
    regex: the text matching in full (surrounding whitespace ignored); choice: the label, exactly, after
    trimming.
    """
    if constraint.kind == "json_schema":
        return _validate_json(constraint.schema or {}, text)
    if constraint.kind == "regex":
        pattern = constraint.pattern or ""
        for candidate in (text, text.strip()):
            if re.fullmatch(pattern, candidate):
                return candidate
        raise InvalidOutput(f"{_preview(text)} does not match the pattern {pattern}")
    if constraint.kind == "choice":
        answer = text.strip()
        if answer in constraint.choices:
            return answer
        raise InvalidOutput(f"{_preview(text)} is not one of: {', '.join(constraint.choices)}")
    raise InvalidOutput(f"unknown constraint kind {constraint.kind!r}")


def _validate_json(schema: dict[str, Any], text: str) -> Any:
    body = text.strip()
    fenced = _FENCE.fullmatch(body)
    if fenced:
        body = fenced.group(1).strip()
    if not body:
        raise InvalidOutput("the answer is empty, not a JSON document")
    try:
        value = json.loads(body, parse_constant=_no_constant)
    except ValueError as exc:
        raise InvalidOutput(f"the answer is not valid JSON ({exc})") from None
    from jsonschema import Draft202012Validator

    error = next(iter(sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path))), None)
    if error is not None:
        raise InvalidOutput(f"the JSON does not match the schema at {_pointer(error.path)}: {error.message}")
    return value


_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)\n?```", re.S)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _pointer(path: Iterable[object]) -> str:
    parts = [_escape(str(p)) for p in path]
    return "/" + "/".join(parts) if parts else "the top level"


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}.get(
        type(value), type(value).__name__
    )


def _preview(text: str, limit: int = 80) -> str:
    text = text.strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


#: Room for the repair request: the invalid output is shown back to the model, cut to this many characters.
_REPAIR_PREVIEW_CHARS = 2000


async def generate(
    board: Switchboard,
    decision: RouteDecision,
    messages: Sequence[ChatMessage],
    constraint: Constraint,
    *,
    params: GenerationParams | None = None,
    overrides: RoutingOverrides | None = None,
    catalogue: Catalogue | None = None,
) -> StructuredResult:
    """Answer ``messages`` on the routed model under ``constraint``, validated.

    The constraint is enforced while decoding where the backend can; whatever the backend did, the text is
    validated here. On failure the model sees its output and the error once and tries again; a second
    failure is :class:`InvalidOutput` (the caller shows an honest error, never the invalid text as valid).
    """
    params = replace(params or GenerationParams(), constraint=constraint)
    convo = list(messages)
    answer = board.answer(decision, convo, params=params, overrides=overrides, catalogue=catalogue)
    text = "".join([piece async for piece in answer])
    try:
        return StructuredResult(validate(constraint, text), text, answer)
    except InvalidOutput as first:
        log.info("request %s: output invalid (%s); one repair attempt", answer.request_id, first)
        repair = [*convo, ChatMessage("assistant", text[:_REPAIR_PREVIEW_CHARS]), _repair_request(constraint, first)]
        # The repair goes to the model that answered, not back through fallback (a different model would
        # not be repairing its own output).
        again = replace(decision, tier=answer.tier, model=answer.model)
        second = board.answer(again, repair, params=params, overrides=overrides, catalogue=catalogue)
        text = "".join([piece async for piece in second])
        try:
            return StructuredResult(validate(constraint, text), text, second, repaired=True)
        except InvalidOutput as err:
            raise InvalidOutput(f"no valid output after one repair attempt: {err}", backend=second.model) from err


def describe(constraint: Constraint) -> str:
    """What the output must be, in words a model (or a person) can follow."""
    if constraint.kind == "json_schema":
        schema = json.dumps(constraint.schema or {}, separators=(",", ":"), ensure_ascii=False)
        return f"only a JSON document that validates against this JSON Schema: {schema}"
    if constraint.kind == "regex":
        return f"only text that matches this regular expression in full: {constraint.pattern}"
    return "only one of these, exactly: " + ", ".join(constraint.choices)


def _repair_request(constraint: Constraint, error: InvalidOutput) -> ChatMessage:
    return ChatMessage(
        "user", f"That answer is invalid: {error}. Reply again with {describe(constraint)}. No other text."
    )


async def classify(
    board: Switchboard,
    decision: RouteDecision,
    text: str,
    labels: Sequence[str],
    *,
    multi: bool = False,
    overrides: RoutingOverrides | None = None,
    catalogue: Catalogue | None = None,
) -> LabelResult:
    """One of ``labels`` for ``text`` (or, with ``multi``, any subset of them), and nothing else.

    Single label: a choice constraint; scores from the backend's log-probabilities where it exposes them
    (OpenAI-compatible servers), else 1.0 for the chosen label and 0.0 for the others. Multi: a JSON array of
    the labels (duplicates dropped, the given order kept), scored 1.0/0.0.
    """
    choice = choice_constraint(labels)
    names = list(choice.choices)
    listed = ", ".join(names)
    if multi:
        schema = {"type": "array", "items": {"type": "string", "enum": names}, "maxItems": len(names)}
        constraint = json_constraint(schema)
        system = (
            "Classify the user's text. Answer with a JSON array of every label that applies, "
            f"chosen only from: {listed}. An empty array if none applies. No other text."
        )
    else:
        constraint = choice
        system = f"Classify the user's text. Answer with exactly one of these labels and nothing else: {listed}."
    longest = max(len(n) for n in names)
    budget = min(512, 8 + (longest + 4) * (len(names) if multi else 1))
    params = GenerationParams(max_new_tokens=budget, temperature=0.0, logprobs=0 if multi else 5)
    messages = [ChatMessage("system", system), ChatMessage("user", text)]
    result = await generate(
        board, decision, messages, constraint, params=params, overrides=overrides, catalogue=catalogue
    )
    if multi:
        chosen = [n for n in names if n in set(result.value)]
        return LabelResult(chosen, {n: float(n in chosen) for n in names}, result.answer)
    label = str(result.value)
    return LabelResult([label], _label_scores(names, label, result.answer.logprobs), result.answer)


def _label_scores(labels: list[str], chosen: str, logprobs: Sequence[TokenLogprob]) -> dict[str, float]:
    """Per-label scores from token log-probabilities; 1.0/0.0 where the backend gave none.

    The chosen label scores the probability of the tokens that spelt it. Another label gets the probability
    of the first-step alternative it alone starts with (the model's next-best choices); labels the model
    never considered score 0.0.
    """
    scores = {label: 0.0 for label in labels}
    if not logprobs:
        scores[chosen] = 1.0
        return scores
    spelt = [t for t in logprobs if t.token.strip()]  # leading whitespace tokens carry no decision
    scores[chosen] = math.exp(sum(t.logprob for t in spelt)) if spelt else 1.0
    first = spelt[0] if spelt else logprobs[0]
    for token, logprob in first.top:
        piece = token.strip()
        if not piece or token == first.token:
            continue
        starting = [label for label in labels if label.startswith(piece)]
        if len(starting) == 1 and starting[0] != chosen:
            scores[starting[0]] = max(scores[starting[0]], math.exp(logprob))
    return {label: round(score, 4) for label, score in scores.items()}
