"""Date and time tools: the time in a zone, a time converted between zones, date arithmetic.

Zones are IANA names from :mod:`zoneinfo` (the ``tzdata`` package supplies them where the system has none);
a city alone ("Tokyo", "new york") is accepted when exactly one zone ends with it. The clock is injectable, so
tests pin "now".
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from inference.tools.base import Tool, ToolError

Now = Callable[[], datetime]

#: Largest shift date_add accepts, in days either way (about 270 years).
MAX_DAYS = 100_000
_ALIASES = {"utc": "UTC", "gmt": "UTC", "z": "UTC", "zulu": "UTC"}


def _utc_now() -> datetime:
    return datetime.now(UTC)


@functools.cache
def _zones() -> dict[str, str]:
    """lower-case name (and city) -> IANA name; a city shared by several zones is left out (ambiguous)."""
    names = zoneinfo.available_timezones()
    table = {n.lower(): n for n in names}
    cities: dict[str, set[str]] = {}
    for n in names:
        city = n.rsplit("/", 1)[-1].lower()
        cities.setdefault(city, set()).add(n)
        cities.setdefault(city.replace("_", " "), set()).add(n)
    for city, found in cities.items():
        if len(found) == 1 and city not in table:
            table[city] = found.pop()
    return table


def zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone an IANA name or a city stands for; :class:`ToolError` naming the problem otherwise."""
    key = name.strip().lower().replace(" ", "_")
    key = _ALIASES.get(key, key)
    found = _zones().get(key.lower()) or _zones().get(key.replace("_", " "))
    if found is None:
        raise ToolError(f"unknown time zone {name.strip()[:60]!r}; use an IANA name such as Europe/Oslo")
    return zoneinfo.ZoneInfo(found)


def _describe(moment: datetime) -> str:
    offset = moment.strftime("%z")
    return f"{moment:%Y-%m-%d %H:%M} {moment.tzname()} (UTC{offset[:3]}:{offset[3:]}), {moment:%A}"


def _parse_moment(text: str, tz: zoneinfo.ZoneInfo, now: datetime) -> datetime:
    """``YYYY-MM-DD HH:MM``, an ISO date-time, ``HH:MM`` (today in ``tz``) or ``now``."""
    text = text.strip()
    if text.lower() == "now":
        return now.astimezone(tz)
    try:
        clock = datetime.strptime(text, "%H:%M")
    except ValueError:
        pass
    else:
        today = now.astimezone(tz)
        return today.replace(hour=clock.hour, minute=clock.minute, second=0, microsecond=0)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ToolError(f"can't read the time {text[:40]!r}; use YYYY-MM-DD HH:MM or HH:MM") from None
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment.astimezone(tz)


def _parse_date(text: str, now: datetime) -> date | datetime:
    text = text.strip()
    if text.lower() in ("today", "now"):
        return now.date() if text.lower() == "today" else now
    try:
        return date.fromisoformat(text) if len(text) <= 10 else datetime.fromisoformat(text)
    except ValueError:
        raise ToolError(f"can't read the date {text[:40]!r}; use YYYY-MM-DD (or today)") from None


_ZONE = {"type": "string", "description": "an IANA time zone such as Europe/Oslo, or UTC", "maxLength": 64}
_DATE = {"type": "string", "description": "YYYY-MM-DD, YYYY-MM-DD HH:MM, or today", "maxLength": 40}


class _Clocked(Tool):
    def __init__(self, now: Now | None = None) -> None:
        self._now = now or _utc_now


class CurrentTime(_Clocked):
    name = "current_time"
    description = "The current date and time in a time zone (UTC when none is given)."
    parameters = {  # noqa: RUF012 - a JSON Schema, read only
        "type": "object",
        "properties": {"zone": _ZONE},
        "required": [],
        "additionalProperties": False,
    }
    examples = (("what time is it in Tokyo?", {"zone": "Asia/Tokyo"}),)

    async def run(self, args: dict[str, Any]) -> str:
        tz = zone(str(args.get("zone") or "UTC"))
        return _describe(self._now().astimezone(tz))

    def summary(self, args: dict[str, Any], output: str) -> str:
        return f"Now in {args.get('zone') or 'UTC'}: {output}"


