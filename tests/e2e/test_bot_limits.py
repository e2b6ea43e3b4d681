"""Limits through the real bot: rate limits, input caps checked before any model runs, /stats."""

from __future__ import annotations

from typing import Any

from tests.e2e.bot_harness import FOOTER_RE, Harness
from tests.fakes.discord import InteractionSummary

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def refused_privately(summary: InteractionSummary, message: str) -> None:
    """The public "thinking..." reply is deleted and a private note says why."""
    assert summary.kinds == ["callback", "delete_original", "followup"], summary.kinds
    assert summary.original is None
    (note,) = summary.followups
    assert note["content"] == message and note["flags"] & 64
    assert summary.steps[2].body["allowed_mentions"] == {"parse": []}


async def test_rate_limit_refuses_politely_and_recovers(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        assert switchboard.store is not None
        await switchboard.store.update_guild_config(
            int(fake.guild_id), 1, "test", rate_limit_burst=1, rate_limit_per_minute=6
        )
        first = await fake.send_interaction("ask", {"prompt": "one"})
        await switchboard.wait_answered(first)
        second = await fake.send_interaction("ask", {"prompt": "two"})
        refused = await fake.wait_for_response(second, lambda s: s.followups)
        refused_privately(refused, "You're sending requests too fast; try again in 10 s.")
        assert len(switchboard.small.calls) == 1

        other = fake.add_member("bob")  # buckets are per user
        theirs = await fake.send_interaction("ask", {"prompt": "mine"}, user=other)
        await switchboard.wait_answered(theirs)

        switchboard.limiter_clock.advance(4)
        third = await fake.send_interaction("ask", {"prompt": "three"})
        refused = await fake.wait_for_response(third, lambda s: s.followups)
        refused_privately(refused, "You're sending requests too fast; try again in 6 s.")

        switchboard.limiter_clock.advance(6)
        fourth = await fake.send_interaction("ask", {"prompt": "four"})
        answered = await switchboard.wait_answered(fourth)
    assert FOOTER_RE.search(answered.content)
    assert [c[-1].content for c in switchboard.small.calls] == ["one", "mine", "four"]


async def test_refused_bad_input_costs_no_quota(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        assert switchboard.store is not None
        await switchboard.store.update_guild_config(
            int(fake.guild_id), 1, "test", rate_limit_burst=1, rate_limit_per_minute=6
        )
        empty = await fake.send_interaction("ask", {"prompt": "   "})
        refused = await fake.wait_for_response(empty, lambda s: s.followups)
        refused_privately(refused, "Your prompt is empty: tell me what you need.")
        # The one request of the burst is still there for the corrected prompt.
        fixed = await fake.send_interaction("ask", {"prompt": "now with words"})
        answered = await switchboard.wait_answered(fixed)
    assert FOOTER_RE.search(answered.content)
    assert [c[-1].content for c in switchboard.small.calls] == ["now with words"]


async def test_bad_input_is_refused_before_any_model_runs(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.settings_overrides = {"max_attachment_bytes": 1024}
    exe = fake.make_attachment("tool.exe", b"MZ\x90\x00", content_type="application/x-msdownload")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"prompt": "   "}, "Your prompt is empty: tell me what you need."),
        ({"prompt": "x" * 4001}, "Your prompt is 4,001 characters; the limit here is 4,000. Shorten it."),
        (
            {"prompt": "read this", "file": ("notes.txt", b"n" * 2048)},
            "`notes.txt` is too large (2 KB); attachments may be at most 1 KB.",
        ),
        (
            {"prompt": "run this", "file": exe},
            "`tool.exe` has an unsupported type (application/x-msdownload): "
            "send images, audio, video, text, JSON or PDF.",
        ),
    ]
    async with switchboard.running():
        assert switchboard.store is not None
        await switchboard.store.update_guild_config(int(fake.guild_id), 1, "test", rate_limit_burst=10)
        for options, message in cases:
            it = await fake.send_interaction("ask", options)
            refused_privately(await fake.wait_for_response(it, lambda s: s.followups), message)

        # A mention with a bad attachment: the placeholder reply says why.
        ping = fake.mention(fake.bot_user)
        await fake.send_message(f"{ping} what is this?", attachments=[exe])
        edited = await fake.wait_for_message(None, lambda m: "unsupported type" in m["content"])
        assert edited["content"].startswith("`tool.exe` has an unsupported type")
    assert switchboard.model_calls() == 0


async def test_stats_summary_and_chart(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        empty = await fake.send_interaction("stats")
        nothing = await fake.wait_for_response(empty)
        assert nothing.content == "No requests yet on this server."
        for prompt in ("hello", "hi again", "prove it"):
            await switchboard.wait_answered(await fake.send_interaction("ask", {"prompt": prompt}))
        await fake.wait_for(lambda: switchboard.probe.count("record_request") == 3, what="records")
        it = await fake.send_interaction("stats")
        summary = await fake.wait_for_response(it)
    assert summary.steps[0].body == {"type": 5}  # public, deferred before the database and the chart
    lines = summary.content.splitlines()
    assert lines[0] == "**3** requests · **67%** answered by the small tier · 0 fell back · 0 failed"
    assert lines[1].startswith("Median latency: large-fake ") and ", small-fake " in lines[1]
    (chart,) = summary.files
    assert chart.filename == "stats.png" and chart.data.startswith(PNG_MAGIC)
    assert summary.original is not None and summary.original["attachments"][0]["filename"] == "stats.png"


async def test_direct_messages_are_rate_limited_too(switchboard: Harness) -> None:
    fake = switchboard.fake
    dm = "4242"
    fake.channels[dm] = {"id": dm, "type": 1, "flags": 0, "last_message_id": None, "recipients": [fake.user]}
    async with switchboard.running():
        for prompt in range(8):  # the default burst
            summary = await switchboard.wait_answered(
                await fake.send_interaction("ask", {"prompt": f"{prompt}"}, channel_id=dm)
            )
            assert FOOTER_RE.search(summary.content)
        ninth = await fake.send_interaction("ask", {"prompt": "nine"}, channel_id=dm)
        refused = await fake.wait_for_response(ninth, lambda s: s.followups)
    refused_privately(refused, "You're sending requests too fast; try again in 3 s.")
    assert len(switchboard.small.calls) == 8
