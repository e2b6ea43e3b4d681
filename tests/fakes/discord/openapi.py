"""Validate Discord REST bodies against Discord's own OpenAPI 3.1 description.

The spec (tests/discord-openapi.json, see tests/DISCORD-OPENAPI-LICENSE.md) is loaded once into a
`referencing.Registry`; each operation's request and 2xx/4xx response schemas are checked with a
Draft 2020-12 validator. Loading takes ~0.03 s; validators are cached per schema location.
"""

from __future__ import annotations

import json
import re
import reprlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_PATH = Path(__file__).resolve().parents[2] / "discord-openapi.json"
_SPEC_URI = "urn:discord-openapi"

# Known mismatches between discord.py 2.7.1, the spec snapshot and Discord itself, tolerated on purpose.
# Each entry: (direction "request"/"response"/"*", JSON path suffix of the value, jsonschema keyword).
KNOWN_MISMATCHES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    # `default_member_permissions`: discord.py sends an integer in the command-sync body; the docs (and this
    # spec's response schema) use a string, and the spec's README says int fields accept int-parseable
    # strings. Tolerated in either direction, for that field only. (The fake answers with a string.)
    ("*", ("default_member_permissions",), "type"),
    # Field errors carry string codes ("BASE_TYPE_MAX_LENGTH", as in the docs' error example); the spec's
    # Error schema says integer.
    ("response", ("_errors", "*", "code"), "type"),
)
# Also tolerated, in requests only: an integer where the spec wants a snowflake string. discord.py sends
# ints for e.g. `attachments[].id` (upload index 0, 1, ...), `message_reference.message_id/channel_id` and
# `recipient_id`; Discord accepts both. Responses from the fake must still use strings.


@dataclass(frozen=True)
class Violation:
    """One body that does not match the spec."""

    method: str
    path: str
    direction: str  # "request" or "response"
    message: str

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.direction}: {self.message}"


@dataclass
class Operation:
    """An OpenAPI operation: its path template and raw operation object."""

    method: str
    template: str
    spec: dict[str, Any] = field(repr=False)

    @property
    def pointer(self) -> str:
        """JSON pointer of the operation inside the spec."""
        escaped = self.template.replace("~", "~0").replace("/", "~1")
        return f"/paths/{escaped}/{self.method}"


def _template_regex(template: str) -> re.Pattern[str]:
    parts = [("[^/]+" if seg.startswith("{") else re.escape(seg)) for seg in template.split("/")]
    return re.compile("/".join(parts) + "$")


def _suffix_matches(path: tuple[Any, ...], suffix: tuple[str, ...]) -> bool:
    if len(path) < len(suffix):
        return False
    tail = path[len(path) - len(suffix) :]
    return all(want == "*" or str(got) == want for got, want in zip(tail, suffix, strict=True))


