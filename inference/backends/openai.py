"""Any OpenAI-compatible chat endpoint (vLLM, TGI, llama.cpp, ``transformers serve``, hosted APIs).

One HTTP attempt per call: retries, timeouts beyond connect, cooldown and queueing live in
:class:`inference.serving.resilience.ResilientBackend`, so there is exactly one retry loop.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

import aiohttp
from yarl import URL

from inference.backends import sse
from inference.backends.base import Backend, OutputLimit, ProbeResult, TokenStream
from inference.backends.chat_template import raw_prompt
from inference.catalogue import OpenAIModel
from inference.errors import (
    BackendTimeout,
    BackendUnavailable,
    EndpointRejected,
    InferenceError,
    ResponseTooLarge,
    error_from_status,
    retry_after_from,
)
from inference.serving import netguard
from inference.structured import decoding_schema
from inference.types import ChatMessage, Constraint, GenerationParams, TokenLogprob, ToolCall

log = logging.getLogger(__name__)

# Every read from an endpoint is bounded: past a bound the call ends with ResponseTooLarge, so a server
# that never stops talking costs a few MiB, not the process. One chunk of a real stream is well under 1 KiB.
# (SSE lines and events are bounded by inference.backends.sse.)
#: Largest non-streamed JSON answer (an answer is capped at max_tokens * CHARS_PER_TOKEN characters anyway).
_MAX_BODY = 8 << 20
#: Most bytes of a probe's answer read (the probe only needs the status).
_MAX_PROBE_BODY = 64 << 10
#: Most bytes of an error body kept for the error message.
_MAX_ERROR_BODY = 4096
#: The ``extra_body`` key by which an endpoint opts in to vLLM's regex/choice fields (it is not sent).
GUIDED_DECODING_OPT_IN = "guided_decoding"
#: Body fields the backend controls; extra_body may not override them (parsing depends on them).
_RESERVED = frozenset({"messages", "prompt", "stream", GUIDED_DECODING_OPT_IN})
#: Statuses with which a server says it does not take a request shape (unknown path, unknown field).
_UNSUPPORTED_STATUSES = frozenset({400, 404, 405, 422, 501})


class _EmptyStream(BackendUnavailable):
    """A 200 whose event stream ended before any chunk: nothing was said, so asking again costs nothing."""


class OpenAIBackend(Backend):
    """POST ``{base_url}/chat/completions``, streamed (SSE) or not.

    ``session``: a shared aiohttp session (not closed here). Without one, or when a ``guard`` is given,
    the backend makes and owns its session: a guarded session's connector re-checks every resolved
    address, which a shared session's connector cannot do.
    """

    kind: ClassVar[str] = "openai"

    def __init__(
        self,
        name: str,
        spec: OpenAIModel,
        session: aiohttp.ClientSession | None = None,
        *,
        guard: netguard.Guard | None = None,
        stream: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name, spec.model)
        self.spec = spec
        #: Where ``api_key_env`` is looked up: the operator's environment, given only for operator models. None
        #: for endpoints a server admin added, so nothing they configure can read the operator's secrets.
        self._env = env
        self._guard = guard
        self._stream = stream
        self._base_url = spec.base_url.rstrip("/")
        self._session = session if guard is None else None
        self._owns_session = self._session is None
        #: Learnt from the server: it refused ``response_format`` / has no ``/completions`` (we stop asking).
        self._response_format_refused = False
        self._completions_missing = False
        #: The server answers a streamed request with tools by an empty stream (llama-cpp-python's server can't
        #: stream an automatic tool choice): such requests are sent unstreamed from then on.
        self._tools_unstreamed = False

    def __repr__(self) -> str:
        # The key's variable name is fine to show; the key itself never is.
        return (
            f"OpenAIBackend(name={self.name!r}, model={self.model!r}, base_url={self._base_url!r}, "
            f"api_key_env={self.spec.api_key_env!r})"
        )

    @property
    def provider(self) -> str:
        return f"openai:{URL(self._base_url).host or self._base_url}"

    @property
    def context_window(self) -> int:
        return self.spec.context_window

    async def start(self) -> None:
        await self._check_resolved()  # fail at start-up, not on a user's first request
        self._get_session()

    async def aclose(self) -> None:
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = self._guard.connector() if self._guard is not None else None
            self._session = aiohttp.ClientSession(connector=connector)
            self._owns_session = True
        return self._session

    def _check_url(self) -> None:
        if self._guard is not None:
            try:
                self._guard.check_url(self._base_url)
            except netguard.UnsafeURL as exc:
                raise EndpointRejected(f"endpoint refused: {exc}", backend=self.name) from None

    async def _check_resolved(self) -> None:
        if self._guard is not None:
            try:
                await self._guard.check_resolved(self._base_url)
            except netguard.UnresolvableHost as exc:  # DNS may come back: not a verdict on the URL
                raise BackendUnavailable(str(exc), backend=self.name) from None
            except netguard.UnsafeURL as exc:
                raise EndpointRejected(f"endpoint refused: {exc}", backend=self.name) from None

    def _api_key(self) -> str | None:
        """The key, read at request time so a rotated one is picked up; None = a keyless endpoint (no header).

        A missing variable is not an error: most local servers need no key, and an error naming it would tell
        whoever configured the endpoint whether the operator has such a variable.
        """
        if self.spec.api_key is not None:
            return self.spec.api_key.get_secret_value() or None
        name = self.spec.api_key_env
        if name is None or self._env is None:
            return None
        return self._env.get(name) or None

    def _headers(self, *, accept: str) -> dict[str, str]:
        headers = {"Accept": accept}
        key = self._api_key()  # read at request time so a rotated key is picked up
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _timeout(self, total: float | None = None) -> aiohttp.ClientTimeout:
        # Only connect is bounded here; first-token/total limits belong to the resilience layer.
        connect = self.spec.timeouts.connect_s
        return aiohttp.ClientTimeout(total=total, connect=connect, sock_connect=connect)

    def _body(
        self, messages: list[ChatMessage], params: GenerationParams, stream: bool, *, raw: bool = False
    ) -> dict[str, Any]:
        """A chat completion body, or with ``raw`` a (legacy) text completion of the joined messages."""
        body: dict[str, Any] = {"model": self.spec.model}
        if raw:
            body["prompt"] = raw_prompt(messages)
        else:
            body["messages"] = [_message(m) for m in messages]
        body.update(max_tokens=self._max_tokens(params), temperature=params.temperature, top_p=params.top_p)
        body["stream"] = stream
        if params.stop:  # some servers reject an empty list
            body["stop"] = list(params.stop)
        if params.logprobs:
            top = min(params.logprobs, 20)  # OpenAI's cap
            body.update({"logprobs": top} if raw else {"logprobs": True, "top_logprobs": top})
        if params.constraint is not None:
            body.update(self._constraint_fields(params.constraint))
        if not raw:
            _add_tool_fields(body, messages, params)
        body.update({k: v for k, v in self.spec.extra_body.items() if k not in _RESERVED})
        return body

    def _constraint_fields(self, constraint: Constraint) -> dict[str, Any]:
        """How the server is asked to enforce a constraint while decoding; the answer is validated anyway.

        JSON Schema: ``response_format`` (OpenAI, vLLM, llama.cpp server), unless this server refused it
        once. Regex and choice have no standard field: vLLM's ``guided_regex``/``guided_choice`` go out only
        when the endpoint opts in with ``extra_body: {guided_decoding: vllm}``; otherwise validation and one
        repair attempt (inference.structured) are the guarantee.
        """
        if constraint.kind == "json_schema":
            if self._response_format_refused:
                return {}
            schema = {"name": "answer", "schema": decoding_schema(constraint.schema or {}), "strict": True}
            return {"response_format": {"type": "json_schema", "json_schema": schema}}
        if self.spec.extra_body.get(GUIDED_DECODING_OPT_IN) != "vllm":
            return {}
        if constraint.kind == "regex":
            return {"guided_regex": constraint.pattern}
        return {"guided_choice": list(constraint.choices)}

    def _scrub(self, text: str) -> str:
        # A misbehaving proxy may echo request headers into an error body.
        key = self._api_key() or ""
        return text.replace(key, "***") if len(key) >= 4 else text

    def _max_tokens(self, params: GenerationParams) -> int:
        return min(params.max_new_tokens, self.spec.max_new_tokens)

    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> TokenStream:
        # The client enforces max_tokens itself: a server that ignores it is cut off, not obeyed.
        logprobs: list[TokenLogprob] = []
        tool_calls: list[ToolCall] = []
        stream = TokenStream(
            self._generate(list(messages), params, logprobs, tool_calls),
            model=self.model,
            provider=self.provider,
            limit=OutputLimit(self._max_tokens(params)),
        )
        stream.logprobs = logprobs  # filled as the answer arrives
        stream.tool_calls = tool_calls  # filled when the answer ends
        return stream

    async def _generate(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        logprobs: list[TokenLogprob] | None = None,
        tool_calls: list[ToolCall] | None = None,
    ) -> AsyncIterator[str]:
        """One answer; a server that lacks ``/completions`` (raw) or refuses ``response_format`` is asked
        again once without it (remembered), since both are refused before any token."""
        sink = logprobs if logprobs is not None else []
        while True:
            raw = params.raw and not self._completions_missing
            asked_format = params.constraint is not None and params.constraint.kind == "json_schema"
            asked_format = asked_format and not self._response_format_refused
            try:
                async for piece in self._post(messages, params, sink, raw=raw, tool_calls=tool_calls):
                    yield piece
                return
            except _EmptyStream:
                if not params.tools or self._tools_unstreamed or not self._stream:
                    raise
                log.info("%s streamed nothing for a request with tools; asking without streaming", self.name)
                self._tools_unstreamed = True
            except InferenceError as exc:
                if exc.status not in _UNSUPPORTED_STATUSES:
                    raise
                if raw and exc.status in (404, 405, 501):
                    log.info("%s has no /completions (HTTP %s); continuing through chat", self.name, exc.status)
                    self._completions_missing = True
                elif asked_format and exc.status in (400, 422):
                    log.info("%s refused response_format (HTTP %s); relying on validation", self.name, exc.status)
                    self._response_format_refused = True
                else:
                    raise

    async def _post(
        self,
        messages: list[ChatMessage],
        params: GenerationParams,
        logprobs: list[TokenLogprob],
        *,
        raw: bool,
        tool_calls: list[ToolCall] | None = None,
    ) -> AsyncIterator[str]:
        self._check_url()  # IP literals never reach the guarded resolver: check them on every request
        stream = self._stream and not (params.tools and self._tools_unstreamed)
        body = self._body(messages, params, stream, raw=raw)
        headers = self._headers(accept="text/event-stream" if stream else "application/json")
        url = f"{self._base_url}/{'completions' if raw else 'chat/completions'}"
        log.debug("POST %s model=%s stream=%s", url, self.spec.model, stream)
        session = self._get_session()
        try:
            async with session.post(
                url, json=body, headers=headers, timeout=self._timeout(), allow_redirects=False
            ) as resp:
                await self._raise_for_status(resp)
                ctype = resp.headers.get("Content-Type", "").lower()
                # transformers serve answers SSE even to stream=false: follow the answer, not the request.
                sse_stream = "text/event-stream" in ctype
                calls = tool_calls if tool_calls is not None else []
                pieces = _sse_pieces(resp, logprobs, calls) if sse_stream else _json_pieces(resp, logprobs, calls)
                complete = False
                try:
                    async for piece in pieces:
                        yield piece
                    complete = True
                finally:
                    if not complete:
                        resp.close()  # don't return a half-read connection to the pool
        except netguard.UnsafeURL as exc:  # raised by the guarded resolver at connect time
            raise EndpointRejected(f"endpoint refused: {exc}", backend=self.name) from None
        except InferenceError as exc:
            exc.backend = exc.backend or self.name
            raise
        except (aiohttp.ServerTimeoutError, TimeoutError) as exc:
            raise BackendTimeout(f"timeout: {type(exc).__name__}", backend=self.name) from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise BackendUnavailable(f"stream broken: {type(exc).__name__}", backend=self.name) from None
        except aiohttp.ClientError as exc:
            # Connection refused/reset, DNS failure, TLS errors. str(exc) names host:port, never headers.
            raise BackendUnavailable(f"{type(exc).__name__}: {exc}", backend=self.name) from None

    async def _raise_for_status(self, resp: aiohttp.ClientResponse) -> None:
        if 300 <= resp.status < 400:
            raise EndpointRejected(f"HTTP {resp.status}: redirect not followed", backend=self.name, status=resp.status)
        if resp.status < 400:
            return
        try:
            raw = await resp.content.read(_MAX_ERROR_BODY)
        except aiohttp.ClientError:
            raw = b""
        text = self._scrub(raw.decode("utf-8", "replace"))
        log.debug("%s answered HTTP %s", self.name, resp.status)
        raise error_from_status(resp.status, text, backend=self.name, retry_after=retry_after_from(resp.headers))

    async def probe(self) -> bool:
        return await self.probe_status() is ProbeResult.HEALTHY

    async def probe_status(self) -> ProbeResult:
        """GET /models; servers without it (transformers serve answers 500) get a 1-token completion.

        401/403 on either is :attr:`ProbeResult.REFUSED` (the endpoint is there, our key is not accepted);
        anything else that fails is :attr:`ProbeResult.UNREACHABLE`. Bodies are read only up to a bound.
        """
        try:
            await self._check_resolved()
            session = self._get_session()
            limit = min(self.spec.timeouts.first_token_s, 30.0)
            headers = self._headers(accept="application/json")
            async with session.get(
                f"{self._base_url}/models", headers=headers, timeout=self._timeout(limit), allow_redirects=False
            ) as resp:
                resp.close()  # only the status matters: never read (or pool) a body of unknown size
                if resp.status < 300:
                    return ProbeResult.HEALTHY
                if resp.status in (401, 403):
                    return ProbeResult.REFUSED
            body = self._body([ChatMessage("user", "hi")], GenerationParams(max_new_tokens=1), False)
            async with session.post(
                f"{self._base_url}/chat/completions",
                json=body,
                headers=headers,
                timeout=self._timeout(limit),
                allow_redirects=False,
            ) as resp:
                try:
                    await _read_bounded(resp, _MAX_PROBE_BODY)
                finally:
                    resp.close()
                if resp.status in (401, 403):
                    return ProbeResult.REFUSED
                return ProbeResult.HEALTHY if resp.status < 300 else ProbeResult.UNREACHABLE
        except (InferenceError, aiohttp.ClientError, TimeoutError, netguard.UnsafeURL) as exc:
            log.info("probe of %s failed: %s", self.name, type(exc).__name__)
            return ProbeResult.UNREACHABLE


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, or :class:`ResponseTooLarge` as soon as it passes ``limit`` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        raise ResponseTooLarge(f"response too large: {resp.content_length} bytes announced (limit {limit})")
    buf = bytearray()
    async for chunk in resp.content.iter_any():
        buf += chunk
        if len(buf) > limit:
            raise ResponseTooLarge(f"response too large: over {limit} bytes")
    return bytes(buf)


async def _sse_pieces(
    resp: aiohttp.ClientResponse, logprobs: list[TokenLogprob], tool_calls: list[ToolCall] | None = None
) -> AsyncIterator[str]:
    finished = received = False
    calls = _ToolCallDeltas()
    async for data in sse.events(resp.content):
        received = True
        if data.strip() == "[DONE]":
            finished = True
            break
        try:
            chunk = json.loads(data)
        except ValueError:
            raise BackendUnavailable("stream broken: a chunk is not JSON") from None
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:
            raise BackendUnavailable(f"server error mid-stream: {_error_text(chunk['error'])}")
        choices = chunk.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(choice, dict):
            continue  # usage-only or empty chunk
        delta = choice.get("delta") or choice.get("message") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        if content is None:
            content = choice.get("text")  # a text completion (raw)
        logprobs.extend(_logprobs(choice.get("logprobs")))
        if isinstance(delta, dict) and isinstance(delta.get("tool_calls"), list):
            calls.add(delta["tool_calls"])
        if isinstance(content, str) and content:  # empty deltas (role only) are normal
            yield content
        if choice.get("finish_reason"):
            finished = True  # some servers (transformers serve) never send [DONE]
    if not finished:
        kind = BackendUnavailable if received else _EmptyStream
        raise kind("stream broken: ended without [DONE] or finish_reason")
    if tool_calls is not None:  # only a whole answer's calls: a broken stream's half-written ones never run
        tool_calls.extend(calls.finish())


async def _json_pieces(
    resp: aiohttp.ClientResponse, logprobs: list[TokenLogprob], tool_calls: list[ToolCall] | None = None
) -> AsyncIterator[str]:
    try:
        payload = json.loads(await _read_bounded(resp, _MAX_BODY))
    except ValueError:
        raise BackendUnavailable("response is not JSON") from None
    if isinstance(payload, dict) and "error" in payload:
        raise BackendUnavailable(f"server error: {_error_text(payload['error'])}")
    try:
        choice = payload["choices"][0]
        message = choice["message"] if "message" in choice else {"content": choice["text"]}
    except (KeyError, IndexError, TypeError):
        raise BackendUnavailable("response has no choices[0].message") from None
    content = message.get("content") if isinstance(message, dict) else None
    logprobs.extend(_logprobs(choice.get("logprobs")))
    listed = message.get("tool_calls") if isinstance(message, dict) else None
    if tool_calls is not None and isinstance(listed, list):
        for n, item in enumerate(listed[:_MAX_TOOL_CALLS]):
            function = item.get("function") if isinstance(item, dict) else None
            if isinstance(function, dict):
                tool_calls.append(_tool_call(item.get("id"), function.get("name"), function.get("arguments"), n))
    if isinstance(content, str) and content:
        yield content


#: Most tool calls read from one answer, and most characters of their names and arguments together (a server
#: streaming tool-call deltas forever is cut off like one streaming text forever).
_MAX_TOOL_CALLS = 32
_MAX_TOOL_CALL_CHARS = 256 << 10


class _ToolCallDeltas:
    """Streamed ``tool_calls`` deltas accumulated by ``index``: id and name once, arguments in pieces."""

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}
        self._chars = 0

    def add(self, deltas: list[Any]) -> None:
        for delta in deltas:
            if not isinstance(delta, dict):
                continue
            index = delta.get("index")
            if not isinstance(index, int):  # servers that omit it stream one call at a time
                index = max(self._calls, default=0) if not delta.get("id") else len(self._calls)
            if index not in self._calls:
                if len(self._calls) >= _MAX_TOOL_CALLS:
                    raise ResponseTooLarge(f"response too large: over {_MAX_TOOL_CALLS} tool calls")
                self._calls[index] = {"id": None, "name": "", "arguments": ""}
            call = self._calls[index]
            if isinstance(delta.get("id"), str) and delta["id"]:
                call["id"] = delta["id"]
            function = delta.get("function")
            if not isinstance(function, dict):
                continue
            for key in ("name", "arguments"):
                piece = function.get(key)
                if isinstance(piece, dict):  # a server that sends the arguments whole, as an object
                    piece = json.dumps(piece)
                if isinstance(piece, str):
                    call[key] += piece
                    self._chars += len(piece)
            if self._chars > _MAX_TOOL_CALL_CHARS:
                raise ResponseTooLarge(f"response too large: tool calls over {_MAX_TOOL_CALL_CHARS} characters")

    def finish(self) -> list[ToolCall]:
        return [
            _tool_call(c["id"], c["name"], c["arguments"], n)
            for n, (_, c) in enumerate(sorted(self._calls.items()))
            if c["name"] or c["arguments"]
        ]


def _tool_call(call_id: object, name: object, arguments: object, n: int) -> ToolCall:
    """One call as the model wrote it; arguments that are not a JSON object become the call's ``error``."""
    ident = call_id if isinstance(call_id, str) and call_id else f"call_{n}"
    tool = name.strip() if isinstance(name, str) else ""
    if isinstance(arguments, dict):
        return ToolCall(ident, tool, arguments)
    text = arguments if isinstance(arguments, str) else ""
    if not text.strip():  # a tool without parameters
        return ToolCall(ident, tool, {})
    try:
        value = json.loads(text)
    except ValueError as exc:
        return ToolCall(ident, tool, {}, error=f"the arguments are not valid JSON ({exc})")
    if not isinstance(value, dict):
        return ToolCall(ident, tool, {}, error="the arguments are not a JSON object")
    return ToolCall(ident, tool, value)


