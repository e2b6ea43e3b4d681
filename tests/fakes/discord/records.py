"""What the fake records: REST calls, uploaded files, interactions and their responses."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RecordedFile:
    """A file uploaded in a multipart body (`files[n]`)."""

    field_name: str  # "files[0]", ...
    filename: str
    content_type: str
    data: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class RecordedRequest:
    """One REST call the bot made. `path` has no /api/v10 prefix; `json` is the JSON body (or the
    multipart `payload_json`); `status`/`response` are filled in once the fake has answered."""

    index: int
    method: str
    path: str
    query: dict[str, str]
    json: Any
    files: list[RecordedFile]
    route: str | None = None  # OpenAPI path template, when the spec has one
    handled: bool = True  # False: no handler in the fake (answered 404 and listed in `unhandled`)
    status: int | None = None
    response: Any = None

    @property
    def done(self) -> bool:
        return self.status is not None

    def matches(self, method: str | None, pattern: str | None) -> bool:
        """Method equal (case-insensitive, None = any) and `re.search(pattern, path)`."""
        if method is not None and method.upper() != self.method:
            return False
        return pattern is None or re.search(pattern, self.path) is not None

    def __str__(self) -> str:
        query = "?" + "&".join(f"{k}={v}" for k, v in self.query.items()) if self.query else ""
        return f"{self.method} {self.path}{query} -> {self.status}"


@dataclass
class Interaction:
    """An INTERACTION_CREATE the fake sent; pass it to `FakeDiscord.interaction_response`."""

    id: str
    token: str
    application_id: str
    type: int
    name: str
    guild_id: str | None
    channel_id: str
    user: dict[str, Any]
    created_at: dt.datetime
    payload: dict[str, Any] = field(repr=False)
    # Server-side state.
    callback_type: int | None = None
    original_id: str | None = None  # message behind @original
    followup_ids: list[str] = field(default_factory=list)
    message_id: str | None = None  # component interactions: the message the component is on
    modal: dict[str, Any] | None = None  # callback type 9: the modal's data (custom_id, title, components)
    trigger: Interaction | None = field(default=None, repr=False)  # modal submits: the interaction that opened it


@dataclass
class Step:
    """One REST call belonging to an interaction, in order."""

    kind: str  # callback | get_original | edit_original | delete_original | followup | edit_followup | ...
    request: RecordedRequest

    @property
    def body(self) -> Any:
        return self.request.json

    @property
    def content(self) -> str | None:
        body = self.request.json or {}
        if self.kind == "callback":
            body = body.get("data") or {}
        return body.get("content") if isinstance(body, dict) else None


@dataclass
class InteractionSummary:
    """How the bot answered an interaction: `steps` in order plus the messages as they are now."""

    interaction: Interaction
    steps: list[Step]
    callback_type: int | None
    original: dict[str, Any] | None  # current @original message (None: none yet, or deleted)
    followups: list[dict[str, Any]]  # current followup messages, oldest first
    modal: dict[str, Any] | None = None  # the modal shown (callback type 9), as the bot sent it

    @property
    def kinds(self) -> list[str]:
        return [s.kind for s in self.steps]

    @property
    def deferred(self) -> bool:
        return self.callback_type in (5, 6)

    @property
    def ephemeral(self) -> bool:
        return bool(self.original and self.original["flags"] & 64)

    @property
    def loading(self) -> bool:
        """Deferred and not edited yet ("Bot is thinking...")."""
        return bool(self.original and self.original["flags"] & 128)

    @property
    def content(self) -> str:
        """Current content of @original ("" if none)."""
        return self.original["content"] if self.original else ""

    @property
    def contents(self) -> list[str]:
        """Every `content` the bot sent (callback data, edits, followups), in order."""
        return [c for s in self.steps if (c := s.content) is not None]

    @property
    def files(self) -> list[RecordedFile]:
        return [f for s in self.steps for f in s.request.files]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """@original (if any) followed by the followups."""
        return ([self.original] if self.original else []) + self.followups


class ApiError(Exception):
    """Raised by handlers: answered as Discord's error JSON {"message", "code"}."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: dict[str, Any] = {"message": message, "code": code}
        if errors:
            self.body["errors"] = errors


@dataclass
class RateLimitRule:
    """`FakeDiscord.rate_limit`: the next `times` matching requests are answered 429."""

    method: str | None
    pattern: str
    times: int
    retry_after: float
    bucket: str | None
    global_: bool
    scope: str
    hits: list[RecordedRequest] = field(default_factory=list)  # the requests answered 429

    @property
    def remaining(self) -> int:
        return self.times - len(self.hits)

    def body(self) -> dict[str, Any]:
        return {"message": "You are being rate limited.", "retry_after": self.retry_after, "global": self.global_}
