"""The buttons under answers, through the real bot and the fake Discord: "Ask the larger model" and "Wrong task?"
re-answer in place and teach this server's router (similar requests follow the correction, unrelated ones and
other servers do not), only the asker may press them, admins list, undo and export corrections and turn the
buttons off, and /stats shows how often users wanted the larger model."""

from __future__ import annotations

import json
from typing import Any

from inference.types import Tier
from tests.e2e.bot_harness import LARGE, SMALL, Harness
from tests.fakes.discord import FakeDiscord, InteractionSummary
from tests.fakes.discord import payloads as P

MANAGE_SERVER = str(P.MANAGE_GUILD)
QUESTION = "what should I name my new hamster"


def buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The message's components by label (buttons) or placeholder (selects)."""
    found: dict[str, dict[str, Any]] = {}
    for row in message.get("components") or []:
        for item in row.get("components") or []:
            found[item.get("label") or item.get("placeholder") or item["custom_id"]] = item
    return found


def footer(content: str) -> str:
    return content.rsplit("\n-# ", 1)[-1]


async def ask(
    switchboard: Harness, prompt: str, *, with_buttons: bool = True, private: bool = False, **kw: Any
) -> InteractionSummary:
    """/ask, until answered (and, ``with_buttons``, until the buttons are on the answer)."""
    options: dict[str, Any] = {"prompt": prompt} | ({"private": True} if private else {})
    it = await switchboard.fake.send_interaction("ask", options, **kw)
    summary = await switchboard.wait_answered(it)
    if with_buttons:
        summary = await switchboard.fake.wait_for_response(it, lambda s: s.original and buttons(s.original))
    return summary


async def click(fake: FakeDiscord, message: dict[str, Any], label: str, **kw: Any) -> None:
    item = buttons(fake.messages[message["id"]])[label]
    await fake.send_component(message, item["custom_id"], **kw)


async def until_footer(fake: FakeDiscord, message: dict[str, Any], startswith: str) -> dict[str, Any]:
    """The message once its footer starts with ``startswith`` and its buttons are back."""

    def done() -> dict[str, Any]:
        m = fake.messages[message["id"]]
        return m if footer(m["content"]).startswith(startswith) and buttons(m) else {}

    return await fake.wait_for(done, timeout=10, what=f"footer {startswith!r}")


async def raise_burst(switchboard: Harness) -> None:
    assert switchboard.store is not None
    await switchboard.store.update_guild_config(int(switchboard.fake.guild_id), 1, "test", rate_limit_burst=20)


