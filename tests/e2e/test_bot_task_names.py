"""Tasks are shown to people in plain words ("structured output", not "grammar"); the ids stay what the
commands send back, what the footer shows and what the command line prints."""

from __future__ import annotations

from typing import Any

from inference.types import TASK_LABELS, TASKS
from tests.e2e.bot_harness import FOOTER_RE, Harness

MANAGE_SERVER = "32"


def choices(command: dict[str, Any], *path: str) -> list[dict[str, Any]]:
    """The choices of the option at ``path`` (subcommands, then the option) of a synced command."""
    option = next(o for o in command["options"] if o["name"] == path[0])
    for name in path[1:]:
        option = next(o for o in option["options"] if o["name"] == name)
    return list(option["choices"])


def test_every_task_has_a_short_plain_label() -> None:
    assert set(TASK_LABELS) == set(TASKS)
    assert all(0 < len(label) <= 100 for label in TASK_LABELS.values())  # Discord's limit for a choice's name
    assert TASK_LABELS["grammar"].startswith("structured output")
    assert len(set(TASK_LABELS.values())) == len(TASKS)


async def test_task_choices_show_plain_words_and_send_ids(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        synced = fake.commands["global"]
        it = await fake.send_interaction("ask", {"prompt": "yes or no: is water wet", "task": "grammar"})
        answered = await switchboard.wait_answered(it)
    expected = [{"name": TASK_LABELS[t], "value": t} for t in TASKS]
    assert choices(synced["ask"], "task") == expected
    assert choices(synced["route"], "set", "task") == expected
    footer = FOOTER_RE.search(answered.content)
    assert footer is not None and footer["task"] == "grammar"  # the footer keeps the id (/help explains it)


async def test_stats_count_tasks_in_plain_words(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        for prompt, task in (("hello", None), ("hi", None), ("answer yes or no", "grammar")):
            options = {"prompt": prompt} | ({"task": task} if task else {})
            await switchboard.wait_answered(await fake.send_interaction("ask", options))
        await fake.wait_for(lambda: switchboard.probe.count("record_request") == 3, what="records")
        summary = await fake.wait_for_response(await fake.send_interaction("stats"))
    assert summary.content.splitlines()[2] == "By task: chat 2 · structured output (JSON, fixed format) 1"
