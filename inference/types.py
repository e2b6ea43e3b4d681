"""Plain data types shared by the classifier, router and backends."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

TaskId = Literal[
    "classification",
    "conversion",
    "completion",
    "chat",
    "rag",
    "code",
    "grammar",
    "tool_use",
    "agent",
    "multimodal",
]
#: The ten tasks, in a fixed order (also the classifier's label order).
TASKS: tuple[TaskId, ...] = (
    "classification",
    "conversion",
    "completion",
    "chat",
    "rag",
    "code",
    "grammar",
    "tool_use",
    "agent",
    "multimodal",
)
#: How people see each task (Discord choices, /route, /stats, /help); the ids stay in the CLI's JSON and
#: the footer. Plain words: readers take "grammar" to mean spelling, not constrained output.
TASK_LABELS: dict[TaskId, str] = {
    "classification": "classification (label, sort)",
    "conversion": "conversion (translate, reformat)",
    "completion": "completion (continue a text)",
    "chat": "chat",
    "rag": "questions about documents (RAG)",
    "code": "code",
    "grammar": "structured output (JSON, fixed format)",
    "tool_use": "tool use",
    "agent": "agent (multi-step)",
    "multimodal": "images and media",
}


class Tier(StrEnum):
    SMALL = "small"
    LARGE = "large"

    @property
    def other(self) -> Tier:
        return Tier.LARGE if self is Tier.SMALL else Tier.SMALL


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str = ""
    size: int | None = None
    #: Downloads the file's bytes (Discord's ``Attachment.read``, a local file for the CLI); None where only
    #: the name and type are known (routing). Called only after the type and size checks passed.
    read: Callable[[], Awaitable[bytes]] | None = field(default=None, compare=False, repr=False)

    @property
    def is_media(self) -> bool:
        """Image, audio or video: such an attachment makes a request multimodal."""
        major = self.content_type.split("/", 1)[0].lower()
        if major in {"image", "audio", "video"}:
            return True
        if self.content_type:
            return False
        ext = self.filename.rsplit(".", 1)[-1].lower() if "." in self.filename else ""
        return ext in _MEDIA_EXTENSIONS


_MEDIA_EXTENSIONS = frozenset(
    "png jpg jpeg gif webp bmp tiff svg heic mp3 wav ogg flac m4a opus aac mp4 mov webm mkv avi".split()
)


@dataclass(frozen=True, slots=True)
class Request:
    """One user request as the router sees it."""

    text: str
    attachments: tuple[Attachment, ...] = ()
    #: Tokens of conversation history that will accompany the request (long-context signal).
    context_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image that goes along with a message (already resized and re-encoded: inference.attachments)."""

    data: bytes
    mime: Literal["image/png", "image/jpeg"] = "image/png"
    #: The file it came from, for notes and logs.
    filename: str = ""

    @property
    def data_url(self) -> str:
        """The ``data:`` URL an OpenAI-compatible ``image_url`` content part carries."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A model's request to run one tool: ``arguments`` parsed from its JSON (``error`` when they did not parse)."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    #: Why the arguments could not be read (not JSON, not an object); the tool then never runs.
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    #: Images the message shows (a vision model's input); text-only backends see ``content`` alone.
    images: tuple[ImagePart, ...] = ()
    #: An assistant message's tool calls (OpenAI ``tool_calls``), sent back with the results that follow it.
    tool_calls: tuple[ToolCall, ...] = ()
    #: A ``tool`` message: the id of the call whose result ``content`` is.
    tool_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class Constraint:
    """What an output must be, enforced while decoding wherever the backend can (guided decoding).

    ``json_schema``: a JSON document valid against ``schema``; ``regex``: text matching ``pattern`` in full;
    ``choice``: exactly one of ``choices``. Built and checked by :mod:`inference.structured`.
    """

    kind: Literal["json_schema", "regex", "choice"]
    schema: dict[str, Any] | None = None
    pattern: str | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    #: Structure guaranteed during decoding (None: free text).
    constraint: Constraint | None = None
    #: Continue the text as it is, without a chat template (completion on a base model): the messages'
    #: contents are joined and the model writes what comes next.
    raw: bool = False
    #: Ask for each generated token's log-probability with this many alternatives (0: none), where the
    #: backend exposes them (OpenAI-compatible ``logprobs``/``top_logprobs``); read from ``TokenStream.logprobs``.
    logprobs: int = 0
    #: Tools the model may call (OpenAI ``tools`` entries, ``inference.tools.ToolBox.openai_specs``); the calls
    #: it makes come back on ``TokenStream.tool_calls``. Only OpenAI-compatible backends send them.
    tools: tuple[dict[str, Any], ...] = ()
    #: OpenAI ``tool_choice``: "auto", "none", "required" or ``{"type": "function", ...}`` (None: not sent).
    tool_choice: str | dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One generated token with its log-probability and the most likely alternatives at that step."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Classification:
    task: TaskId
    confidence: float
    #: 0..1 score that the request needs the large tier (reasoning, long/exacting output, long context).
    difficulty: float
    #: Human-readable signals that contributed (e.g. "image attachment", "maths word problem").
    signals: tuple[str, ...] = ()
    scores: dict[str, float] = field(default_factory=dict)
    #: Tokens in the request text (by the classifier's tokenizer), for the long-context rule.
    prompt_tokens: int = 0
    #: What settled the task: "classifier" (the fast path), "nearest examples" (the unsure path's vote over
    #: labelled examples) or "attachment" (a media attachment).
    decided_by: str = "classifier"
    #: The request's unit-length embedding (a numpy vector) when the classifier computed one, so a caller can
    #: query another bank of examples (inference.classifier.bank.ExampleBank) without encoding again.
    embedding: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RouteDecision:
    task: TaskId
    tier: Tier
    model: str
    confidence: float
    difficulty: float
    reason: str
    escalated: bool = False

    def as_json(self) -> dict[str, object]:
        """The CLI contract: task, tier, model, confidence, reason."""
        return {
            "task": self.task,
            "tier": self.tier.value,
            "model": self.model,
            "confidence": round(self.confidence, 4),
            "reason": self.reason,
        }


@dataclass(slots=True)
class Timings:
    """Filled in while a stream runs; seconds since the stream was started."""

    first_token_s: float | None = None
    total_s: float | None = None
    tokens: int = 0

    @property
    def tokens_per_s(self) -> float | None:
        if not self.total_s or self.first_token_s is None or self.tokens < 2:
            return None
        return (self.tokens - 1) / max(self.total_s - self.first_token_s, 1e-9)
