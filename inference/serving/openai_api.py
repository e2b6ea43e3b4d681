"""Switchboard as an OpenAI-compatible router: ``POST /v1/chat/completions`` (streaming and not), ``GET /v1/models``,
``GET /health`` and ``GET /metrics`` (Prometheus), in one aiohttp application.

Model ``auto`` is routed as a Discord request is: the last user message is classified and routed by the
:class:`~inference.serving.service.Switchboard`, its task's pipeline frames it (system messages are the channel's
own system prompt, earlier turns the history, trimmed to the model's context), and the answer runs with tier
fallback. A catalogue name keeps the classified task's framing but forces that model (no fallback to another one:
the caller asked for it). Every response names the route that answered (task, tier, model, reason) in the
``x-switchboard-route`` header (JSON), in the body (``switchboard_route``) or, when streaming, in the final chunk.

Errors are OpenAI-shaped (``{"error": {"message", "type", "param", "code"}}``) with the status an OpenAI client
expects; a backend's typed error (inference/errors.py) maps to 400/502/503/504. Knows nothing of Discord.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.errors import (
    AuthenticationError,
    BackendOverloaded,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    InferenceError,
    ModelNotFound,
    QueueFull,
)
from inference.serving.metrics import CONTENT_TYPE_LATEST, Metrics
from inference.serving.service import Answer, Switchboard
from inference.structured import InvalidOutput, SchemaError, generate, json_constraint
from inference.tasks.base import Prepared, TaskPipeline, pipeline_for
from inference.types import Attachment, ChatMessage, Constraint, Request, RouteDecision, TaskId

log = logging.getLogger(__name__)

#: The header that carries the route (compact JSON, ASCII) on every chat completion response.
ROUTE_HEADER = "x-switchboard-route"
#: The model name that lets Switchboard choose.
AUTO = "auto"
#: Largest request body read (a larger one is refused with 413 before it is held).
MAX_BODY_BYTES = 1 << 20
#: OpenAI allows at most four stop sequences.
MAX_STOP = 4


# --- errors ----------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered as OpenAI's ``{"error": {...}}`` body with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        refusal: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}
        #: The metrics' refusal reason when this refuses a request before any model ran.
        self.refusal = refusal

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, extra: dict[str, str] | None = None) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers={**self.headers, **(extra or {})})


def api_error_from(exc: InferenceError, request_id: str) -> ApiError:
    """The OpenAI-shaped error for a backend's typed error; the details stay in the log under ``request_id``."""
    said = f"{exc.user_text} (request {request_id})"
    # Our upstream refused our key or does not know its model: the caller did nothing wrong.
    if isinstance(exc, AuthenticationError | ModelNotFound):
        return ApiError(502, said, type="server_error", code="upstream_error")
    if isinstance(exc, SchemaError):
        return ApiError(400, f"response_format: {exc}", param="response_format", code="invalid_schema")
    if isinstance(exc, BadRequest):
        return ApiError(400, f"{said}: {exc}", code="upstream_bad_request")
    if isinstance(exc, BackendTimeout):
        return ApiError(504, said, type="server_error", code="timeout")
    if isinstance(exc, BackendOverloaded):
        wait = exc.retry_after if exc.retry_after is not None and math.isfinite(exc.retry_after) else 1.0
        headers = {"Retry-After": str(max(1, math.ceil(wait)))}
        code = "busy" if isinstance(exc, QueueFull) else "overloaded"
        return ApiError(503, said, type="server_error", code=code, headers=headers, refusal="busy")
    if isinstance(exc, InvalidOutput):
        return ApiError(502, said, type="server_error", code="invalid_output")
    if isinstance(exc, BackendUnavailable):
        return ApiError(502, said, type="server_error", code="unavailable")
    return ApiError(500, said, type="server_error", code="inference_error")


# --- the request, as OpenAI's chat completions protocol has it ----------------------------------------------------


class _In(BaseModel):
    # Strict: "16" is not a number and "true" is not a boolean, as OpenAI's own API says. Unknown fields are
    # ignored (clients send user, seed, metadata, ...).
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)


