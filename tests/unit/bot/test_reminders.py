"""Reading a reminder's time and person: what a model may write, and a clear refusal for anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.reminders import parse_user, parse_when
from inference.tools.base import ToolError

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("in 20 minutes", NOW + timedelta(minutes=20)),
        ("2 hours", NOW + timedelta(hours=2)),
        ("1h30m", NOW + timedelta(hours=1, minutes=30)),
        ("in an hour", NOW + timedelta(hours=1)),
        ("in 1 day and 2 hours", NOW + timedelta(days=1, hours=2)),
        ("in 90 secs", NOW + timedelta(seconds=90)),
        ("tomorrow", NOW + timedelta(days=1)),
        ("09:30", NOW.replace(hour=9, minute=30)),
        ("07:00", NOW.replace(hour=7) + timedelta(days=1)),  # already past today: tomorrow
        ("2026-12-24T18:00+01:00", datetime(2026, 12, 24, 17, 0, tzinfo=UTC)),
        ("2026-12-24 18:00", datetime(2026, 12, 24, 18, 0, tzinfo=UTC)),  # no zone: UTC
    ],
)
def test_times_a_model_may_write(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("yesterday", "can't read the time"),
        ("half an hour", "can't read the time"),
        ("in 5 parsecs", "unknown time unit 'parsec'"),
        ("2020-01-01", "in the past"),
        ("in 0 minutes", "in the past"),
        ("in 400 days", "at most 366 days ahead"),
        ("in 99999999999999999 weeks", "at most 366 days ahead"),  # no OverflowError
    ],
)
def test_other_times_are_refused_with_a_reason(text: str, why: str) -> None:
    with pytest.raises(ToolError, match=why):
        parse_when(text, NOW)


def test_people_are_mentions_or_ids() -> None:
    assert parse_user("<@123456789012345678>") == parse_user("<@!123456789012345678>") == 123456789012345678
    assert parse_user(" 123456789012345678 ") == 123456789012345678
    for bad in ("@everyone", "bob", "<@&123456789012345678>", "12"):
        with pytest.raises(ToolError, match="mention them"):
            parse_user(bad)


def test_a_late_reminder_says_when_it_was_due() -> None:
    from bot.reminders import reminder_text
    from bot.storage import Job

    due = NOW - timedelta(hours=2)
    job = Job(1, 5, 6, 7, "reminder", {"text": "tea @everyone"}, due, None, NOW, due_at=due)
    assert reminder_text(job, due + timedelta(seconds=20)) == "⏰ <@7>, reminder: tea @\u200beveryone"  # on time
    assert reminder_text(job, NOW).endswith(f"tea @\u200beveryone (due <t:{int(due.timestamp())}:R>)")
