"""Agents on Discord, without the gateway: what ``/agent`` runs, how its steps read, and recurring goals.

- :class:`AgentService` runs a goal for a member of a server (:func:`inference.agents.run_agent`) with that
  server's tools (``/tools`` choices applied) and, when the server has a knowledge base, ``search_docs`` over it
  with the member's permissions now (``bot.knowledge.member_can_read``, decided by the cog).
- :func:`step_text` and :func:`final_text`: the messages a run posts.
- :func:`parse_schedule`: the few schedules a recurring goal takes, predictable on purpose (all times UTC):
  ``hourly``, ``daily HH:MM``, ``every N minutes`` / ``every N hours`` (at least every
  :data:`MIN_INTERVAL_S` seconds).
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.answering import AnswerService, Scope, UserError
from bot.replies import footer
from bot.tools import tool_lines
from inference.agents import STOP_WORDS, AgentLimits, AgentRun, Passage, Step, run_agent
from inference.types import Request, RouteDecision

if TYPE_CHECKING:
    import asyncio

    from bot.storage import Store
    from bot.tools import ToolService
    from inference.knowledge.base import CanRead
    from inference.knowledge.service import KnowledgeBase
    from inference.tools.base import Confirm

#: The scheduled jobs' kind for recurring goals.
AGENT_GOAL = "agent_goal"
#: The most often a recurring goal may run.
MIN_INTERVAL_S = 15 * 60
#: Most recurring goals one member may keep on one server.
MAX_GOALS_PER_USER = 10
#: Most characters of the model's words shown in one step line.
_STEP_WORDS = 300

_EVERY = re.compile(r"every\s+(?P<n>\d{1,4})\s*(?P<unit>m|min|mins|minute|minutes|h|hr|hrs|hour|hours)", re.I)
_DAILY = re.compile(r"(?:daily|every\s+day)(?:\s+at)?\s+(?P<h>\d{1,2}):(?P<m>\d{2})", re.I)
#: The times of day that "every morning" and its kin stand for (UTC, like every schedule here).
NAMED_TIMES = {"morning": (8, 0), "afternoon": (14, 0), "evening": (18, 0), "night": (21, 0), "day": (9, 0)}
_NAMED = re.compile(r"(?:every\s+(?P<name>morning|afternoon|evening|night|day)|daily)", re.I)
#: A goal that opens with its schedule: "every morning, post the top three questions".
_LEADING = re.compile(
    r"(?P<when>(?:every|daily)\b.*?)(?:,|:|;|\s+-\s+|\s+)(?P<rest>(?:post|send|check|summari[sz]e|list|remind|"
    r"look|find|tell|give|share|make|collect|gather|count|write|run|report|watch|review)\b.*)$",
    re.I | re.S,
)
SCHEDULE_HELP = (
    "Use `hourly`, `daily HH:MM` (UTC), `every morning` / `afternoon` / `evening` / `night` (08:00, 14:00, 18:00, "
    "21:00 UTC) or `every N minutes` / `every N hours` (at least every 15 minutes)."
)


@dataclass(frozen=True)
class Schedule:
    """When a recurring goal runs: its first run and the seconds between runs; ``text`` as the user wrote it."""

    text: str
    first: dt.datetime
    interval_s: int


def parse_schedule(text: str, now: dt.datetime) -> Schedule:
    """The schedule in ``text`` from ``now`` (UTC); UserError with the accepted forms when it isn't one."""
    spoken = " ".join(text.lower().split())
    now = now.astimezone(dt.UTC)
    if spoken in {"hourly", "every hour"}:
        return Schedule("hourly", now + dt.timedelta(hours=1), 3600)
    if (named := _NAMED.fullmatch(spoken)) is not None:
        spoken = "daily {:02d}:{:02d}".format(*NAMED_TIMES[named["name"] or "day"])
    if (daily := _DAILY.fullmatch(spoken)) is not None:
        hour, minute = int(daily["h"]), int(daily["m"])
        if hour > 23 or minute > 59:
            raise UserError(f"`{text}` is not a time of day. {SCHEDULE_HELP}")
        first = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if first <= now:
            first += dt.timedelta(days=1)
        return Schedule(f"daily {hour:02d}:{minute:02d} UTC", first, 86400)
    if (every := _EVERY.fullmatch(spoken)) is not None:
        n = int(every["n"])
        seconds = n * (3600 if every["unit"].startswith("h") else 60)
        if seconds < MIN_INTERVAL_S:
            raise UserError(f"`{text}` is too often: a recurring goal runs at most every 15 minutes.")
        if seconds > 7 * 86400:
            raise UserError(f"`{text}` is too far apart: at most every 7 days (168 hours).")
        unit = "hour" if every["unit"].startswith("h") else "minute"
        return Schedule(f"every {n} {unit}{'s' * (n != 1)}", now + dt.timedelta(seconds=seconds), seconds)
    raise UserError(f"I can't read the schedule `{text}`. {SCHEDULE_HELP}")


