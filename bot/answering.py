"""What the cogs call: validate a request, route it with the server's settings, run it, record it.

Discord-agnostic on purpose (plain ids and strings in, an :class:`inference.serving.service.Answer` out),
so every rule here is tested without a gateway.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pydantic import SecretStr

from bot.corrections import Corrections
from bot.keybox import KeyBox
from bot.settings import Settings
from bot.storage import CustomModel, GuildConfig, Store
from bot.tools import RequestContext, ToolAnswer, ToolService
from inference import attachments as files_in
from inference.attachments import Files
from inference.catalogue import Catalogue, ModelSpec, OpenAIModel, RoutingOverrides, RoutingPolicy, sees_images
from inference.classifier.bank import ExampleBank
from inference.serving.metrics import CUSTOM_MODEL, Metrics
from inference.serving.service import Answer, Switchboard
from inference.tasks.base import Framing, TaskPipeline, pipeline_for
from inference.tasks.base import Prepared as TaskPrepared
from inference.tasks.chat import PERSONA
from inference.tasks.multimodal import MediaPlan, plan_media
from inference.types import Attachment, ChatMessage, ImagePart, Request, RouteDecision, TaskId, Tier

if TYPE_CHECKING:
    from inference.knowledge.base import CanRead
    from inference.knowledge.service import KnowledgeBase

log = logging.getLogger(__name__)

#: The chat task's persona (other tasks frame the request their own way: inference/tasks/).
DEFAULT_SYSTEM_PROMPT = PERSONA

#: What the bot shows while it works on an answer (replaced by the answer's text).
PLACEHOLDER = "⏳"
#: The last line of a finished answer (bot.replies.footer) or of a failed one (a "⚠️" note), and the tool
#: lines (bot.tools.tool_lines) before it.
_TRAILER = re.compile(r"(?:(?:^|\n)-# 🔧[^\n]*)*(?:^|\n)(?:-# |⚠️)[^\n]*$")
_CURSOR = " ▌"

#: Attachment types a request may carry (checked before any model runs).
ALLOWED_CONTENT_TYPES = ("image/", "audio/", "video/", "text/", "application/json", "application/pdf")


def human_size(size: int) -> str:
    """1536 -> '1.5 KB', 8388608 -> '8 MB' (binary units, as Discord shows them)."""
    value, unit = float(size), "bytes"
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            break
        value /= 1024
    return f"{size} bytes" if unit == "bytes" else f"{value:.1f}".removesuffix(".0") + f" {unit}"


class UserError(Exception):
    """Bad input: the message is shown to the user as it is."""


@dataclass(frozen=True)
class Scope:
    """A server's view of the models: the operator's catalogue plus its own endpoints."""

    config: GuildConfig
    catalogue: Catalogue
    overrides: RoutingOverrides
    #: The server's corrected requests (bot.corrections), which override the classifier for similar ones.
    memory: ExampleBank | None = None


@dataclass
class Prepared:
    decision: RouteDecision
    answer: Answer
    scope: Scope
    trimmed: int = 0
    #: The routed task's pipeline (its ``finish`` turns the model's text into what is shown).
    pipeline: TaskPipeline | None = None
    #: The request's text, for the pipeline's post-processing (e.g. the language a code answer is in).
    prompt: str = ""
    #: Said instead of running a model: the task cannot be served honestly yet (``answer`` is never run).
    notice: str | None = None
    #: A ``rag`` answer's citations, shown after the model's text ("" for other tasks).
    sources: str = ""
    #: Said in the footer about the request's files (one cut to fit, an image no model could see).
    notes: tuple[str, ...] = ()


class AnswerService:
    def __init__(
        self,
        board: Switchboard,
        store: Store,
        settings: Settings,
        keybox: KeyBox,
        knowledge: KnowledgeBase | None = None,
        corrections: Corrections | None = None,
        tools: ToolService | None = None,
    ) -> None:
        self.board = board
        self.store = store
        self.settings = settings
        #: What operators see at ``/metrics`` (bot/observability.py): requests, latency, refusals, fallbacks.
        self.metrics = Metrics()
        self.keybox = keybox
        #: Users' corrections of routes, per server ("Ask the larger model", "Wrong task?").
        self.corrections = corrections
        #: The servers' knowledge base: a ``rag`` request on a server with sources is answered from it.
        self.knowledge = knowledge
        #: Each server's tools: a ``tool_use`` request runs the tool loop with them (None: the honest notice).
        self.tools = tools

    def _unsealed(self, row: CustomModel) -> OpenAIModel:
        """The server's endpoint with its own key opened for this scope (only this server's rows reach here)."""
        if row.sealed_key is None:
            return row.spec
        key = self.keybox.open(row.guild_id, row.name, row.sealed_key)
        return row.spec if key is None else row.spec.model_copy(update={"api_key": SecretStr(key)})

    async def scope(self, guild_id: int | None) -> Scope:
        if guild_id is None:
            return Scope(GuildConfig(), self.board.catalogue, RoutingOverrides())
        config = await self.store.guild_config(guild_id)
        extra: dict[str, ModelSpec] = {row.name: self._unsealed(row) for row in await self.store.list_models(guild_id)}
        catalogue = self.board.catalogue.with_models(extra)
        memory = await self.corrections.memory(guild_id) if self.corrections is not None else None
        return Scope(config, catalogue, config.routing_overrides(catalogue), memory)

    def policy(self, scope: Scope | None = None) -> RoutingPolicy:
        """The routing policy, with ``scope``'s overrides applied when given."""
        policy = self.board.router.policy
        return policy if scope is None else scope.overrides.apply(policy)

    def tier_model(self, policy: RoutingPolicy, tier: Tier) -> str:
        """The model that serves ``tier`` under ``policy`` (a stand-in where the start-up probe chose one)."""
        return self.board.resolve(policy.models[tier])

    def validate(self, prompt: str, attachments: Sequence[Attachment], config: GuildConfig) -> Request:
        text = prompt.strip()
        if not text and not attachments:
            raise UserError("Your prompt is empty: tell me what you need.")
        limit = min(config.max_prompt_chars, self.settings.max_prompt_chars)
        if len(text) > limit:
            raise UserError(f"Your prompt is {len(text):,} characters; the limit here is {limit:,}. Shorten it.")
        if len(attachments) > self.settings.max_attachments:
            raise UserError(f"At most {self.settings.max_attachments} attachments per request.")
        for a in attachments:
            if a.size is not None and a.size > self.settings.max_attachment_bytes:
                limit_text = human_size(self.settings.max_attachment_bytes)
                raise UserError(
                    f"`{a.filename}` is too large ({human_size(a.size)}); attachments may be at most {limit_text}."
                )
            if not a.content_type.startswith(ALLOWED_CONTENT_TYPES):
                raise UserError(
                    f"`{a.filename}` has an unsupported type ({a.content_type or 'unknown'}): "
                    "send images, audio, video, text, JSON or PDF."
                )
            # Kinds the reader can't read (a PDF, a TIFF) are refused here too, before any download.
            why = files_in.refusal(a, max_bytes=self.settings.max_attachment_bytes)
            if why is not None:
                raise UserError(why)
        return Request(text=text, attachments=tuple(attachments))

    async def read_files(self, request: Request) -> Files:
        """Download and read the request's files (after every file's checks passed); UserError when one can't be."""
        if not request.attachments:
            return Files()
        try:
            return await files_in.read_files(request.attachments, max_bytes=self.settings.max_attachment_bytes)
        except files_in.AttachmentRefused as exc:
            raise UserError(str(exc)) from None

    def plan_media(
        self, decision: RouteDecision, request: Request, files: Files, scope: Scope, *, keep_tier: Tier | None = None
    ) -> MediaPlan:
        """Images to a model that sees them, or the text alone on its own route with a note (tasks/multimodal)."""
        return plan_media(
            decision,
            request,
            files,
            catalogue=scope.catalogue,
            reroute=lambda r, task: self.route(r, scope, task=task, keep_tier=keep_tier),
            resolve=self.board.resolve,
        )

    def system_prompt(self, scope: Scope, channel_id: int | None) -> str:
        custom = scope.config.system_prompt_for(channel_id) if channel_id else None
        return custom or DEFAULT_SYSTEM_PROMPT

    def route(
        self,
        request: Request,
        scope: Scope,
        *,
        task: TaskId | None = None,
        keep_tier: Tier | None = None,
        prefer_large: bool = False,
    ) -> RouteDecision:
        decision = self.board.route(
            request, task=task, overrides=scope.overrides, catalogue=scope.catalogue, memory=scope.memory
        )
        if keep_tier is Tier.LARGE and decision.tier is Tier.SMALL:
            # A conversation keeps its tier unless a new message clearly needs the large one.
            model = self.tier_model(self.policy(scope), Tier.LARGE)
            decision = replace(
                decision,
                tier=Tier.LARGE,
                model=model,
                reason=decision.reason + "; conversation stays on the large tier",
            )
        if prefer_large and decision.tier is Tier.SMALL:
            model = self.tier_model(self.policy(scope), Tier.LARGE)
            reason = decision.reason + "; the user asked for the larger model"
            decision = replace(decision, tier=Tier.LARGE, model=model, escalated=True, reason=reason)
        return decision

    async def start(
        self,
        decision: RouteDecision,
        scope: Scope,
        *,
        system_prompt: str | None = None,
        history: Sequence[ChatMessage],
        prompt: str,
        guild_id: int | None = None,
        can_read: CanRead | None = None,
        images: Sequence[ImagePart] = (),
        notice: str | None = None,
        asker: RequestContext | None = None,
    ) -> Prepared:
        """Build the messages and settings through the routed task's pipeline (history trimmed to the model's
        context, the framing and the new prompt kept) and the answer.

        ``system_prompt`` is the channel's own system prompt, if any: chat takes it as its persona, the other
        tasks put their instructions after it. The server's framing for the task (``/tasks``) applies.
        ``images`` go on the request's message (for a model that sees them: :meth:`plan_media`); ``notice`` is
        said instead of running a model. ``asker`` (who asked, where) binds the tools that need it (reminders,
        polls) and their Confirm prompt to this request.
        """
        pipeline = pipeline_for(decision.task)
        framing = Framing.from_stored(scope.config.framing_for(decision.task))
        persona = None if system_prompt == DEFAULT_SYSTEM_PROMPT else system_prompt
        backend = await self.board.backend(decision.model, scope.catalogue, start=False)
        max_new = min(self.settings.max_new_tokens, scope.catalogue.get(decision.model).max_new_tokens)
        if decision.task == "tool_use" and notice is None and not images and self.tools is not None:
            toolbox = self.tools.toolbox(guild_id, scope.config.disabled_tools, asker)
            if len(toolbox):  # every tool disabled here: the task's honest notice below
                kept, trimmed = list(history), 0
                if history:  # the tools' descriptions take context too
                    fixed = backend.count_tokens(prompt) + sum(
                        backend.count_tokens(t.description) + backend.count_tokens(str(t.parameters)) for t in toolbox
                    )
                    budget = backend.context_window - max_new - fixed
                    kept, trimmed = recent_history(kept, budget=budget, count=backend.count_tokens)
                tool_answer = ToolAnswer(
                    self.board,
                    decision,
                    prompt,
                    toolbox,
                    catalogue=scope.catalogue,
                    overrides=scope.overrides,
                    history=kept,
                    framing=framing,
                    persona=persona,
                    max_new_tokens=max_new,
                )
                return Prepared(decision, tool_answer, scope, trimmed, pipeline=pipeline, prompt=prompt)
        shaped = pipeline.prepare(prompt, framing=framing, max_new_tokens=max_new, persona=persona)
        trimmed = 0
        if history and shaped.notice is None and pipeline.uses_history:
            fixed = sum(backend.count_tokens(m.content) for m in shaped.messages)
            budget = backend.context_window - shaped.params.max_new_tokens - fixed
            kept, trimmed = recent_history(list(history), budget=budget, count=backend.count_tokens)
            shaped = pipeline.prepare(prompt, history=kept, framing=framing, max_new_tokens=max_new, persona=persona)
        sources = ""
        if decision.task == "rag" and self.knowledge is not None and guild_id is not None:
            shaped, sources = await self._from_knowledge(guild_id, prompt, can_read, max_new, shaped)
        if notice is not None:
            shaped = TaskPrepared([], shaped.params, notice=notice)
        answer = self.board.answer(
            decision,
            files_in.with_images(shaped.messages, images),
            params=shaped.params,
            overrides=scope.overrides,
            catalogue=scope.catalogue,
            # The other tier's model can't see the images: an answer from it would be a guess. Unless the routed
            # model can't see them either: both then read the image-to-text model's descriptions instead.
            allow_fallback=not images or not sees_images(scope.catalogue.get(decision.model)),
        )
        return Prepared(
            decision, answer, scope, trimmed, pipeline=pipeline, prompt=prompt, notice=shaped.notice, sources=sources
        )

    async def _from_knowledge(
        self, guild_id: int, prompt: str, can_read: CanRead | None, max_new: int, shaped: TaskPrepared
    ) -> tuple[TaskPrepared, str]:
        from inference.knowledge.service import ANSWER_TOKENS, NOTHING_FOUND, citation_lines
        from inference.tasks.pending import RagPipeline

        assert self.knowledge is not None
        if not await self.knowledge.sources(guild_id):
            return shaped, ""  # nothing indexed: the rag task's own notice
        hits = await self.knowledge.search(guild_id, prompt, can_read=can_read or (lambda _channel: False))
        if not hits:
            return TaskPrepared([], shaped.params, notice=NOTHING_FOUND), ""
        quoted = [(h.source, h.chunk.position, h.chunk.text) for h in hits]
        rag = RagPipeline().prepare_sources(prompt, quoted, max_new_tokens=min(max_new, ANSWER_TOKENS))
        return rag, citation_lines(hits)

    async def record(self, guild_id: int | None, user_id: int, prepared: Prepared, started: float, ok: bool) -> None:
        answer = prepared.answer
        elapsed = time.perf_counter() - started
        label = CUSTOM_MODEL if answer.model in prepared.scope.catalogue.untrusted else None
        outcome = "ok" if ok else "error"
        self.metrics.observe(prepared.decision.task, prepared.decision.tier, answer, elapsed, outcome, model=label)
        if guild_id is None:
            return
        await self.store.record_request(
            guild_id=guild_id,
            user_id=user_id,
            task=prepared.decision.task,
            tier=answer.tier,
            model=answer.model,
            latency_ms=elapsed * 1000,
            ok=ok,
            fallback=answer.fell_back,
        )