def _add_tool_fields(body: dict[str, Any], messages: Sequence[ChatMessage], params: GenerationParams) -> None:
    """OpenAI's tool protocol: ``tools``/``tool_choice``, assistant ``tool_calls`` and ``tool`` results' ids."""
    for out, m in zip(body["messages"], messages, strict=True):
        if m.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                for c in m.tool_calls
            ]
            if not m.content:
                out["content"] = None  # OpenAI: an assistant message that only calls tools has null content
        if m.tool_call_id is not None:
            out["tool_call_id"] = m.tool_call_id
    if params.tools:
        body["tools"] = list(params.tools)
        if params.tool_choice is not None:
            body["tool_choice"] = params.tool_choice


def _message(m: ChatMessage) -> dict[str, Any]:
    """One chat message; with images, OpenAI's content parts (text first, then each ``image_url``)."""
    if not m.images:
        return {"role": m.role, "content": m.content}
    parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    parts += [{"type": "image_url", "image_url": {"url": image.data_url}} for image in m.images]
    return {"role": m.role, "content": parts}


def _logprobs(block: object) -> list[TokenLogprob]:
    """Token log-probabilities from a choice: chat's ``{"content": [...]}`` or legacy completions' lists.

    Anything malformed is skipped: scores are a nicety, never a reason to fail an answer.
    """
    out: list[TokenLogprob] = []
    if not isinstance(block, dict):
        return out
    content = block.get("content")
    if isinstance(content, list):  # chat completions
        for item in content:
            if not isinstance(item, dict) or not isinstance(item.get("logprob"), (int, float)):
                continue
            top = tuple(
                (str(t.get("token", "")), float(t["logprob"]))
                for t in item.get("top_logprobs") or []
                if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))
            )
            out.append(TokenLogprob(str(item.get("token", "")), float(item["logprob"]), top))
        return out
    tokens, values, tops = block.get("tokens"), block.get("token_logprobs"), block.get("top_logprobs")
    if isinstance(tokens, list) and isinstance(values, list):  # legacy completions
        tops = tops if isinstance(tops, list) else []
        for i, (token, value) in enumerate(zip(tokens, values, strict=False)):
            if not isinstance(value, (int, float)):
                continue
            alts = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
            top = tuple((str(k), float(v)) for k, v in alts.items() if isinstance(v, (int, float)))
            out.append(TokenLogprob(str(token), float(value), top))
    return out


def _error_text(error: object) -> str:
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error)[:300]
