"""Discord answers 429 mid-answer: discord.py waits `retry_after`, the reply streams on and ends complete."""

from __future__ import annotations

import itertools

from tests.e2e.bot_harness import CURSOR, FOOTER_RE, Harness, is_final

RETRY = 0.05  # seconds discord.py sleeps per 429: small, so the suite stays fast


def streamed_prefixes(contents: list[str]) -> None:
    """Each streamed edit shows more of the answer than the one before (nothing reordered or lost)."""
    shown = [c.removesuffix(CURSOR) for c in contents]
    for before, after in itertools.pairwise(shown):
        assert after.startswith(before), (before, after)


async def test_rate_limited_interaction_edits_still_end_complete(switchboard: Harness) -> None:
    fake = switchboard.fake
    small = switchboard.small
    small.reply = " ".join(f"w{i}" for i in range(1, 41))  # 40 pieces: an edit every 10 on the manual clock
    limited = fake.rate_limit("PATCH", r"/messages/@original$", times=3, retry_after=RETRY, bucket="edits")
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "count for me"})
        summary = await switchboard.wait_answered(it)

    assert len(limited.hits) == 3 and all(r.status == 429 for r in limited.hits)
    edits = [s for s in summary.steps if s.kind == "edit_original"]
    answered = [s.content or "" for s in edits if s.request.status == 200]
    # discord.py retried the very same body after each 429: the first edit is the one that was held back.
    assert [s.content for s in edits[:4]] == [answered[0]] * 4
    streamed_prefixes(answered[:-1])
    assert answered[-1] == summary.content
    assert summary.content.startswith(small.reply + "\n") and FOOTER_RE.search(summary.content)
    assert not summary.followups


async def test_rate_limited_channel_edits_and_followups_keep_every_message(switchboard: Harness) -> None:
    fake = switchboard.fake
    small = switchboard.small
    small.reply = " ".join(f"word{i:04d}" for i in range(600))  # ~5400 characters: three messages
    small.step = 0.05
    # Both routes the mention reply writes through: edits of its messages and new follow-up messages.
    edits = fake.rate_limit("PATCH", rf"^/channels/{fake.channel_id}/messages/\d+$", times=4, retry_after=RETRY)
    posts = fake.rate_limit("POST", rf"^/channels/{fake.channel_id}/messages$", times=2, retry_after=RETRY)
    async with switchboard.running():
        # The placeholder takes the POST 429s first; the follow-ups of the long answer come later.
        await fake.send_message(f"{fake.mention(fake.bot_user)} write a lot")
        await switchboard.wait_final_message()

    assert edits.remaining == 0 and posts.remaining == 0
    messages = [m["content"] for m in fake.bot_messages()]
    assert len(messages) == 3 and all(len(c) <= 2000 for c in messages)
    assert all(CURSOR not in c for c in messages)
    assert is_final(messages[-1]) and not any(is_final(c) for c in messages[:-1])
    text = FOOTER_RE.sub("", "".join(messages))
    assert text.split() == small.reply.split()


async def test_global_rate_limit_is_waited_out(switchboard: Harness) -> None:
    fake = switchboard.fake
    limited = fake.rate_limit(None, r"^/webhooks/", times=1, retry_after=RETRY, global_=True)
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "hello"})
        summary = await switchboard.wait_answered(it)
    (hit,) = limited.hits
    assert hit.response == {"message": "You are being rate limited.", "code": 0, "retry_after": RETRY, "global": True}
    assert summary.content == "answer from small-fake\n-# chat · small · small-fake · 0.3s"
