"""The Switchboard service: route a request, run it on the chosen tier, fall back when a tier fails.

This is what the CLI and the Discord cogs call. It owns the backends (built and started lazily, each
behind the resilience layer), knows which unreachable models stand in for which, and reports the
route that actually answered.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from inference.backends import build_backend
from inference.backends.base import ProbeResult
from inference.catalogue import Catalogue, ImageToTextModel, ModelSpec, RoutingOverrides, sees_images
from inference.classifier.bank import ExampleBank
from inference.errors import (
    BackendUnavailable,
    InferenceError,
    QueueFull,
)
from inference.router import Router
from inference.serving.clock import Clock
from inference.serving.resilience import ResilientBackend
from inference.types import (
    ChatMessage,
    GenerationParams,
    Request,
    RouteDecision,
    TaskId,
    Tier,
    Timings,
    TokenLogprob,
    ToolCall,
)

if TYPE_CHECKING:
    import aiohttp

    from inference.backends.base import Backend
    from inference.serving.netguard import Guard

log = logging.getLogger(__name__)

#: Builds a model's backend; None leaves that model to the real builder (tests fake some models, not all).
BackendFactory = Callable[[str, ModelSpec], "Backend | None"]


class Answer:
    """One answer in progress: iterate it for text; afterwards it tells who answered and how fast."""

    def __init__(
        self,
        board: Switchboard,
        decision: RouteDecision,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        fallback_model: str | None,
        catalogue: Catalogue,
    ) -> None:
        self.request_id = uuid.uuid4().hex[:8]
        self.decision = decision
        self.tier: Tier = decision.tier
        self.model = decision.model
        self.provider = ""
        self.notes: list[str] = list(board.notes_for(decision.model))
        self.timings = Timings()
        #: The answer ended at the model's output limit (the client enforces it whatever the server does).
        self.truncated = False
        #: Per-token log-probabilities of the answer, when the params asked and the backend exposes them.
        self.logprobs: list[TokenLogprob] = []
        #: Tools the model asked to run (when the params offered tools), once the answer has ended.
        self.tool_calls: list[ToolCall] = []
        self._board = board
        self._messages = list(messages)
        self._params = params
        self._fallback_model = fallback_model
        self._catalogue = catalogue

    @property
    def fell_back(self) -> bool:
        return self.tier is not self.decision.tier

    def __aiter__(self) -> AsyncIterator[str]:
        return self._run()

    async def _run(self) -> AsyncIterator[str]:
        attempts = [(self.decision.tier, self.decision.model)]
        if self._fallback_model is not None:
            attempts.append((self.decision.tier.other, self._fallback_model))
        last_error: InferenceError | None = None
        described: list[ChatMessage] | None = None
        for i, (tier, model) in enumerate(attempts):
            # Not started here: the resilience layer starts it inside this request's time budget.
            backend = self._board.backend_for(model, self._catalogue)
            is_last = i == len(attempts) - 1
            if not backend.available and not is_last:
                self.notes.append(f"{model} is cooling down after repeated failures; the {tier.other} tier answered")
                continue
            self.tier, self.model, self.provider = tier, model, backend.provider
            spec = self._catalogue.get(model) if model in self._catalogue.models else None
            params = self._params
            if spec is not None and params.max_new_tokens > spec.max_new_tokens:
                params = replace(params, max_new_tokens=spec.max_new_tokens)
            messages = self._messages
            if (spec is None or not sees_images(spec)) and any(m.images for m in messages):
                # A text model: the catalogue's image-to-text model describes the images (once) in its prompt.
                described = described if described is not None else await self._described(messages)
                messages = described
            stream = backend.stream(messages, params)
            started = False
            try:
                async for piece in stream:
                    started = True
                    yield piece
                self.timings = stream.timings
                self.provider = stream.provider
                self.logprobs = stream.logprobs
                self.tool_calls = stream.tool_calls
                if stream.truncated:
                    self.truncated = True
                    self.notes.append(f"the answer was cut off at {model}'s output limit")
                return
            except InferenceError as exc:
                self.timings = stream.timings
                log.warning(
                    "request %s: %s on %s (%s tier) failed: %s",
                    self.request_id,
                    type(exc).__name__,
                    model,
                    tier.value,
                    exc,
                )
                # A bad request never goes to a bigger model, and half an answer can't be retried.
                if started or not exc.fallback or is_last:
                    raise
                if isinstance(exc, QueueFull) and not self._is_remote(attempts[i + 1][1]):
                    # Busy is not a failure: another local model on the same CPU/GPU would only split it. A full
                    # queue spills to a remote tier only; without one the user is told it is busy.
                    raise
                last_error = exc
                self.notes.append(f"the {tier.value} tier failed ({exc.short}); the {tier.other} tier answered")
            finally:
                await stream.aclose()
        raise last_error or BackendUnavailable("no model available")

    def _is_remote(self, model: str) -> bool:
        """Served elsewhere (an OpenAI-compatible endpoint), so capacity beyond this machine's."""
        spec = self._catalogue.models.get(model)
        return spec is not None and spec.kind == "openai"

    async def _described(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        """``messages`` with their images described by the catalogue's image-to-text model; unchanged without one
        (a text model then gets the images it can't see, as before)."""
        from inference.backends.vision import describe_images, describe_with, image_to_text_model

        reader = image_to_text_model(self._catalogue)
        if reader is None:
            return messages
        backend = self._board.backend_for(reader, self._catalogue)
        limit = self._catalogue.get(reader).max_new_tokens
        done = await describe_images(messages, describe_with(backend), model=reader, max_new_tokens=limit)
        self.notes.extend(done.notes)
        return done.messages


def _backend_key(name: str, spec: ModelSpec) -> str:
    # Same name, other spec (a server edited its endpoint): another backend.
    return f"{name}:{hash(spec.model_dump_json())}"


class Switchboard:
    def __init__(
        self,
        router: Router,
        *,
        cache_dir: Path,
        session: aiohttp.ClientSession | None = None,
        guard: Guard | None = None,
        backend_factory: BackendFactory | None = None,
        clock: Clock | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.router = router
        #: The operator's environment, for the operator catalogue's ``api_key_env`` (never for server models).
        self._env = env
        self.catalogue = router.catalogue
        self.cache_dir = cache_dir
        self._session = session
        #: Checks endpoints that server admins add (server-side request forgery).
        self.guard = guard
        self._factory = backend_factory
        self._clock = clock
        self._backends: dict[str, ResilientBackend] = {}
        #: unreachable model -> local stand-in, decided at start-up
        self.substitutes: dict[str, str] = {}
        #: What the start-up probe found, per probed model.
        self.probes: dict[str, ProbeResult] = {}

    # -- start-up -------------------------------------------------------------------------------
    async def start(self, *, probe: bool = True, warm: Iterable[str] = ()) -> list[str]:
        """Probe models that have a fallback; substitute unreachable ones. Returns start-up notes."""
        notes: list[str] = []
        if probe:
            for name in self._routed_models():
                spec = self.catalogue.get(name)
                if spec.fallback is None:
                    continue
                backend = self.backend_for(name)
                try:
                    result = await backend.probe_status()
                except Exception as exc:
                    log.debug("probe of %s failed: %r", name, exc)
                    result = ProbeResult.UNREACHABLE
                self.probes[name] = result
                if result is ProbeResult.HEALTHY:
                    log.info("start-up probe: %s (%s tier) is healthy at %s", name, spec.tier.value, backend.provider)
                    continue
                # Refused credentials will not fix themselves either: a stand-in answers, and the note says why.
                self.substitutes[name] = spec.fallback
                why = "refused our credentials" if result is ProbeResult.REFUSED else "is not reachable"
                note = f"{name} ({spec.tier.value} tier) {why} at {backend.provider}; {spec.fallback} stands in for it"
                log.warning(note)
                notes.append(note)
        notes += self._stand_in_notes()
        for name in warm:
            await self.backend(self.resolve(name))
        return notes

    def _stand_in_notes(self) -> list[str]:
        """A local model whose preferred larger model is not downloaded runs its packaged source: say so."""
        from inference.artifacts import hub_snapshot
        from inference.catalogue import TransformersModel

        notes = []
        for name in sorted({*self._routed_models(), *self.substitutes.values()}):
            spec = self.catalogue.get(name)
            if isinstance(spec, TransformersModel) and spec.prefer is not None and self.cache_dir is not None:
                if hub_snapshot(spec.prefer, self.cache_dir, spec.revision) is None:
                    note = (
                        f"{name} runs {spec.source}: {spec.prefer} is not downloaded "
                        "(`python -m bot models prepare` fetches it where a model hub is reachable)"
                    )
                    log.warning(note)
                    notes.append(note)
        return notes

    def _routed_models(self) -> list[str]:
        policy = self.router.policy
        return sorted({*policy.models.values(), *policy.task_models.values()})

    def resolve(self, name: str) -> str:
        seen = set()
        while name in self.substitutes and name not in seen:
            seen.add(name)
            name = self.substitutes[name]
        return name

    def _why_substituted(self, model: str) -> str:
        return "credentials refused" if self.probes.get(model) is ProbeResult.REFUSED else "unreachable"

    def notes_for(self, model: str) -> list[str]:
        return [f"{m} {self._why_substituted(m)}; {s} stands in" for m, s in self.substitutes.items() if s == model]

    def backend_for(self, name: str, catalogue: Catalogue | None = None) -> ResilientBackend:
        """The model's backend, built if need be but not started: cheap, synchronous, no lock.

        Starting (DNS, sessions, weights) happens in the resilience layer, inside a request's timeouts.
        """
        catalogue = catalogue or self.catalogue
        spec = catalogue.get(name)
        key = _backend_key(name, spec)
        wrapped = self._backends.get(key)
        if wrapped is None:
            raw = self._factory(name, spec) if self._factory else None
            if raw is None and isinstance(spec, ImageToTextModel):  # a local captioner (inference.backends.vision)
                from inference.backends.vision import ImageToTextBackend

                raw = ImageToTextBackend(name, spec, self.cache_dir)
            if raw is None:  # no factory, or it left this model to the real builder
                raw = build_backend(
                    name,
                    spec,
                    cache_dir=self.cache_dir,
                    session=self._session,
                    # A server admin's endpoint: guarded against SSRF, and blind to the operator's environment.
                    guard=self.guard if name in catalogue.untrusted else None,
                    env=None if name in catalogue.untrusted else self._env,
                )
            wrapped = self._backends[key] = ResilientBackend(raw, spec, clock=self._clock)
        return wrapped

    async def backend(self, name: str, catalogue: Catalogue | None = None, *, start: bool = True) -> ResilientBackend:
        """:meth:`backend_for`, started when ``start`` (concurrent callers share one start)."""
        wrapped = self.backend_for(name, catalogue)
        if start:
            await wrapped.start()
        return wrapped

    # -- requests -------------------------------------------------------------------------------
    def route(
        self,
        request: Request,
        *,
        task: TaskId | None = None,
        overrides: RoutingOverrides | None = None,
        catalogue: Catalogue | None = None,
        memory: ExampleBank | None = None,
    ) -> RouteDecision:
        decision = self.router.route(request, task=task, overrides=overrides, catalogue=catalogue, memory=memory)
        actual = self.resolve(decision.model)
        if actual != decision.model:
            why = self._why_substituted(decision.model)
            reason = f"{decision.reason}; {decision.model} {why} at start-up, local {actual} stands in"
            decision = replace(decision, model=actual, reason=reason)
        return decision

    def embed(self, request: Request) -> np.ndarray | None:
        """The task classifier's embedding of ``request`` (None when the classifier has none): the space in which
        a server's corrected requests are matched to new ones."""
        return getattr(self.router.classifier.classify(request), "embedding", None)

    def answer(
        self,
        decision: RouteDecision,
        messages: Sequence[ChatMessage],
        *,
        params: GenerationParams | None = None,
        overrides: RoutingOverrides | None = None,
        catalogue: Catalogue | None = None,
        allow_fallback: bool = True,
    ) -> Answer:
        policy = overrides.apply(self.router.policy) if overrides else self.router.policy
        fallback = self.resolve(policy.models[decision.tier.other]) if allow_fallback else None
        if fallback == decision.model:
            fallback = None
        return Answer(self, decision, messages, params or GenerationParams(), fallback, catalogue or self.catalogue)

    def health(self, name: str, catalogue: Catalogue | None = None) -> str:
        """Words for ``/models list``, without starting anything: 'healthy', 'unreachable; X stands in',
        'credentials refused; X stands in', 'cooling down (Ns left)' or 'not loaded yet'."""
        if name in self.substitutes:
            return f"{self._why_substituted(name)}; {self.substitutes[name]} stands in"
        spec = (catalogue or self.catalogue).models.get(name)
        if spec is None:
            return "unknown"
        wrapped = self._backends.get(_backend_key(name, spec))
        if wrapped is not None and not wrapped.available:
            return f"cooling down ({wrapped.cooldown_remaining:.0f}s left)"
        if wrapped is not None and (wrapped.started or self.probes.get(name) is ProbeResult.HEALTHY):
            return "healthy"
        return "not loaded yet"

    async def aclose(self) -> None:
        backends, self._backends = list(self._backends.values()), {}
        for backend in backends:
            try:
                await backend.aclose()
            except Exception:
                log.exception("closing %s failed", backend.name)