class TextPart(_In):
    type: Literal["text"]
    text: str


class ImageUrl(_In):
    url: str


class ImageUrlPart(_In):
    type: Literal["image_url"]
    image_url: ImageUrl


class InputAudio(_In):
    data: str = ""
    format: str = "wav"


class InputAudioPart(_In):
    type: Literal["input_audio"]
    input_audio: InputAudio


ContentPart = Annotated[TextPart | ImageUrlPart | InputAudioPart, Field(discriminator="type")]


class MessageIn(_In):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content or () if isinstance(p, TextPart))

    def attachments(self) -> tuple[Attachment, ...]:
        """Media parts as attachments: like a Discord attachment, an image makes a request multimodal."""
        found: list[Attachment] = []
        for i, part in enumerate(self.content if isinstance(self.content, list) else ()):
            if isinstance(part, ImageUrlPart):
                found.append(Attachment(f"image-{i}", _data_url_type(part.image_url.url, "image/*")))
            elif isinstance(part, InputAudioPart):
                found.append(Attachment(f"audio-{i}.{part.input_audio.format}", f"audio/{part.input_audio.format}"))
        return tuple(found)


def _data_url_type(url: str, default: str) -> str:
    if url.startswith("data:") and ";" in url:
        return url[5 : url.index(";")] or default
    return default


class JsonSchemaIn(_In):
    name: str | None = None
    schema_: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormatIn(_In):
    type: Literal["text", "json_schema", "json_object"]
    json_schema: JsonSchemaIn | None = None


class StreamOptionsIn(_In):
    include_usage: bool = False


class ChatCompletionIn(_In):
    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptionsIn | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1, le=1)
    response_format: ResponseFormatIn | None = None
    tools: list[dict[str, Any]] | None = None

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


def _validation_error(exc: ValidationError) -> ApiError:
    first = exc.errors(include_input=False)[0]
    loc = ".".join(str(p) for p in first["loc"])
    more = len(exc.errors()) - 1
    tail = f" (and {more} more problem{'s' * (more > 1)})" if more else ""
    return ApiError(
        400, f"invalid request: {loc or 'body'}: {first['msg']}{tail}", param=loc or None, refusal="invalid_request"
    )


# --- settings of the server ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiLimits:
    """The operator's caps (from settings), the same ones a Discord request gets."""

    #: Longest answer anyone gets, whatever ``max_tokens`` asks (each model's own cap applies too).
    max_new_tokens: int = 512
    #: Longest last user message, in characters.
    max_prompt_chars: int = 4000
    max_body_bytes: int = MAX_BODY_BYTES


