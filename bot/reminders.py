"""Reminders and native polls: the Discord-bound tools ``remind`` and ``poll``, and the reminder job.

- :class:`Remind` stores a ``reminder`` job (bot/scheduler.py) in the channel the request came from. Reminding
  oneself runs at once; reminding someone else speaks for the bot to them, so it needs the asker's Confirm
  (:meth:`Remind.needs_confirmation`).
- :class:`MakePoll` creates a real Discord poll in that channel, always after the asker's Confirm (it speaks for
  the bot to everyone there).
- :func:`reminder_text` and :func:`reminder_mentions`: what a due reminder posts, pinging only the one reminded.

The tools are built per request (bot/tools.py :class:`~bot.tools.ToolService`) with what they need as plain
callables, so nothing here reaches into the bot or the gateway.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import discord

from bot.storage import Job, Store
from inference.tools.base import Tool, ToolError

REMIND = "remind"
POLL = "poll"
REMINDER_KIND = "reminder"
#: Furthest ahead a reminder may be set.
MAX_AHEAD = timedelta(days=366)
#: Longest reminder text and poll parts (Discord: a poll question 300 characters, an answer 55).
MAX_REMINDER_CHARS = 500
MAX_QUESTION_CHARS, MAX_ANSWER_CHARS = 300, 55
MAX_POLL_HOURS = 768  # 32 days, Discord's limit
#: Most reminders one member may have pending on one server (or in direct messages).
MAX_PENDING_REMINDERS = 25
#: A reminder posted more than this after it was due says when it was due (the bot was down).
LATE_AFTER = timedelta(minutes=1)
#: Whether a user (by id) is a member who can view the request's channel.
CanView = Callable[[int], Awaitable[bool]]

_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
    "w": 604800,
    "week": 604800,
}
_PART = re.compile(r"(\d+(?:\.\d+)?|(?<![a-z])(?:an?|one))\s*([a-z]+?)s?(?![a-z])")
_USER = re.compile(r"^(?:<@!?(\d{15,20})>|(\d{15,20}))$")


def parse_when(text: str, now: datetime) -> datetime:
    """When ``text`` means, as aware UTC: "in 20 minutes", "2 hours", "1h30m", "tomorrow", an ISO date-time
    (without a zone: UTC) or "HH:MM" (UTC; tomorrow if already past). ToolError saying what is accepted."""
    raw = text.strip().lower()
    now = now.astimezone(UTC)
    if raw == "tomorrow":
        return now + timedelta(days=1)
    relative = raw.removeprefix("in ").replace(" and ", " ").replace(",", " ").strip()
    parts = _PART.findall(relative)
    if parts and _PART.sub("", relative).strip() == "":
        seconds = 0.0
        for amount, unit in parts:
            if unit not in _UNITS:
                raise ToolError(f"unknown time unit {unit!r}; use minutes, hours, days or weeks")
            seconds += (1.0 if amount in ("a", "an", "one") else float(amount)) * _UNITS[unit]
        if seconds > 2 * MAX_AHEAD.total_seconds():  # before timedelta, which overflows on absurd amounts
            raise ToolError(f"a reminder can be at most {MAX_AHEAD.days} days ahead")
        return _checked(now + timedelta(seconds=seconds), now)
    try:
        clock = datetime.strptime(raw, "%H:%M")
    except ValueError:
        pass
    else:
        moment = now.replace(hour=clock.hour, minute=clock.minute, second=0, microsecond=0)
        return _checked(moment if moment > now else moment + timedelta(days=1), now)
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ToolError(
            f"can't read the time {text.strip()[:40]!r}; use 'in 20 minutes', 'in 2 hours', HH:MM (UTC) or "
            "an ISO date-time such as 2026-12-24T18:00+01:00"
        ) from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return _checked(moment, now)


def _checked(moment: datetime, now: datetime) -> datetime:
    if moment <= now:
        raise ToolError(f"{moment:%Y-%m-%d %H:%M} UTC is in the past; a reminder must be in the future")
    if moment - now > MAX_AHEAD:
        raise ToolError(f"a reminder can be at most {MAX_AHEAD.days} days ahead")
    return moment


def parse_user(text: str) -> int:
    """A user id from a mention (``<@123…>``) or the bare id."""
    match = _USER.match(text.strip())
    if match is None:
        raise ToolError(f"can't tell who {text.strip()[:40]!r} is; mention them (@name) or give their user id")
    return int(match.group(1) or match.group(2))


class Remind(Tool):
    """Store a reminder that the bot posts in this channel when due, mentioning the one to remind."""

    name = REMIND
    side_effects = True  # a stored reminder: answering again would store a second one
    description = (
        "Set a reminder: at the given time the bot posts the text in this channel and mentions the person. "
        "'when' is relative ('in 20 minutes', 'in 2 hours') or an ISO date-time; 'user' (optional) is someone "
        "else to remind, as a mention."
    )
    parameters = {  # noqa: RUF012 - a JSON Schema, read only
        "type": "object",
        "properties": {
            "when": {
                "type": "string",
                "description": "'in 20 minutes', 'in 1 day', HH:MM (UTC) or ISO date-time",
                "maxLength": 64,
            },
            "text": {
                "type": "string",
                "description": "what to remind of",
                "minLength": 1,
                "maxLength": MAX_REMINDER_CHARS,
            },
            "user": {"type": "string", "description": "someone else to remind: <@id>", "maxLength": 32},
        },
        "required": ["when", "text"],
        "additionalProperties": False,
    }
    timeout_s = 10.0
    examples = (("remind me in 20 minutes to stretch", {"when": "in 20 minutes", "text": "stretch"}),)

    def __init__(
        self,
        store: Store,
        now: Callable[[], datetime],
        *,
        guild_id: int | None,
        channel_id: int,
        user_id: int,
        can_view: CanView | None = None,
    ) -> None:
        self._store, self._now = store, now
        self.guild_id, self.channel_id, self.user_id = guild_id, channel_id, user_id
        #: None: nobody else can be reminded (no server to check them against).
        self._can_view = can_view

    def _target(self, args: dict[str, Any]) -> int:
        return parse_user(str(args["user"])) if args.get("user") else self.user_id

    def needs_confirmation(self, args: dict[str, Any]) -> bool:
        # Reminding oneself is the asker's own business; anyone else hears from the bot only if the asker confirms.
        try:
            return self._target(args) != self.user_id
        except ToolError:
            return False  # run() refuses it without acting

    def describe_call(self, args: dict[str, Any]) -> str:
        try:
            target, when = (
                f"<@{self._target(args)}>",
                discord.utils.format_dt(parse_when(str(args["when"]), self._now()), "F"),
            )
        except ToolError:
            target, when = str(args.get("user")), str(args.get("when"))
        return f"remind {target} at {when} in <#{self.channel_id}>: {discord.utils.escape_mentions(str(args['text']))}"

    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        target = self._target(args)
        text = str(args["text"]).strip()
        if not text:
            raise ToolError("the reminder needs some text")
        at = parse_when(str(args["when"]), self._now())
        if target != self.user_id and (self._can_view is None or not await self._can_view(target)):
            raise ToolError(f"<@{target}> is not a member of this server who can see this channel; I can't remind them")
        pending = await self._store.jobs(self.guild_id, kind=REMINDER_KIND, user_id=self.user_id)
        if len(pending) >= MAX_PENDING_REMINDERS:
            raise ToolError(
                f"you already have {len(pending)} pending reminders here, the most allowed; "
                "cancel one first (/remind list, /remind cancel)"
            )
        payload = {"text": text, "target_user_id": target, "set_by": self.user_id}
        job = await self._store.add_job(
            guild_id=self.guild_id,
            channel_id=self.channel_id,
            user_id=self.user_id,
            kind=REMINDER_KIND,
            payload=payload,
            run_at=at,
            interval_s=None,
        )
        # Discord shows a timestamp in each reader's own time zone.
        return {"id": job.id, "at": discord.utils.format_dt(at, "F"), "for": f"<@{target}>", "text": text}

    def summary(self, args: dict[str, Any], output: str) -> str:
        return f"Reminder set: {output}"


class MakePoll(Tool):
    """Create a native Discord poll in this channel (after the asker confirms)."""

    name = POLL
    description = (
        "Create a Discord poll in this channel: a question, 2 to 10 answers, open for 'hours' (default 24). "
        "The user confirms before it is posted."
    )
    parameters = {  # noqa: RUF012 - a JSON Schema, read only
        "type": "object",
        "properties": {
            "question": {"type": "string", "minLength": 1, "maxLength": MAX_QUESTION_CHARS},
            "answers": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_ANSWER_CHARS},
                "minItems": 2,
                "maxItems": 10,
            },
            "hours": {"type": "integer", "minimum": 1, "maximum": MAX_POLL_HOURS},
        },
        "required": ["question", "answers"],
        "additionalProperties": False,
    }
    timeout_s = 15.0
    acts = True
    examples = (
        (
            "make a poll: pizza or tacos on Friday?",
            {"question": "Pizza or tacos on Friday?", "answers": ["Pizza", "Tacos"]},
        ),
    )

    def __init__(self, channel: Callable[[], discord.abc.Messageable | None]) -> None:
        self._channel = channel

    def describe_call(self, args: dict[str, Any]) -> str:
        answers = " / ".join(str(a) for a in args.get("answers", []))
        hours = int(args.get("hours") or 24)
        question = discord.utils.escape_mentions(str(args.get("question")))
        return f"post a poll here for {hours} h: **{question}** ({discord.utils.escape_mentions(answers)})"

    async def run(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel()
        if channel is None:
            raise ToolError("there is no channel to post the poll in")
        answers = [str(a).strip() for a in args["answers"]]
        if any(not a for a in answers) or len(set(answers)) != len(answers):
            raise ToolError("every answer must be non-empty and different from the others")
        hours = int(args.get("hours") or 24)
        poll = discord.Poll(question=str(args["question"]).strip(), duration=timedelta(hours=hours))
        for answer in answers:
            poll.add_answer(text=answer)
        try:
            message = await channel.send(poll=poll, allowed_mentions=discord.AllowedMentions.none())
        except discord.Forbidden:
            raise ToolError("I may not post polls in this channel (the Send Polls permission)") from None
        except discord.HTTPException as exc:
            raise ToolError(f"Discord refused the poll ({exc.status})") from None
        return {"posted": True, "question": poll.question, "answers": answers, "hours": hours, "message_id": message.id}


def reminder_text(job: Job, now: datetime | None = None) -> str:
    """What a due reminder says: ``⏰ <@user>, reminder: text`` (and who set it, when someone else did; and when it
    was due, when it fires late at ``now`` because the bot was down)."""
    target = int(job.payload.get("target_user_id", job.user_id))
    text = discord.utils.escape_mentions(str(job.payload.get("text", "")))[:MAX_REMINDER_CHARS]
    by = f" (from <@{job.user_id}>)" if target != job.user_id else ""
    due = job.due_at or job.next_run_at
    late = f" (due {discord.utils.format_dt(due, 'R')})" if now is not None and now - due > LATE_AFTER else ""
    return f"⏰ <@{target}>, reminder{by}: {text}{late}"


async def member_can_view(guild: discord.Guild | None, channel_id: int, user_id: int) -> bool:
    """Whether ``user_id`` is a member of ``guild`` who can view ``channel_id`` (a channel or thread there)."""
    if guild is None:
        return False
    channel = guild.get_channel_or_thread(channel_id)
    if channel is None:
        return False
    try:
        member = guild.get_member(user_id) or await guild.fetch_member(user_id)
    except discord.HTTPException:  # 404 Unknown Member: not on the server
        return False
    return channel.permissions_for(member).view_channel


def reminder_mentions(job: Job) -> discord.AllowedMentions:
    """Only the reminded person is pinged (not the one who set it, nor anyone named in the text)."""
    target = int(job.payload.get("target_user_id", job.user_id))
    return discord.AllowedMentions(everyone=False, roles=False, replied_user=False, users=[discord.Object(target)])
