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
from dataclasses import dataclass

import discord

from bot.answering import Prepared, UserError
from bot.replies import StreamingReply, footer
from inference.errors import BackendOverloaded, BackendTimeout, BadRequest, InferenceError, QueueFull
from inference.types import Attachment, ChatMessage, TaskId, Tier

log = logging.getLogger(__name__)

Edit = Callable[[str], Awaitable[None]]


@dataclass
class Target:
    edit: Edit
    send: Callable[[str], Awaitable[Edit]]
    #: Show a short message only to the requester where the surface allows it.
    refuse: Callable[[str], Awaitable[None]]


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


def friendly(exc: InferenceError) -> str:
    if isinstance(exc, QueueFull):
        return "The model is busy right now; try again in a minute."
    if isinstance(exc, BackendOverloaded):
        return "The model is overloaded right now; try again in a minute."
    if isinstance(exc, BackendTimeout):
        return "The model took too long to answer."
    if isinstance(exc, BadRequest):
        return "The model refused this request."
    return "The model is unavailable right now."


@dataclass
class Outcome:
    prepared: Prepared
    text: str
    ok: bool


async def deliver(bot: object, target: Target, ask: Ask, *, clock: Callable[[], float] | None = None) -> Outcome | None:
    """Run ``ask`` and stream it into ``target``. Never raises for model or input errors.

    Returns None when the request was refused before any model ran.
    """
    from bot.app import SwitchboardBot

    assert isinstance(bot, SwitchboardBot)
    service = bot.answers
    clock = clock or bot.clock
    try:
        scope = await service.scope(ask.guild_id)
        allowed = scope.config.allowed_channels
        if allowed and ask.channel_id not in allowed:
            where = ", ".join(f"<#{c}>" for c in allowed)
            await target.refuse(f"I only answer in {where} on this server.")
            return None
        # Bad input is refused before it costs the user a request from their quota.
        request = service.validate(ask.prompt, ask.attachments, scope.config)
        # Direct messages too (key (None, user), default limits): they would otherwise be unlimited.
        verdict = bot.limiter.check(
            (ask.guild_id, ask.user_id), scope.config.rate_limit_per_minute, scope.config.rate_limit_burst
        )
        if not verdict.allowed:
            wait = max(1, math.ceil(verdict.retry_after))
            await target.refuse(f"You're sending requests too fast; try again in {wait} s.")
            return None
        decision = service.route(request, scope, task=ask.task, keep_tier=ask.keep_tier)
        prepared = await service.start(
            decision,
            scope,
            system_prompt=service.system_prompt(scope, ask.channel_id),
            history=ask.history,
            prompt=request.text or "(see attachment)",
        )
    except UserError as exc:
        await target.refuse(str(exc))
        return None

    answer = prepared.answer
    reply = StreamingReply(target.edit, target.send, clock=clock)
    started = time.perf_counter()
    shown_from = clock()
    ok = False
    parts: list[str] = []
    try:
        async for piece in answer:
            parts.append(piece)
            await reply.push(piece)
        ok = True
    except InferenceError as exc:
        log.warning("request %s failed: %s: %s", answer.request_id, type(exc).__name__, exc)
        await reply.fail(f"⚠️ {friendly(exc)} (request `{answer.request_id}`)")
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
        notes = list(answer.notes)
        if prepared.trimmed:
            notes.append(f"trimmed {prepared.trimmed} old message{'s' * (prepared.trimmed > 1)} to fit the context")
        await reply.finish(
            footer(
                decision.task,
                answer.tier.value,
                answer.model,
                clock() - shown_from,
                "; ".join(notes) or None,
            )
        )
    return Outcome(prepared, "".join(parts), ok)
