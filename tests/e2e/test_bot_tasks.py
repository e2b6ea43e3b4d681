"""Each task served through its own pipeline, end to end through the fake Discord: code fenced (a long one also
as a file), completion as a raw continuation, rag honest about having no documents, and /tasks framing."""

from __future__ import annotations

from typing import Any

from tests.e2e.bot_harness import FOOTER_RE, Harness
from tests.fakes.discord import FakeDiscord

MANAGE_SERVER = "32"


async def admin(fake: FakeDiscord, command: str, options: dict[str, Any] | None = None) -> Any:
    name, sub = command.split(" ", 1)
    it = await fake.send_interaction(name, options or {}, subcommand=sub, permissions=MANAGE_SERVER)
    return await fake.wait_for_response(it)


async def test_code_answer_arrives_fenced_with_its_language(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.large.reply = "def add(a, b):\n    return a + b"
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "write an add function in python", "task": "code"})
        summary = await switchboard.wait_answered(it)
    assert summary.content.startswith("```python\ndef add(a, b):\n    return a + b\n```\n-# code · large")
    assert not summary.files
    # The code pipeline framed it: its own instructions, greedy decoding, no constraint.
    (messages,) = switchboard.large.calls
    assert messages[0].role == "system" and "fenced code block" in messages[0].content
    (params,) = switchboard.large.params
    assert params.temperature == 0.0 and params.constraint is None and not params.raw


async def test_long_code_answer_also_comes_as_a_file(switchboard: Harness) -> None:
    fake = switchboard.fake
    code = "\n".join(f"x_{i} = {i}" for i in range(60))
    switchboard.large.reply = f"Here it is:\n```py\n{code}\n```\nDone."
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "write sixty assignments", "task": "code"})
        summary = await fake.wait_for_response(it, lambda s: bool(s.files), 5)
    assert FOOTER_RE.search(summary.messages[0]["content"]) or any(
        FOOTER_RE.search(m["content"]) for m in summary.messages
    )
    (upload,) = summary.files
    assert upload.filename == "answer.py" and upload.data.decode() == code + "\n"
    last = summary.messages[-1]
    assert last["attachments"][0]["filename"] == "answer.py" and "answer.py" in last["content"]


async def test_completion_is_a_raw_continuation(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = " and they lived happily ever after."
    async with switchboard.running():
        it = await fake.send_interaction(
            "ask", {"prompt": "Continue this story: Once upon a time", "task": "completion"}
        )
        summary = await switchboard.wait_answered(it)
    assert summary.content.lstrip().startswith("and they lived happily ever after.\n-# completion · small")
    (params,) = switchboard.small.params
    assert params.raw and params.temperature > 0
    # No assistant framing: the text itself, without the instruction, and no system prompt.
    (messages,) = switchboard.small.calls
    assert [(m.role, m.content) for m in messages] == [("user", "Once upon a time")]


async def test_rag_says_it_has_no_documents_and_runs_no_model(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        it = await fake.send_interaction("ask", {"prompt": "what do our docs say about refunds?", "task": "rag"})
        summary = await switchboard.wait_answered(it)
    assert summary.content.startswith("No documents are indexed on this server yet")
    assert "no model was run" in summary.content and FOOTER_RE.search(summary.content)
    assert switchboard.model_calls() == 0


async def test_grammar_yes_no_request_is_constrained_to_the_choice(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = "yes"
    async with switchboard.running():
        it = await fake.send_interaction(
            "ask", {"prompt": "Is the sky blue? Answer only yes or no.", "task": "grammar"}
        )
        summary = await switchboard.wait_answered(it)
    assert summary.content.startswith("yes\n-# grammar")
    (params,) = switchboard.small.params
    assert params.constraint is not None and params.constraint.kind == "choice"
    assert set(params.constraint.choices) == {"yes", "no"}


async def test_admin_framing_reaches_the_model_and_resets(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        done = await admin(
            fake, "tasks set", {"task": "chat", "system": "You are a pirate.", "temperature": 0.5, "max_tokens": 50}
        )
        assert "framing set here" in done.content
        shown = await admin(fake, "tasks show", {"task": "chat"})
        assert "> You are a pirate." in shown.content and "Temperature: 0.5 (set here)" in shown.content
        listing = await admin(fake, "tasks show")
        assert "chat → max_new_tokens, system, temperature" in listing.content
        it = await fake.send_interaction("ask", {"prompt": "hello there"})
        await switchboard.wait_answered(it)
        bad = await admin(fake, "tasks set", {"task": "chat", "temperature": 9.0})
        assert bad.content.startswith("Not changed:")
        await admin(fake, "tasks reset", {"task": "chat"})
        it = await fake.send_interaction("ask", {"prompt": "hello again"})
        await switchboard.wait_answered(it)
        assert switchboard.store is not None
        audit = await switchboard.store.audit(int(fake.guild_id))
    first, second = switchboard.small.calls
    assert first[0].content == "You are a pirate." and second[0].content.startswith("You are Switchboard")
    p1, p2 = switchboard.small.params
    assert (p1.temperature, p1.max_new_tokens) == (0.5, 50) and p2.temperature == 0.0
    assert [e.action for e in audit][:2] == ["tasks.reset", "tasks.set"]


async def test_tasks_commands_need_manage_server(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        it = await fake.send_interaction("tasks", {"task": "chat", "system": "x"}, subcommand="set", permissions="0")
        summary = await fake.wait_for_response(it)
        assert switchboard.store is not None
        config = await switchboard.store.guild_config(int(fake.guild_id))
    assert "Manage Server" in summary.content and config.task_framing == {}