async def test_ask_the_larger_model_reanswers_in_place_and_similar_requests_follow(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        await raise_burst(switchboard)
        first = await ask(switchboard, QUESTION)
        assert first.original is not None
        assert footer(first.content).startswith(f"chat · small · {SMALL}")
        assert set(buttons(first.original)) == {"Ask the larger model", "Wrong task?"}

        await click(fake, first.original, "Ask the larger model")
        again = await until_footer(fake, first.original, f"chat · large · {LARGE}")
        assert again["content"].startswith(f"answer from {LARGE}")
        assert set(buttons(again)) == {"Wrong task?"}  # the large tier answered: nothing larger to ask for
        await fake.wait_for(lambda: switchboard.probe.count("add_correction") == 1, what="correction stored")
        assert switchboard.store is not None
        (correction,) = await switchboard.store.corrections(int(fake.guild_id))
        assert (correction.kind, correction.routed_task, correction.routed_tier) == ("larger", "chat", "small")

        # The same request (other words around it) now goes to the large tier; an unrelated one does not.
        similar = await ask(switchboard, QUESTION + "?")
        assert footer(similar.content).startswith(f"chat · large · {LARGE}")
        unrelated = await ask(switchboard, "tell me a fun fact about octopuses")
        assert footer(unrelated.content).startswith(f"chat · small · {SMALL}")

        # Another server never sees this one's corrections.
        other = fake.add_guild("Other")
        elsewhere = await ask(switchboard, QUESTION, channel_id=fake.channel_by_name("general", other))
        assert footer(elsewhere.content).startswith(f"chat · small · {SMALL}")


async def test_wrong_task_picks_the_task_and_reanswers_through_it(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        await raise_burst(switchboard)
        first = await ask(switchboard, "is this message spam: WIN A FREE PHONE")
        assert first.original is not None and footer(first.content).startswith("chat · small")
        answer = first.original
        await click(fake, first.original, "Wrong task?")
        picker = await fake.wait_for(
            lambda: buttons(fake.messages[answer["id"]]).get("Which task was it?") or {}, what="task menu"
        )
        values = [o["value"] for o in picker["options"]]
        assert "chat" not in values and "classification" in values and len(values) == 9
        await fake.send_component(answer, picker["custom_id"], component_type=3, values=["classification"])
        again = await until_footer(fake, answer, "classification · small")
        assert "Wrong task?" in buttons(again)
        await fake.wait_for(lambda: switchboard.probe.count("add_correction") == 1, what="correction stored")

        assert switchboard.store is not None
        (correction,) = await switchboard.store.corrections(int(fake.guild_id))
        assert (correction.kind, correction.routed_task, correction.task) == ("task", "chat", "classification")
        similar = await ask(switchboard, "is this message spam: WIN A FREE PHONE now")
        assert footer(similar.content).startswith("classification · small")

        # An admin sees the correction, exports it as training data and undoes it.
        listed = await fake.wait_for_response(
            await fake.send_interaction("route", {}, subcommand="corrections list", permissions=MANAGE_SERVER)
        )
        assert f"`#{correction.id}`" in listed.content and "**chat** → **classification**" in listed.content
        exported = await fake.wait_for_response(
            await fake.send_interaction("route", {}, subcommand="corrections export", permissions=MANAGE_SERVER),
            lambda s: s.files,
        )
        (upload,) = exported.files
        assert json.loads(upload.data) == {
            "text": "is this message spam: WIN A FREE PHONE",
            "task": "classification",
            "hard": False,
        }
        undone = await fake.wait_for_response(
            await fake.send_interaction(
                "route", {"number": correction.id}, subcommand="corrections undo", permissions=MANAGE_SERVER
            )
        )
        assert undone.content == f"Correction #{correction.id} undone."
        back = await ask(switchboard, "is this message spam: WIN A FREE PHONE now")
        assert footer(back.content).startswith("chat · small")


async def test_only_the_asker_may_press_the_buttons(switchboard: Harness) -> None:
    fake = switchboard.fake
    bystander = fake.add_member("bystander")
    async with switchboard.running():
        first = await ask(switchboard, QUESTION)
        assert first.original is not None
        calls = switchboard.model_calls()
        item = buttons(first.original)["Ask the larger model"]
        it = await fake.send_component(first.original, item["custom_id"], user=bystander)
        refused = await fake.wait_for_response(it)
        assert refused.ephemeral and refused.content == "Only the person who asked can use these buttons."
        assert switchboard.model_calls() == calls
        assert switchboard.store is not None and await switchboard.store.corrections(int(fake.guild_id)) == []
        assert footer(fake.messages[first.original["id"]]["content"]).startswith("chat · small")


async def test_a_reanswer_counts_against_the_rate_limit(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        assert switchboard.store is not None
        await switchboard.store.update_guild_config(int(fake.guild_id), 1, "test", rate_limit_burst=1)
        first = await ask(switchboard, QUESTION)
        answer = first.original
        assert answer is not None
        calls = switchboard.model_calls()
        item = buttons(answer)["Ask the larger model"]
        it = await fake.send_component(answer, item["custom_id"])
        refused = await fake.wait_for_response(it, lambda s: s.followups)
        assert "too fast" in refused.followups[0]["content"] and refused.followups[0]["flags"] & P.FLAG_EPHEMERAL
        assert switchboard.model_calls() == calls
        assert await switchboard.store.corrections(int(fake.guild_id)) == []
        # The answer and its buttons are still there.
        kept = await fake.wait_for(lambda: buttons(fake.messages[answer["id"]]), what="buttons back")
        assert "Ask the larger model" in kept
        assert footer(fake.messages[answer["id"]]["content"]).startswith("chat · small")


async def test_admins_turn_the_buttons_off_for_the_server_or_a_channel(switchboard: Harness) -> None:
    fake = switchboard.fake
    quiet = fake.add_channel("quiet")
    async with switchboard.running():
        await raise_burst(switchboard)
        done = await fake.wait_for_response(
            await fake.send_interaction(
                "settings", {"enabled": False, "channel": quiet}, subcommand="feedback", permissions=MANAGE_SERVER
            )
        )
        assert done.content == f"Answer buttons are off in <#{quiet}>."
        there = await ask(switchboard, QUESTION, channel_id=quiet, with_buttons=False)
        assert there.original is not None and buttons(there.original) == {}
        here = await ask(switchboard, QUESTION)
        assert here.original is not None and buttons(here.original)

        refused = await fake.wait_for_response(
            await fake.send_interaction("settings", {"enabled": False}, subcommand="feedback")
        )
        assert "Manage Server" in refused.content
        await fake.wait_for_response(
            await fake.send_interaction(
                "settings", {"enabled": False}, subcommand="feedback", permissions=MANAGE_SERVER
            )
        )
        off = await ask(switchboard, QUESTION, with_buttons=False)
        assert off.original is not None and buttons(off.original) == {}


async def test_stats_show_how_often_users_wanted_the_larger_model(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        await raise_burst(switchboard)
        first = await ask(switchboard, QUESTION)
        assert first.original is not None
        await ask(switchboard, "tell me a fun fact about octopuses")
        await click(fake, first.original, "Ask the larger model")
        await until_footer(fake, first.original, "chat · large")
        await fake.wait_for(lambda: switchboard.probe.count("add_correction") == 1, what="correction stored")
        stats = await fake.wait_for_response(await fake.send_interaction("stats"))
        assert "Asked for the larger model: chat 1/3 (33%)" in stats.content


async def test_a_task_threshold_moves_that_task_alone_and_stats_suggest_it(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        await raise_burst(switchboard)
        for _ in range(10):  # ten chat answers, three of them wanted larger: /stats suggests a lower threshold
            await ask(switchboard, QUESTION, with_buttons=False)
        assert switchboard.store is not None
        for n in range(3):
            await switchboard.store.add_correction(
                int(fake.guild_id), 7, f"q{n}", kind="larger", routed_task="chat", routed_tier=Tier.SMALL, task="chat"
            )
        stats = await fake.wait_for_response(await fake.send_interaction("stats"))
        assert "chat 3/10 (30%)" in stats.content and "lower that task's threshold" in stats.content

        done = await fake.wait_for_response(
            await fake.send_interaction(
                "settings", {"value": 0.05, "task": "chat"}, subcommand="threshold", permissions=MANAGE_SERVER
            )
        )
        assert done.content == "Escalation threshold for **chat** set to 0.05."
        chat = await ask(switchboard, "tell me a fun fact about octopuses", with_buttons=False)
        assert footer(chat.content).startswith(f"chat · large · {LARGE}")
        other = await ask(switchboard, "translate good morning to german", with_buttons=False)
        assert footer(other.content).startswith(f"conversion · small · {SMALL}")


async def test_a_private_answer_has_no_buttons(switchboard: Harness) -> None:
    # A correction keeps the request's text for the server's admins: a private question never offers one.
    async with switchboard.running():
        private = await ask(switchboard, QUESTION, with_buttons=False, private=True)
        assert private.ephemeral and private.original is not None and buttons(private.original) == {}
        public = await ask(switchboard, QUESTION)
        assert public.original is not None and buttons(public.original)
