"""Deliver one answer into Discord: rate limit, validate, route, stream, footer, record.

The Discord side is reduced to a :class:`Target` (edit the first message, send a follow-up, refuse
privately), so /ask, mentions and thread conversations share one code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

import discord

from bot.answering import AnswerService, Prepared, Scope, UserError
from bot.ratelimit import Limiter
from bot.replies import StreamingReply, Upload, footer
from bot.settings import Settings
from bot.storage import GuildConfig
from bot.tools import RequestContext, ToolAnswer, tool_lines
from inference.errors import InferenceError
from inference.knowledge.base import CanRead
from inference.tasks.base import Rendered
from inference.types import Attachment, ChatMessage, Request, TaskId, Tier

log = logging.getLogger(__name__)

Edit = Callable[[str], Awaitable[None]]


@dataclass
class Target:
    edit: Edit
    send: Callable[[str], Awaitable[Edit]]
    #: Show a short message only to the requester where the surface allows it.
    refuse: Callable[[str], Awaitable[None]]
    #: Post a follow-up with a file: an answer longer than the message cap goes along as one.
    upload: Upload | None = None
    #: Put buttons (a view) on the answer's first message, or take them off (None): where the surface has them.
    attach_view: Callable[[discord.ui.View | None], Awaitable[None]] | None = None


@dataclass(frozen=True)
class Ask:
    guild_id: int | None
    channel_id: int | None
    user_id: int
    prompt: str
    attachments: Sequence[Attachment] = ()
    task: TaskId | None = None
    history: Sequence[ChatMessage] = ()
    keep_tier: Tier | None = None
    #: The asker's role ids on the server (empty in DMs): an exempt role skips the rate limit.
    role_ids: Sequence[int] = ()
    #: Whether the asker may read a channel now (Discord's permissions, bot.knowledge.member_can_read): a ``rag``
    #: answer from the server's knowledge base uses channel text only where this says yes (None: no channel text).
    can_read: CanRead | None = None
    #: The user asked for the larger model ("Ask the larger model"): a small-tier route goes to the large tier.
    prefer_large: bool = False
    #: Only the asker sees the answer (``/ask private``): nothing of it is kept where others could read it.
    private: bool = False
    #: Where the answer appears when that is not ``channel_id`` (a thread, whose permissions and settings are its
    #: parent channel's): a reminder or a Confirm prompt goes there, beside the answer.
    reply_channel_id: int | None = None


#: What a direct message gets when the operator turned DMs off (SWITCHBOARD_ALLOW_DMS=false).
DMS_OFF = "I don't answer direct messages here; ask me in a server instead."


@dataclass
class Outcome:
    prepared: Prepared
    text: str
    ok: bool


def wrong_channel_note(config: GuildConfig) -> str:
    """What a request in a channel the server did not allow gets (see :meth:`GuildConfig.channel_allowed`)."""
    where = ", ".join(f"<#{c}>" for c in config.allowed_channels)
    return f"I only answer in {where} on this server."


class Delivery:
    """Answers an :class:`Ask` into a :class:`Target`: the one path for /ask, mentions and conversations."""

    def __init__(
        self, answers: AnswerService, limiter: Limiter, settings: Settings, clock: Callable[[], float]
    ) -> None:
        self.answers = answers
        self.limiter = limiter
        self.settings = settings
        #: Monotonic clock for streaming edits and the footer's time.
        self.clock = clock
        #: Buttons under each answer ("Ask the larger model", "Wrong task?"): set by the cog that handles them
        #: (cogs/feedback.py); None shows none. Given the ask and what answered it; None for no buttons.
        self.feedback: Callable[[Ask, Prepared], discord.ui.View | None] | None = None

    async def deliver(self, target: Target, ask: Ask, *, clock: Callable[[], float] | None = None) -> Outcome | None:
        """Run ``ask`` and stream it into ``target``. Never raises for model or input errors.

        Returns None when the request was refused before any model ran.
        """
        service = self.answers
        clock = clock or self.clock
        admitted = await self.admit(target, ask, [ask.prompt], attachments=ask.attachments)
        if admitted is None:
            return None
        scope, (request,) = admitted
        try:
            # Downloaded only now: every file's type and size passed the checks in admit().
            files = await service.read_files(request)
            # The files' text counts as context: a long one can take the request to the large tier.
            request = replace(request, context_tokens=request.context_tokens + files.tokens)
            decision = service.route(
                request, scope, task=ask.task, keep_tier=ask.keep_tier, prefer_large=ask.prefer_large
            )
            plan = service.plan_media(decision, request, files, scope, keep_tier=ask.keep_tier)
            prepared = await service.start(
                plan.decision,
                scope,
                system_prompt=service.system_prompt(scope, ask.channel_id),
                history=ask.history,
                prompt=files.prompt(request.text) or "(see attachment)",
                guild_id=ask.guild_id,
                can_read=ask.can_read,
                images=plan.images,
                notice=plan.notice,
                # The tools bound to this request (remind, poll) and their Confirm buttons: who asked, where.
                asker=RequestContext(
                    ask.guild_id, ask.reply_channel_id or ask.channel_id, ask.user_id, private=ask.private
                ),
            )
            prepared.notes = (*files.notes, *plan.notes)
        except UserError as exc:
            service.metrics.refusals.labels("invalid_request").inc()
            await target.refuse(str(exc))
            return None
        return await self._stream(target, ask, prepared, clock)

    async def admit(
        self, target: Target, ask: Ask, texts: Sequence[str], *, attachments: Sequence[Attachment] = ()
    ) -> tuple[Scope, list[Request]] | None:
        """The checks every request passes before any model runs: DMs allowed, the channel allowed, the input
        valid (each of ``texts``), the rate limit. None (after telling the user privately) when refused."""
        service = self.answers
        reason = "dms_off"  # what /metrics counts the refusal as
        try:
            if ask.guild_id is None and not self.settings.allow_dms:
                raise UserError(DMS_OFF)
            scope = await service.scope(ask.guild_id)
            config = scope.config
            reason = "channel_not_allowed"
            if not config.channel_allowed(ask.channel_id):
                raise UserError(wrong_channel_note(config))
            # Bad input is refused before it costs the user a request from their quota.
            reason = "invalid_request"
            requests = [service.validate(text, attachments, config) for text in texts]
            # Direct messages too (key (None, user), default limits): they would otherwise be unlimited.
            # Roles an admin exempted (moderators, a support team) are never limited and use no bucket.
            key, rate, burst = (ask.guild_id, ask.user_id), config.rate_limit_per_minute, config.rate_limit_burst
            exempt = config.rate_limit_exempt(ask.role_ids)
            verdict = None if exempt else await self.limiter.acquire(key, rate, burst)
            if verdict is not None and not verdict.allowed:
                reason = "rate_limited"
                wait = max(1, math.ceil(verdict.retry_after))
                raise UserError(f"You're sending requests too fast; try again in {wait} s.")
        except UserError as exc:
            service.metrics.refusals.labels(reason).inc()
            await target.refuse(str(exc))
            return None
        return scope, requests

    async def _stream(self, target: Target, ask: Ask, prepared: Prepared, clock: Callable[[], float]) -> Outcome:
        service = self.answers
        decision = prepared.decision
        answer = prepared.answer
        reply = StreamingReply(
            target.edit, target.send, clock=clock, max_messages=self.settings.max_reply_messages, upload=target.upload
        )
        if prepared.notice is not None:
            return await self._notice(reply, prepared, prepared.notice)
        pipeline = prepared.pipeline
        # A pipeline whose post-processing reshapes the text (code fences, a bare label) shows it once written.
        live = pipeline is None or pipeline.streams
        started = time.perf_counter()
        shown_from = clock()
        ok = False
        parts: list[str] = []
        rendered = Rendered("")
        try:
            async for piece in answer:
                parts.append(piece)
                if live:
                    await reply.push(piece)
            rendered = pipeline.finish("".join(parts), prompt=prepared.prompt) if pipeline else Rendered("".join(parts))
            if prepared.sources:  # a rag answer's citations
                rendered = Rendered(rendered.text + prepared.sources, rendered.files)
                if live:
                    await reply.push(prepared.sources)
            if not live:
                await reply.push(rendered.text)
            if isinstance(answer, ToolAnswer) and answer.results:  # which tools ran, before the footer
                await reply.push("\n" + tool_lines(answer.results))
            ok = True
        except InferenceError as exc:
            log.warning("request %s failed: %s: %s", answer.request_id, type(exc).__name__, exc)
            await _settle(reply.fail(f"⚠️ {exc.user_text} (request `{answer.request_id}`)"), answer.request_id)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(reply.fail("⚠️ Cut off: the bot is shutting down."))
            raise
        except (discord.Forbidden, discord.NotFound) as exc:
            # The message or channel is gone or closed to us: writing again would fail the same way.
            log.warning("request %s: reply not deliverable: %s", answer.request_id, exc)
        except Exception:
            log.exception("request %s failed unexpectedly", answer.request_id)
            with contextlib.suppress(Exception):
                await reply.fail(f"⚠️ Something went wrong on my side (request `{answer.request_id}`).")
        finally:
            try:
                await service.record(ask.guild_id, ask.user_id, prepared, started, ok)
            except Exception:
                log.exception("recording request %s failed", answer.request_id)
        if ok:
            notes = [*prepared.notes, *answer.notes]
            if prepared.trimmed:
                notes.append(f"trimmed {prepared.trimmed} old message{'s' * (prepared.trimmed > 1)} to fit the context")
            final = footer(
                decision.task, answer.tier.value, answer.model, clock() - shown_from, "; ".join(notes) or None
            )
            await _settle(reply.finish(final), answer.request_id)
            await self._attach(target, rendered, answer.request_id)
            await self._buttons(target, ask, prepared)
        return Outcome(prepared, rendered.text if ok else "".join(parts), ok)

    async def _notice(self, reply: StreamingReply, prepared: Prepared, notice: str) -> Outcome:
        """A task that cannot be served yet: say so, honestly, with no model run (nor counted as one)."""
        decision = prepared.decision
        final = footer(decision.task, decision.tier.value, decision.model, 0.0, "no model was run")
        await reply.push(notice)
        await _settle(reply.finish(final), prepared.answer.request_id)
        return Outcome(prepared, notice, ok=False)

    async def _buttons(self, target: Target, ask: Ask, prepared: Prepared) -> None:
        """The feedback buttons under a delivered answer, where the surface and the server allow them."""
        if target.attach_view is None or self.feedback is None:
            return
        view = self.feedback(ask, prepared)
        if view is None:
            return
        try:
            await target.attach_view(view)
        except (discord.Forbidden, discord.NotFound, discord.HTTPException) as exc:
            log.warning("request %s: buttons not attached: %s", prepared.answer.request_id, exc)

    @staticmethod
    async def _attach(target: Target, rendered: Rendered, request_id: str) -> None:
        """The answer's files (a long code answer as ``answer.py``) after its last message."""
        if target.upload is None:
            return
        for name, data in rendered.files:
            try:
                await target.upload(f"📎 {name}", name, data)
            except (discord.Forbidden, discord.NotFound, discord.HTTPException) as exc:
                log.warning("request %s: file %s not delivered: %s", request_id, name, exc)


async def _settle(closing: Awaitable[None], request_id: str) -> None:
    """Write the reply's last text. A streaming write still running may fail here: a reply that is gone or
    closed to us is only logged (writing again would fail the same way)."""
    try:
        await closing
    except (discord.Forbidden, discord.NotFound) as exc:
        log.warning("request %s: reply not deliverable: %s", request_id, exc)
