"""One answer is at most `max_reply_messages` messages: a longer one ends with a note and comes as a file."""

from __future__ import annotations

from tests.e2e.bot_harness import CURSOR, FOOTER_RE, Harness, fence_lines

NOTE = "📎 The answer is longer than {n} messages: all of it is in answer.md."


def long_answer() -> str:
    code = "\n".join(f"    value_{i} = compute({i})  # step {i}" for i in range(120))
    prose = " ".join(f"Sentence number {i} explains the code at length." for i in range(150))
    return f"{prose}\n\n```python\n{code}\n```\n\n{prose}\n\n```python\n{code}\n```\n\n{prose}\nThe end."


async def test_very_long_answer_uses_four_messages_and_attaches_the_rest(switchboard: Harness) -> None:
    fake = switchboard.fake
    answer = long_answer()
    assert len(answer) > 20_000
    switchboard.small.reply, switchboard.small.step = answer, 0.01
    switchboard.settings_overrides["max_new_tokens"] = 20_000  # the model's own limit is not what is tested
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "tell me everything"})
        summary = await switchboard.wait_answered(it, timeout=15)

    messages = [m["content"] for m in summary.messages]
    assert len(messages) == 4 and len(summary.followups) == 3
    for content in messages:
        assert 0 < len(content) <= 2000 and CURSOR not in content
        assert fence_lines(content) % 2 == 0, content
    last = summary.followups[-1]
    assert last["content"].startswith(NOTE.format(n=4) + "\n") and FOOTER_RE.search(last["content"])
    (attachment,) = last["attachments"]
    assert attachment["filename"] == "answer.md"
    (upload,) = summary.files
    assert upload.data.decode() == answer  # the whole answer, unmodified
    # The first three messages are the start of the answer, in order.
    shown = "".join(m.replace("```python\n", "").replace("\n```", "") for m in messages[:3])
    assert answer.replace("```python\n", "").replace("\n```", "").startswith(shown[:4000])


async def test_message_cap_is_an_operator_setting(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply, switchboard.small.step = long_answer(), 0.01
    switchboard.settings_overrides.update(max_new_tokens=20_000, max_reply_messages=2)
    async with switchboard.running():
        await fake.send_message(f"{fake.mention(fake.bot_user)} tell me everything")
        final = await switchboard.wait_final_message(timeout=15)

    messages = fake.bot_messages()
    assert len(messages) == 2 and messages[-1]["id"] == final["id"]
    assert final["content"].startswith(NOTE.format(n=2)) and final["attachments"][0]["filename"] == "answer.md"