def split_recurring(goal: str) -> tuple[str, str] | None:
    """``(schedule, goal)`` when ``goal`` opens with a schedule this module reads ("every morning post the top
    three questions" -> ("every morning", "post the top three questions")); None for a one-off goal."""
    match = _LEADING.fullmatch(" ".join(goal.split()))
    if match is None:
        return None
    when = match["when"].strip(" ,:;-")
    spoken = " ".join(when.lower().split())
    forms = (_NAMED, _DAILY, _EVERY)
    if spoken not in {"hourly", "every hour"} and not any(form.fullmatch(spoken) for form in forms):
        return None  # "every time I ask, tell me a joke" is not a schedule
    # Read, not yet checked: "every 5 minutes" is recurring, and scheduling it says why it is too often.
    return when, match["rest"].strip()


def step_text(step: Step) -> str:
    """A step as a message: ``**Step 2** · the model's words`` and one line per tool call."""
    head = f"**Step {step.number}**"
    words = " ".join(step.text.split())
    if words and not step.final:
        head += " · " + (words if len(words) <= _STEP_WORDS else words[: _STEP_WORDS - 1] + "…")
    if step.final:
        head += " · final answer"
    lines = [head]
    if step.results:
        lines += [line.removeprefix("-# ") for line in tool_lines(step.results).split("\n")]
    return "\n".join(lines)


def final_text(run: AgentRun, seconds: float, *, fallback: RouteDecision) -> str:
    """The answer and its route line: ``-# agent · large · model · 3.1s · 3 steps`` (and why it stopped)."""
    answer = run.answer
    tier, model = (answer.tier.value, answer.model) if answer is not None else (fallback.tier.value, fallback.model)
    count = len(run.steps)
    notes = [f"{count} step{'s' * (count != 1)}", f"{run.tokens} tokens", *dict.fromkeys(run.notes)]
    if answer is not None:
        notes += [n for n in answer.notes if n not in notes]
    return f"{run.text}\n{footer('agent', tier, model, seconds, '; '.join(notes))}"


def unconfirmed(run: AgentRun) -> list[str]:
    """The tools a run asked for that act and were not run for want of a confirmation."""
    return [r.call.name for r in run.results if r.unconfirmed]


class AgentService:
    """Runs goals with a server's tools and knowledge base; ``limits`` bound every run (tests lower them)."""

    def __init__(
        self,
        answers: AnswerService,
        store: Store,
        tools: ToolService,
        knowledge: KnowledgeBase | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        limits: AgentLimits | None = None,
    ) -> None:
        self.answers = answers
        self.store = store
        #: The servers' tools (``/tools`` choices applied), as tool_use requests get them.
        self.tools = tools
        self.knowledge = knowledge
        #: Monotonic seconds for the wall-time limit (the bot's clock: tests pass a manual one).
        self.clock = clock
        self.limits = limits or AgentLimits()

    def route(self, goal: str, scope: Scope) -> RouteDecision:
        """The model for an agent run: the ``agent`` task's route here (large by default)."""
        return self.answers.route(Request(text=goal), scope, task="agent")

    async def search_for(
        self, guild_id: int, can_read: CanRead
    ) -> Callable[[str], Awaitable[Sequence[Passage]]] | None:
        """``search_docs`` over the server's knowledge base as this member may read it; None without one."""
        kb = self.knowledge
        if kb is None or not await kb.sources(guild_id):
            return None

        async def search(query: str) -> list[Passage]:
            hits = await kb.search(guild_id, query, can_read=can_read)
            return [Passage(h.source, h.chunk.text, h.chunk.position) for h in hits]

        return search

    async def run(
        self,
        goal: str,
        scope: Scope,
        decision: RouteDecision,
        *,
        guild_id: int,
        can_read: CanRead,
        on_step: Callable[[Step], Awaitable[None]] | None = None,
        stop: asyncio.Event | None = None,
        confirm: Confirm | None = None,
    ) -> AgentRun:
        toolbox = self.tools.toolbox(guild_id, scope.config.disabled_tools)
        return await run_agent(
            self.answers.board,
            decision,
            goal,
            toolbox,
            limits=self.limits,
            on_step=on_step,
            stop=stop,
            confirm=confirm,
            knowledge=await self.search_for(guild_id, can_read),
            clock=self.clock,
            overrides=scope.overrides,
            catalogue=scope.catalogue,
        )

    async def record(
        self, guild_id: int, user_id: int, run: AgentRun | None, decision: RouteDecision, ms: float
    ) -> None:
        """Count the run in ``/stats`` like any request (``run`` None: the model failed)."""
        answer = run.answer if run is not None else None
        await self.store.record_request(
            guild_id=guild_id,
            user_id=user_id,
            task="agent",
            tier=answer.tier if answer is not None else decision.tier,
            model=answer.model if answer is not None else decision.model,
            latency_ms=ms,
            ok=run is not None,
            fallback=answer.fell_back if answer is not None else False,
        )


__all__ = [
    "AGENT_GOAL",
    "MAX_GOALS_PER_USER",
    "MIN_INTERVAL_S",
    "STOP_WORDS",
    "AgentService",
    "Schedule",
    "final_text",
    "parse_schedule",
    "step_text",
    "unconfirmed",
]