def assistant_text(content: str) -> str:
    """The answer in one of the bot's messages, as the model wrote it: without the footer line, an error
    note, the streaming cursor or the placeholder ("" when nothing is left)."""
    text = _TRAILER.sub("", content.removesuffix(_CURSOR)).removesuffix(_CURSOR).strip()
    return "" if text == PLACEHOLDER else text


def trim_history(
    system: ChatMessage,
    history: list[ChatMessage],
    prompt: ChatMessage,
    *,
    budget: int,
    count: Callable[[str], int],
) -> tuple[list[ChatMessage], int]:
    """Drop the oldest turns until system + history + prompt fit ``budget`` tokens.

    Returns the messages and how many history messages were dropped. The system prompt and the new
    prompt are always kept.
    """
    used = count(system.content) + count(prompt.content)
    kept, dropped = recent_history(history, budget=budget - used, count=count)
    return [system, *kept, prompt], dropped


def recent_history(
    history: list[ChatMessage], *, budget: int, count: Callable[[str], int]
) -> tuple[list[ChatMessage], int]:
    """The newest turns of ``history`` that fit ``budget`` tokens, oldest first, and how many were dropped."""
    used = 0
    kept: list[ChatMessage] = []
    for message in reversed(history):
        cost = count(message.content)
        if used + cost > budget:
            break
        kept.append(message)
        used += cost
    kept.reverse()
    return kept, len(history) - len(kept)