class OpenAPIValidator:
    """Maps (method, path) to operations and validates bodies; thread-safe enough for one event loop."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry: Registry = Registry().with_resource(_SPEC_URI, resource)
        # Literal segments beat parameters (".../messages/@original" over ".../messages/{message_id}").
        routes: list[tuple[int, str, re.Pattern[str]]] = []
        for template in spec["paths"]:
            routes.append((template.count("{"), template, _template_regex(template)))
        routes.sort(key=lambda r: r[0])
        self._routes = [(t, rx) for _, t, rx in routes]
        self._validators: dict[str, Draft202012Validator] = {}

    # -- lookup ---------------------------------------------------------------------------------

    def operation(self, method: str, path: str) -> Operation | None:
        """The operation for a concrete path such as "/channels/1/messages" (no /api/v10 prefix)."""
        method = method.lower()
        for template, rx in self._routes:
            if rx.match(path):
                item = self.spec["paths"][template]
                if method in item:
                    return Operation(method, template, item[method])
        return None

    def _validator(self, pointer: str) -> Draft202012Validator:
        found = self._validators.get(pointer)
        if found is None:
            ref = f"{_SPEC_URI}#{quote(pointer, safe='/~@:$')}"
            found = Draft202012Validator({"$ref": ref}, registry=self.registry)
            self._validators[pointer] = found
        return found

    def request_schema_pointer(self, op: Operation, content_type: str = "application/json") -> str | None:
        content = op.spec.get("requestBody", {}).get("content", {})
        if content_type not in content:
            content_type = "application/json"
        if content_type not in content:
            return None
        ct = content_type.replace("~", "~0").replace("/", "~1")
        return f"{op.pointer}/requestBody/content/{ct}/schema"

    def response_schema_pointer(self, op: Operation, status: int) -> tuple[str | None, bool]:
        """(pointer of the JSON schema, whether the status is documented at all)."""
        responses = op.spec.get("responses", {})
        for key in (str(status), f"{str(status)[0]}XX"):
            if key in responses:
                resp = responses[key]
                base = f"{op.pointer}/responses/{key}"
                if "$ref" in resp:  # shared response object, e.g. ClientErrorResponse
                    base = resp["$ref"].lstrip("#")
                    resp = self._resolve(resp["$ref"])
                if "application/json" in resp.get("content", {}):
                    return f"{base}/content/application~1json/schema", True
                return None, True
        return None, False

    def _resolve(self, ref: str) -> dict[str, Any]:
        node: Any = self.spec
        for part in ref.lstrip("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    # -- validation -----------------------------------------------------------------------------

    def _errors(self, pointer: str, body: Any, direction: str) -> list[str]:
        errors = [e for e in self._validator(pointer).iter_errors(body) if not _tolerated(direction, e)]
        if not errors:
            return []
        best = _deepest(best_match(errors))
        where = "$" + "".join(f"[{p!r}]" for p in best.absolute_path)
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return [f"{where}: {_describe(best)}{more}"]

    def validate_request(
        self, method: str, path: str, body: Any, content_type: str = "application/json"
    ) -> list[Violation]:
        """Violations of a request body (empty list when valid)."""
        op = self.operation(method, path)
        if op is None:
            return [Violation(method, path, "request", "no such operation in the spec")]
        pointer = self.request_schema_pointer(op, content_type)
        if pointer is None:
            if body is None:
                return []
            return [Violation(method, path, "request", f"{op.template} takes no body, got {body!r:.200}")]
        if body is None:
            if op.spec.get("requestBody", {}).get("required"):
                return [Violation(method, path, "request", "a body is required")]
            return []
        return [Violation(method, path, "request", m) for m in self._errors(pointer, body, "request")]

    def validate_response(self, method: str, path: str, status: int, body: Any) -> list[Violation]:
        """Violations of a response (status must be documented; JSON body must match its schema)."""
        op = self.operation(method, path)
        if op is None:
            return [Violation(method, path, "response", "no such operation in the spec")]
        pointer, documented = self.response_schema_pointer(op, status)
        if not documented:
            return [Violation(method, path, "response", f"status {status} is not documented")]
        if pointer is None:
            if body is None:
                return []
            return [Violation(method, path, "response", f"status {status} has no body, got {body!r:.200}")]
        if body is None:
            return [Violation(method, path, "response", f"status {status} needs a JSON body")]
        return [Violation(method, path, "response", m) for m in self._errors(pointer, body, "response")]


def _tolerated(direction: str, error: ValidationError) -> bool:
    # Failures inside anyOf/oneOf come back wrapped: tolerated if one branch failed only on tolerated points.
    if error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.schema_path[0] if sub.schema_path else None, []).append(sub)
        return any(all(_tolerated(direction, s) for s in subs) for subs in branches.values())
    if error.validator != "type":
        return False
    schema = error.schema if isinstance(error.schema, dict) else {}
    if direction == "request" and schema.get("format") == "snowflake":
        value = error.instance
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return True
    path = tuple(error.absolute_path)
    return any(
        where in ("*", direction) and _suffix_matches(path, suffix) and error.validator == keyword
        for where, suffix, keyword in KNOWN_MISMATCHES
    )


def _deepest(error: ValidationError) -> ValidationError:
    """For anyOf/oneOf failures, the error of the branch the body was meant for, furthest in."""
    while error.validator in ("anyOf", "oneOf") and error.context:
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.schema_path[0] if sub.schema_path else None, []).append(sub)
        # A branch whose discriminator (`type` const/enum) failed was not the intended one.
        meant = [
            e
            for subs in branches.values()
            if not any(tuple(s.relative_path) == ("type",) and s.validator in ("enum", "const") for s in subs)
            for e in subs
        ] or list(error.context)
        best = max(meant, key=lambda e: (len(e.absolute_path), e.validator != "type"))
        if all(e.validator == "type" and e.absolute_path == error.absolute_path for e in meant):
            break  # every branch wants another type here: say so (see _describe)
        error = best
    return error


def _describe(error: ValidationError) -> str:
    if error.validator in ("anyOf", "oneOf") and error.context:
        wanted = [e.validator_value for e in error.context if e.validator == "type"]
        if len(wanted) == len(error.context):
            names = ", ".join(t if isinstance(t, str) else "/".join(t) for t in wanted)
            return f"{reprlib.repr(error.instance)} is not of type {names}"
    if len(error.message) <= 200:
        return error.message
    value = error.validator_value
    shown = value if isinstance(value, int | float | bool | str) else type(value).__name__
    return f"{reprlib.repr(error.instance)} fails {error.validator}={shown!r:.80}"


@cache
def load_validator(path: Path = SPEC_PATH) -> OpenAPIValidator:
    """The shared validator (the spec is parsed once per process)."""
    with path.open(encoding="utf-8") as fh:
        return OpenAPIValidator(json.load(fh))