def is_loopback(host: str) -> bool:
    """True when ``host`` only listens on this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve anywhere


# --- the application ------------------------------------------------------------------------------------------------


@dataclass
class _Job:
    """One chat completion, prepared: what runs, and what the response says about it."""

    body: ChatCompletionIn
    decision: RouteDecision
    pipeline: TaskPipeline
    prepared: Prepared
    prompt: str
    forced: bool
    constraint: Constraint | None
    created: int

    @property
    def include_usage(self) -> bool:
        return self.body.stream_options is not None and self.body.stream_options.include_usage


class OpenAIRouter:
    """The handlers, over one :class:`Switchboard` (which the caller owns and closes)."""

    def __init__(self, board: Switchboard, *, api_key: str | None = None, limits: ApiLimits | None = None) -> None:
        self.board = board
        self._key = f"Bearer {api_key}".encode() if api_key else None
        self.limits = limits or ApiLimits()
        self.metrics = Metrics()

    def app(self) -> web.Application:
        # The body cap is ours (checked in _read_body); aiohttp's own is set just above it as a backstop.
        app = web.Application(client_max_size=self.limits.max_body_bytes + 1, middlewares=[self._guard])
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{name}", self.model)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_page)
        return app

    # -- every request: the key, and OpenAI-shaped errors for whatever goes wrong ----------------------------------
    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            if self._key is not None and request.path != "/health":
                self._authorize(request)
            return await handler(request)
        except ApiError as exc:
            if exc.refusal is not None:
                self.metrics.refusals.labels(exc.refusal).inc()
            return exc.response()
        except web.HTTPException as exc:  # aiohttp's own (404 route, 405 method, 413 body): the same shape
            if exc.status >= 400:
                kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
                return ApiError(exc.status, exc.reason, type=kind).response()
            raise
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception:
            log.exception("%s %s failed unexpectedly", request.method, request.path)
            return ApiError(500, "internal error", type="server_error").response()

    def _authorize(self, request: web.Request) -> None:
        assert self._key is not None
        given = request.headers.get("Authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, self._key):
            raise ApiError(
                401,
                "missing or wrong API key: send Authorization: Bearer KEY",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
                refusal="unauthorized",
            )

    # -- GET ---------------------------------------------------------------------------------------------------------
    def _model_card(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 0, "owned_by": "switchboard"}

    async def models(self, request: web.Request) -> web.Response:
        names = [AUTO, *self.board.catalogue.models]
        return web.json_response({"object": "list", "data": [self._model_card(n) for n in names]})

    async def model(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name != AUTO and name not in self.board.catalogue.models:
            raise _unknown_model(name)
        return web.json_response(self._model_card(name))

    async def health(self, request: web.Request) -> web.Response:
        board = self.board
        models = {
            name: {
                "tier": spec.tier.value,
                "health": board.health(name),
                "probe": board.probes[name].value if name in board.probes else None,
            }
            for name, spec in board.catalogue.models.items()
        }
        return web.json_response({"ok": True, "models": models, "stand_ins": dict(board.substitutes)})

    async def metrics_page(self, request: web.Request) -> web.Response:
        self.metrics.queue_depths(self.board)
        return web.Response(body=self.metrics.page(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- POST /v1/chat/completions -------------------------------------------------------------------------------------
    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        job = self._prepare(await self._read_body(request))
        with self.metrics.in_progress.track_inprogress():
            if job.prepared.notice is not None:  # the task can't be served yet: said honestly, no model runs
                self._count(job, None, "notice")
                return await self._send_whole(request, job, None, job.prepared.notice, "stop")
            answer = self._answer(job)
            started = time.perf_counter()
            if job.constraint is not None or not job.pipeline.streams or not job.body.stream:
                text, answer = await self._complete(job, answer)
                self._observe(job, answer, time.perf_counter() - started)
                return await self._send_whole(request, job, answer, text, _finish_reason(job, answer))
            return await self._stream(request, job, answer, started)

    async def _read_body(self, request: web.Request) -> ChatCompletionIn:
        limit = self.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _too_large(limit)
        raw = bytearray()
        async for chunk in request.content.iter_chunked(64 << 10):  # bounded reads: never more than the cap held
            raw += chunk
            if len(raw) > limit:
                raise _too_large(limit)
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}", refusal="invalid_request") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the body must be a JSON object", refusal="invalid_request")
        try:
            return ChatCompletionIn.model_validate(data)
        except ValidationError as exc:
            raise _validation_error(exc) from None

    def _prepare(self, body: ChatCompletionIn) -> _Job:
        """Route and frame the request as a Discord request is; ApiError for what can't be answered."""
        if body.tools:
            raise ApiError(400, "tools are not supported by this router", param="tools", refusal="invalid_request")
        persona_parts: list[str] = []
        history: list[ChatMessage] = []
        for i, message in enumerate(body.messages):
            if message.role in ("tool", "function"):
                raise ApiError(
                    400,
                    f"messages.{i}: {message.role} messages are not supported",
                    param=f"messages.{i}.role",
                    refusal="invalid_request",
                )
            if message.role in ("system", "developer"):
                persona_parts.append(message.text())
            else:
                history.append(ChatMessage("user" if message.role == "user" else "assistant", message.text()))
        last = body.messages[-1]
        if last.role != "user":
            raise ApiError(400, "the last message must be the user's", param="messages", refusal="invalid_request")
        history.pop()
        prompt, attachments = last.text().strip(), last.attachments()
        if not prompt and not attachments:
            raise ApiError(400, "the last user message is empty", param="messages", refusal="invalid_request")
        if len(prompt) > self.limits.max_prompt_chars:
            raise ApiError(
                400,
                f"the last user message is {len(prompt):,} characters; "
                f"the limit here is {self.limits.max_prompt_chars:,}",
                param="messages",
                code="prompt_too_long",
                refusal="invalid_request",
            )
        stops = body.stops
        if len(stops) > MAX_STOP or any(not s for s in stops):
            raise ApiError(400, f"stop: at most {MAX_STOP} non-empty strings", param="stop", refusal="invalid_request")
        constraint, task = self._constraint(body)
        if task is not None:
            prompt = f"{prompt}\n\nReply with only a JSON document valid against this JSON Schema:\n"
            prompt += json.dumps(constraint.schema if constraint else {})

        decision = self.board.route(Request(text=prompt, attachments=attachments), task=task)
        forced = body.model != AUTO
        if forced:
            decision = self._force(decision, body.model)

        pipeline = pipeline_for(decision.task)
        spec = self.board.catalogue.get(decision.model)
        asked = body.max_completion_tokens or body.max_tokens or self.limits.max_new_tokens
        max_new = min(asked, self.limits.max_new_tokens, spec.max_new_tokens)
        persona = "\n\n".join(p for p in persona_parts if p.strip()) or None
        text = prompt or "(see attachment)"
        shaped = pipeline.prepare(text, max_new_tokens=max_new, persona=persona)
        if history and shaped.notice is None and pipeline.uses_history:
            backend = self.board.backend_for(decision.model)
            fixed = sum(backend.count_tokens(m.content) for m in shaped.messages)
            budget = backend.context_window - shaped.params.max_new_tokens - fixed
            kept = _recent(history, budget, backend.count_tokens)
            shaped = pipeline.prepare(text, history=kept, max_new_tokens=max_new, persona=persona)
        params = shaped.params
        if body.temperature is not None:
            params = replace(params, temperature=body.temperature)
        if body.top_p is not None:
            params = replace(params, top_p=body.top_p)
        if stops:
            params = replace(params, stop=tuple(dict.fromkeys((*params.stop, *stops))))
        if constraint is not None:  # structured.generate applies it (and validates, with one repair)
            params = replace(params, constraint=None)
        shaped = replace(shaped, params=params)
        return _Job(body, decision, pipeline, shaped, text, forced, constraint, int(time.time()))

    @staticmethod
    def _constraint(body: ChatCompletionIn) -> tuple[Constraint | None, TaskId | None]:
        """The JSON Schema constraint ``response_format`` asks for, and the task that frames it ("grammar")."""
        fmt = body.response_format
        if fmt is None or fmt.type == "text":
            return None, None
        if fmt.type == "json_object" or fmt.json_schema is None:
            raise ApiError(
                400,
                "response_format: give a json_schema ({type: json_schema, json_schema: {schema: {...}}}); "
                "json_object without a schema is not supported",
                param="response_format",
                refusal="invalid_request",
            )
        try:
            return json_constraint(fmt.json_schema.schema_), "grammar"
        except SchemaError as exc:
            raise ApiError(
                400,
                f"response_format: {exc}",
                param="response_format",
                code="invalid_schema",
                refusal="invalid_request",
            ) from None

    def _force(self, decision: RouteDecision, name: str) -> RouteDecision:
        """The classified task's route, on the model the request named (or its start-up stand-in)."""
        if name not in self.board.catalogue.models:
            raise _unknown_model(name)
        spec = self.board.catalogue.get(name)
        actual = self.board.resolve(name)
        reason = f"model {name} named in the request"
        if actual != name:
            reason += f"; {name} unreachable at start-up, local {actual} stands in"
        return replace(decision, tier=spec.tier, model=actual, reason=reason, escalated=False)

    def _answer(self, job: _Job) -> Answer:
        return self.board.answer(
            job.decision, job.prepared.messages, params=job.prepared.params, allow_fallback=not job.forced
        )

    async def _complete(self, job: _Job, answer: Answer) -> tuple[str, Answer]:
        """The whole answer, post-processed as the task shows it, and the answer that counts (with a schema: the
        validated one, after a repair attempt the second); ApiError when the model fails."""
        try:
            if job.constraint is not None:
                result = await generate(
                    self.board, job.decision, job.prepared.messages, job.constraint, params=job.prepared.params
                )
                return json.dumps(result.value, ensure_ascii=False), result.answer
            text = "".join([piece async for piece in answer])
        except InferenceError as exc:
            raise self._failed(job, answer, exc) from None
        return job.pipeline.finish(text, prompt=job.prompt).text, answer

    def _failed(self, job: _Job, answer: Answer, exc: InferenceError) -> ApiError:
        log.warning("request %s failed: %s: %s", answer.request_id, type(exc).__name__, exc)
        error = api_error_from(exc, answer.request_id)
        if error.refusal is None:
            self.metrics.errors.labels(type(exc).__name__).inc()
            self._count(job, answer, "error")
        else:
            self.metrics.refusals.labels(error.refusal).inc()
        error.headers[ROUTE_HEADER] = _header(self._route(job, answer))
        return error

    async def _stream(self, request: web.Request, job: _Job, answer: Answer, started: float) -> web.StreamResponse:
        pieces = aiter(answer)
        try:
            # The first piece before the headers: an error before it gets its real status, and the headers name
            # the model that really answers (after a fallback).
            try:
                first: str | None = await anext(pieces)
            except StopAsyncIteration:
                first = None
            except InferenceError as exc:
                raise self._failed(job, answer, exc) from None
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-cache",
                    ROUTE_HEADER: _header(self._route(job, answer)),
                }
            )
            await response.prepare(request)
            try:
                await _event(response, self._chunk(job, answer, {"role": "assistant", "content": ""}))
                if first is not None:
                    await _event(response, self._chunk(job, answer, {"content": first}))
                    async for piece in pieces:
                        await _event(response, self._chunk(job, answer, {"content": piece}))
            except InferenceError as exc:  # half an answer was sent: the stream ends with the error
                error = self._failed(job, answer, exc)
                await _event(response, {**error.body(), "switchboard_route": self._route(job, answer)})
                await response.write(b"data: [DONE]\n\n")
                return response
            self._observe(job, answer, time.perf_counter() - started)
            last = self._chunk(job, answer, {}, finish=_finish_reason(job, answer))
            last["switchboard_route"] = self._route(job, answer)
            await _event(response, last)
            if job.include_usage:
                await _event(response, {**self._chunk(job, answer, None), "usage": self._usage(job, answer)})
            await response.write(b"data: [DONE]\n\n")
            return response
        except ConnectionResetError:
            log.info("request %s: the client went away; generation stopped", answer.request_id)
            raise
        finally:
            await pieces.aclose()  # type: ignore[attr-defined]  # an async generator: stops the generation

    def _chunk(
        self, job: _Job, answer: Answer, delta: dict[str, Any] | None, *, finish: str | None = None
    ) -> dict[str, Any]:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        return {
            "id": f"chatcmpl-{answer.request_id}",
            "object": "chat.completion.chunk",
            "created": job.created,
            "model": answer.model,
            "choices": choices,
        }

    async def _send_whole(
        self, request: web.Request, job: _Job, answer: Answer | None, text: str, finish: str
    ) -> web.StreamResponse:
        route = self._route(job, answer)
        request_id = answer.request_id if answer is not None else "notice"
        model = answer.model if answer is not None else job.decision.model
        headers = {ROUTE_HEADER: _header(route)}
        if not job.body.stream:
            body = {
                "id": f"chatcmpl-{request_id}",
                "object": "chat.completion",
                "created": job.created,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                "usage": self._usage(job, answer),
                "switchboard_route": route,
            }
            return web.json_response(body, headers=headers)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **headers}
        )
        await response.prepare(request)
        base = {
            "id": f"chatcmpl-{request_id}",
            "object": "chat.completion.chunk",
            "created": job.created,
            "model": model,
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

        await _event(response, chunk({"role": "assistant", "content": text}))
        await _event(response, {**chunk({}, finish), "switchboard_route": route})
        if job.include_usage:
            await _event(response, {**base, "choices": [], "usage": self._usage(job, answer)})
        await response.write(b"data: [DONE]\n\n")
        return response

    def _usage(self, job: _Job, answer: Answer | None) -> dict[str, int]:
        if answer is None:
            return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        backend = self.board.backend_for(answer.model)
        prompt = sum(backend.count_tokens(m.content) for m in job.prepared.messages)
        done = answer.timings.tokens
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    def _route(self, job: _Job, answer: Answer | None) -> dict[str, Any]:
        route = route_of(job.decision, answer)
        if answer is not None:  # the backend's provider once started (the answer's is read before it starts)
            route["provider"] = self.board.backend_for(answer.model).provider
        return route

    # -- metrics -------------------------------------------------------------------------------------------------------
    def _count(self, job: _Job, answer: Answer | None, outcome: str) -> None:
        tier = answer.tier.value if answer is not None else job.decision.tier.value
        model = answer.model if answer is not None else job.decision.model
        self.metrics.requests.labels(job.decision.task, tier, model, outcome).inc()

    def _observe(self, job: _Job, answer: Answer, total_s: float) -> None:
        self.metrics.observe(job.decision.task, job.decision.tier, answer, total_s)


def create_app(board: Switchboard, *, api_key: str | None = None, limits: ApiLimits | None = None) -> web.Application:
    """The OpenAI-compatible application over ``board`` (the caller starts and closes the board)."""
    return OpenAIRouter(board, api_key=api_key, limits=limits).app()


# --- helpers ----------------------------------------------------------------------------------------------------------


def route_of(decision: RouteDecision, answer: Answer | None) -> dict[str, Any]:
    """The route as responses carry it: who was chosen and why, who answered, how fast."""
    route: dict[str, Any] = {
        "task": decision.task,
        "tier": answer.tier.value if answer is not None else decision.tier.value,
        "model": answer.model if answer is not None else decision.model,
        "reason": decision.reason,
        "confidence": round(decision.confidence, 4),
    }
    if answer is None:
        route["notes"] = ["no model was run"]
        return route
    t = answer.timings
    route.update(
        provider=answer.provider,
        fell_back=answer.fell_back,
        notes=list(answer.notes),
        request_id=answer.request_id,
        tokens=t.tokens,
        time_to_first_token_s=round(t.first_token_s, 3) if t.first_token_s is not None else None,
        total_s=round(t.total_s, 3) if t.total_s is not None else None,
    )
    return route


def _header(route: dict[str, Any]) -> str:
    # ASCII (json escapes the rest) on one line: a valid header value whatever the reason says.
    return json.dumps(route, separators=(",", ":"), ensure_ascii=True)


async def _event(response: web.StreamResponse, data: dict[str, Any]) -> None:
    await response.write(b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n")


def _finish_reason(job: _Job, answer: Answer) -> str:
    at_cap = answer.timings.tokens >= job.prepared.params.max_new_tokens
    return "length" if answer.truncated or at_cap else "stop"


def _recent(history: Sequence[ChatMessage], budget: int, count: Callable[[str], int]) -> list[ChatMessage]:
    """The newest turns that fit ``budget`` tokens, oldest first (as the Discord side trims a reply chain)."""
    kept: list[ChatMessage] = []
    used = 0
    for message in reversed(history):
        used += count(message.content)
        if used > budget:
            break
        kept.append(message)
    return kept[::-1]


def _unknown_model(name: str) -> ApiError:
    return ApiError(
        404,
        f"the model {name!r} does not exist here: use {AUTO!r} or a name from GET /v1/models",
        type="invalid_request_error",
        param="model",
        code="model_not_found",
        refusal="model_not_found",
    )


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is over {limit:,} bytes", code="request_too_large", refusal="too_large")