class ConvertTime(_Clocked):
    name = "convert_time"
    description = "Convert a time from one time zone to another (HH:MM means today in the first zone)."
    parameters = {  # noqa: RUF012 - a JSON Schema, read only
        "type": "object",
        "properties": {
            "time": {"type": "string", "description": "HH:MM, YYYY-MM-DD HH:MM, or now", "maxLength": 40},
            "from_zone": _ZONE,
            "to_zone": _ZONE,
        },
        "required": ["time", "from_zone", "to_zone"],
        "additionalProperties": False,
    }
    examples = (
        (
            "9am in London is what time in New York?",
            {"time": "09:00", "from_zone": "Europe/London", "to_zone": "America/New_York"},
        ),
    )

    async def run(self, args: dict[str, Any]) -> str:
        source, target = zone(str(args["from_zone"])), zone(str(args["to_zone"]))
        moment = _parse_moment(str(args["time"]), source, self._now())
        return f"{_describe(moment)} is {_describe(moment.astimezone(target))}"


class DateAdd(_Clocked):
    name = "date_add"
    description = "A date (or date and time) plus or minus a number of weeks, days, hours and minutes."
    parameters = {  # noqa: RUF012 - a JSON Schema, read only
        "type": "object",
        "properties": {
            "start": _DATE,
            "weeks": {"type": "integer", "minimum": -MAX_DAYS // 7, "maximum": MAX_DAYS // 7},
            "days": {"type": "integer", "minimum": -MAX_DAYS, "maximum": MAX_DAYS},
            "hours": {"type": "integer", "minimum": -MAX_DAYS * 24, "maximum": MAX_DAYS * 24},
            "minutes": {"type": "integer", "minimum": -MAX_DAYS * 1440, "maximum": MAX_DAYS * 1440},
        },
        "required": ["start"],
        "additionalProperties": False,
    }
    examples = (("what date is 90 days after 2025-03-01?", {"start": "2025-03-01", "days": 90}),)

    async def run(self, args: dict[str, Any]) -> str:
        start = _parse_date(str(args["start"]), self._now())
        shift = timedelta(
            weeks=int(args.get("weeks", 0)),
            days=int(args.get("days", 0)),
            hours=int(args.get("hours", 0)),
            minutes=int(args.get("minutes", 0)),
        )
        if abs(shift.days) > MAX_DAYS:
            raise ToolError(f"shift by at most {MAX_DAYS} days")
        if not isinstance(start, datetime) and shift.seconds:  # hours on a bare date: from its midnight
            start = datetime(start.year, start.month, start.day)
        try:
            result = start + shift
        except OverflowError:
            raise ToolError("the date is out of range (years 1 to 9999)") from None
        if isinstance(result, datetime):
            return f"{result:%Y-%m-%d %H:%M}, {result:%A}"
        return f"{result:%Y-%m-%d}, {result:%A}"


class DaysBetween(_Clocked):
    name = "days_between"
    description = "The number of days from one date to another (negative when the second is earlier)."
    parameters = {  # noqa: RUF012 - a JSON Schema, read only
        "type": "object",
        "properties": {"start": _DATE, "end": _DATE},
        "required": ["start", "end"],
        "additionalProperties": False,
    }
    examples = (("how many days from 2025-01-01 until 2025-12-25?", {"start": "2025-01-01", "end": "2025-12-25"}),)

    async def run(self, args: dict[str, Any]) -> str:
        now = self._now()
        start, end = _parse_date(str(args["start"]), now), _parse_date(str(args["end"]), now)
        first = start.date() if isinstance(start, datetime) else start
        last = end.date() if isinstance(end, datetime) else end
        days = (last - first).days
        return f"{days} days"
