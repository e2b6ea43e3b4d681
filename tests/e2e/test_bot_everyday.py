"""The everyday commands and message context menus through the real bot and the fake Discord.

/classify, /translate, /summarize, /rewrite and /json; Translate, Summarize, Fix spelling and grammar and
Explain on a message. Each defers, goes through the router with its task (so /route applies) and ends with the
route footer; bad input gets a private note naming the problem, before any model runs.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.e2e.bot_harness import FOOTER_RE, LARGE, SMALL, Harness
from tests.fakes.discord import FakeDiscord, InteractionSummary
from tests.fakes.discord.payloads import FLAG_EPHEMERAL, READ_MESSAGE_HISTORY, VIEW_CHANNEL

MANAGE_SERVER = "32"


def route_of(content: str) -> tuple[str, str, str]:
    match = FOOTER_RE.search(content)
    assert match is not None, content
    return match["task"], match["tier"], match["model"]


def body_of(content: str) -> str:
    return FOOTER_RE.sub("", content)


async def private_note(fake: FakeDiscord, it: Any) -> str:
    """The private note an interaction got: an ephemeral answer, or an ephemeral follow-up after a deferral."""

    def done(s: InteractionSummary) -> bool:
        if any(f["flags"] & FLAG_EPHEMERAL for f in s.followups):
            return True
        return s.original is not None and not s.loading and bool(s.original["flags"] & FLAG_EPHEMERAL)

    summary = await fake.wait_for_response(it, done)
    note = next((f for f in reversed(summary.followups) if f["flags"] & FLAG_EPHEMERAL), summary.original)
    assert note is not None and note["flags"] & FLAG_EPHEMERAL
    return str(note["content"])


def prompt_seen(switchboard: Harness, name: str = SMALL) -> str:
    """The last user message the model saw."""
    (*_, messages) = switchboard.backends[name].calls
    return messages[-1].content


# --- /classify ------------------------------------------------------------------------------------------


async def test_classify_answers_one_of_the_labels_with_the_route_footer(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = "negative"
    async with switchboard.running():
        it = await fake.send_interaction("classify", {"text": "I hated every minute", "labels": "positive, negative"})
        summary = await switchboard.wait_answered(it)
    assert summary.kinds[0] == "callback" and summary.steps[0].body == {"type": 5}  # deferred first
    assert body_of(summary.content) == "`negative`"
    assert route_of(summary.content) == ("classification", "small", SMALL)
    (messages,) = switchboard.small.calls
    assert "positive, negative" in messages[0].content and messages[-1].content == "I hated every minute"


async def test_classify_never_shows_a_label_outside_the_set(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = "maybe"  # not a label, also after the repair attempt
    async with switchboard.running():
        it = await fake.send_interaction("classify", {"text": "hm", "labels": "yes, no"})
        summary = await switchboard.wait_answered(it)
    assert summary.content.startswith("⚠️") and "required format" in summary.content
    assert "maybe" not in summary.content and len(switchboard.small.calls) == 2  # one repair, then honest


async def test_classify_many_lines_from_a_file_one_label_per_line(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.scripts = [["spam"], ["ham"], ["spam"]]
    lines = b"WIN A FREE PHONE\n\nlunch at noon?\nclaim your prize now\n"
    async with switchboard.running():
        file = fake.make_attachment("lines.txt", lines, content_type="text/plain; charset=utf-8")
        it = await fake.send_interaction("classify", {"labels": "spam,ham", "file": file})
        summary = await switchboard.wait_answered(it)
    assert body_of(summary.content) == "1. `spam`\n2. `ham`\n3. `spam`"
    assert [c[-1].content for c in switchboard.small.calls] == [
        "WIN A FREE PHONE",
        "lunch at noon?",
        "claim your prize now",
    ]
    assert route_of(summary.content)[0] == "classification"


async def test_classify_multi_answers_several_labels(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = '["urgent", "billing"]'
    async with switchboard.running():
        it = await fake.send_interaction(
            "classify", {"text": "pay now or lose access", "labels": "billing, urgent, social", "multi": True}
        )
        summary = await switchboard.wait_answered(it)
    assert body_of(summary.content) == "`billing`, `urgent`"  # in the order the labels were given


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"labels": " , ", "text": "x"}, "Give the labels to choose from"),
        ({"labels": "spam", "text": "x"}, "at least 2 labels"),
        ({"labels": ",".join(f"l{i}" for i in range(21)), "text": "x"}, "At most 20 labels at once (21 given)"),
        ({"labels": "a, b, A", "text": "x"}, "`A` is listed twice"),
        ({"labels": "a, b"}, "Give the `text` to label or a `file`"),
        ({"labels": "a, b", "text": "x", "file": ("l.txt", b"x")}, "Give the `text` to label or a `file`"),
        ({"labels": "a, b", "file": ("photo.png", b"\x89PNG")}, "isn't a text file"),
    ],
)
async def test_classify_bad_input_gets_a_private_note(
    switchboard: Harness, options: dict[str, Any], expected: str
) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        if "file" in options and isinstance(options["file"], tuple):
            name, data = options["file"]
            ctype = "text/plain" if name.endswith(".txt") else "image/png"
            options = {**options, "file": fake.make_attachment(name, data, content_type=ctype)}
        it = await fake.send_interaction("classify", options)
        note = await private_note(fake, it)
    assert expected in note, note
    assert switchboard.model_calls() == 0


async def test_classify_file_with_too_many_lines_is_refused_after_reading(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        file = fake.make_attachment(
            "many.txt", "\n".join(f"line {i}" for i in range(51)).encode(), content_type="text/plain"
        )
        it = await fake.send_interaction("classify", {"labels": "a,b", "file": file})
        note = await private_note(fake, it)
    assert note == "`many.txt` has 51 lines; at most 50 at once." and switchboard.model_calls() == 0


# --- /translate, /rewrite -------------------------------------------------------------------------------


async def test_translate_autocomplete_offers_languages_by_name_or_code(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        choices = []
        for typed in ("fr", "ger", ""):
            it = await fake.send_autocomplete("translate", {"text": "hi", "to": typed}, "to")
            answered = await fake.wait_for_request("POST", f"/interactions/{it.id}/")
            choices.append([(c["name"], c["value"]) for c in answered.json["data"]["choices"]])
    assert choices[0][0] == ("French (fr)", "fr")
    assert choices[1] == [("German (de)", "de")]
    assert len(choices[2]) == 25  # Discord shows at most 25


async def test_translate_goes_through_the_router_as_conversion(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = "Bonjour tout le monde"
    async with switchboard.running():
        it = await fake.send_interaction("translate", {"text": "Hello everyone", "to": "fr"})
        summary = await switchboard.wait_answered(it)
    assert body_of(summary.content) == "Bonjour tout le monde"
    assert route_of(summary.content) == ("conversion", "small", SMALL)
    prompt = prompt_seen(switchboard)
    assert "French" in prompt and prompt.endswith("Hello everyone")


async def test_server_routing_settings_apply_to_the_everyday_commands(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.large.reply = "yes"
    async with switchboard.running():
        # Every request escalates on this server: the commands' forced tasks still go through the router.
        it = await fake.send_interaction("settings", {"value": 0.0}, subcommand="threshold", permissions=MANAGE_SERVER)
        await fake.wait_for_response(it)
        it = await fake.send_interaction("translate", {"text": "Hello", "to": "German"})
        translated = await switchboard.wait_answered(it)
        it = await fake.send_interaction("classify", {"text": "ok?", "labels": "yes, no"})
        classified = await switchboard.wait_answered(it)
    assert route_of(translated.content) == ("conversion", "large", LARGE)
    assert route_of(classified.content) == ("classification", "large", LARGE) and not switchboard.small.calls


async def test_translate_to_an_unknown_language_is_refused(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        it = await fake.send_interaction("translate", {"text": "Hello", "to": "Klingonese"})
        note = await private_note(fake, it)
    assert "I don't know the language `Klingonese`" in note and switchboard.model_calls() == 0


async def test_rewrite_asks_for_the_chosen_style(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = "Dear team, the meeting has moved to 3 pm."
    async with switchboard.running():
        it = await fake.send_interaction("rewrite", {"text": "meeting moved to 3 lol", "style": "formal"})
        summary = await switchboard.wait_answered(it)
    assert body_of(summary.content) == "Dear team, the meeting has moved to 3 pm."
    assert route_of(summary.content)[0] == "conversion"
    assert "formal" in prompt_seen(switchboard) and prompt_seen(switchboard).endswith("meeting moved to 3 lol")


# --- /summarize -----------------------------------------------------------------------------------------


async def test_summarize_text_a_linked_message_and_the_last_messages(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = "A short summary."
    async with switchboard.running():
        first = await fake.send_message("We ship on Friday.")
        await fake.send_message("QA needs two more days.")
        await fake.send_message("Then we ship Monday.")
        link = f"https://discord.com/channels/{fake.guild_id}/{fake.channel_id}/{first['id']}"
        seen = []
        for options in ({"last": 2}, {"text": "a long text"}, {"message": link}):
            it = await fake.send_interaction("summarize", options)
            summary = await switchboard.wait_answered(it)
            assert body_of(summary.content) == "A short summary."
            assert route_of(summary.content)[0] == "conversion"
            seen.append(prompt_seen(switchboard))
    user = fake.user.get("global_name") or fake.user["username"]
    assert seen[0].endswith(f"\n\n{user}: QA needs two more days.\n{user}: Then we ship Monday.")
    assert seen[1].endswith("a long text")
    assert seen[2].endswith("We ship on Friday.")


async def test_summarize_refuses_what_the_user_cannot_read(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        secret = fake.add_channel("mods-only")
        hidden = await fake.send_message("secret plans", channel_id=secret)
        other_guild = fake.add_guild("Elsewhere")
        elsewhere = fake.guilds[other_guild].channel_ids[0]
        await fake.deny(secret, fake.user, VIEW_CHANNEL | READ_MESSAGE_HISTORY)
        unreadable = f"https://discord.com/channels/{fake.guild_id}/{secret}/{hidden['id']}"
        cases = {
            unreadable: "You can't read the message history",
            f"https://discord.com/channels/{other_guild}/{elsewhere}/1234": "in another server",
            "https://example.com/not/a/link": "isn't a message link",
        }
        notes = []
        for link in cases:
            it = await fake.send_interaction("summarize", {"message": link})
            notes.append(await private_note(fake, it))
    for note, expected in zip(notes, cases.values(), strict=True):
        assert expected in note, note
    assert switchboard.model_calls() == 0 and "secret plans" not in " ".join(notes)


async def test_summarize_last_needs_the_users_read_message_history(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        await fake.send_message("something")
        it = await fake.send_interaction("summarize", {"last": 5}, permissions=str(VIEW_CHANNEL))
        note = await private_note(fake, it)
    assert "You need **Read Message History** in this channel" in note and switchboard.model_calls() == 0


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "Give one of `text`, `message`"),
        ({"text": "a", "last": 3}, "Give one of `text`, `message`"),
        ({"last": 0}, "`last` must be between 1 and 50 (you gave 0)"),
        ({"last": 51}, "`last` must be between 1 and 50 (you gave 51)"),
    ],
)
async def test_summarize_bad_input_gets_a_private_note(
    switchboard: Harness, options: dict[str, Any], expected: str
) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        it = await fake.send_interaction("summarize", options)
        note = await private_note(fake, it)
    assert expected in note and switchboard.model_calls() == 0


# --- /json ----------------------------------------------------------------------------------------------

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


async def test_json_answers_a_validated_document_in_a_json_block(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = '{"name": "Ada", "age": 36}'
    async with switchboard.running():
        it = await fake.send_interaction("json", {"prompt": "Ada Lovelace, 36", "schema": json.dumps(PERSON)})
        summary = await switchboard.wait_answered(it)
    block = re.fullmatch(r"```json\n(.*)\n```", body_of(summary.content), re.DOTALL)
    assert block is not None and json.loads(block.group(1)) == {"name": "Ada", "age": 36}
    assert route_of(summary.content) == ("grammar", "small", SMALL)
    assert '"required":["name","age"]' in prompt_seen(switchboard)  # the model is told the schema too


async def test_json_schema_from_a_file(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = '{"name": "Grace", "age": 85}'
    async with switchboard.running():
        file = fake.make_attachment("person.json", json.dumps(PERSON).encode(), content_type="application/json")
        it = await fake.send_interaction("json", {"prompt": "Grace Hopper", "schema_file": file})
        summary = await switchboard.wait_answered(it)
    assert '"name": "Grace"' in summary.content and route_of(summary.content)[0] == "grammar"


async def test_json_choices_and_regex(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        switchboard.small.reply = "blue"
        it = await fake.send_interaction("json", {"prompt": "colour of the sky?", "choices": "red, green, blue"})
        chosen = await switchboard.wait_answered(it)
        switchboard.small.reply = "2024-05-01"
        it = await fake.send_interaction("json", {"prompt": "a date", "regex": r"\d{4}-\d{2}-\d{2}"})
        matched = await switchboard.wait_answered(it)
    assert body_of(chosen.content) == "`blue`"
    assert body_of(matched.content) == "```\n2024-05-01\n```"


async def test_json_invalid_output_is_never_shown_as_valid(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = '{"name": "Ada"}'  # misses "age", twice
    async with switchboard.running():
        it = await fake.send_interaction("json", {"prompt": "Ada", "schema": json.dumps(PERSON)})
        summary = await switchboard.wait_answered(it)
    assert summary.content.startswith("⚠️") and "```json" not in summary.content
    assert len(switchboard.small.calls) == 2  # one repair attempt


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"schema": "{not json"}, "The schema isn't valid JSON"),
        ({}, "Give exactly one of"),
        ({"schema": "{}", "regex": "a+"}, "Give exactly one of"),
        ({"choices": "only"}, "at least 2 labels"),
        ({"regex": "(unclosed"}, "can't be used"),
        ({"schema": '{"type": "object", "properties": 5}'}, "can't be used"),
    ],
)
async def test_json_bad_input_gets_a_private_note(switchboard: Harness, options: dict[str, Any], expected: str) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        it = await fake.send_interaction("json", {"prompt": "p", **options})
        note = await private_note(fake, it)
    assert expected in note, note
    assert switchboard.model_calls() == 0


# --- message context menus ------------------------------------------------------------------------------


async def test_menus_are_registered_as_message_commands(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        await fake.sync()
        types = {c["name"]: c["type"] for c in fake.commands["global"].values()}
    for name in ("Translate", "Summarize", "Fix spelling and grammar", "Explain"):
        assert types[name] == 3
    for name in ("classify", "translate", "summarize", "rewrite", "json"):
        assert types[name] == 1


async def test_translate_menu_uses_the_invoking_users_locale_privately(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = "Guten Morgen"
    async with switchboard.running():
        message = await fake.send_message("Good morning")
        it = await fake.send_context_menu("Translate", message, locale="de")
        summary = await switchboard.wait_answered(it)
    assert summary.ephemeral and body_of(summary.content) == "Guten Morgen"
    assert route_of(summary.content)[0] == "conversion"
    assert "German" in prompt_seen(switchboard) and prompt_seen(switchboard).endswith("Good morning")
    assert summary.original is not None and summary.original["type"] == 23  # CONTEXT_MENU_COMMAND
    assert summary.original["interaction_metadata"]["target_message_id"] == message["id"]


async def test_summarize_menu(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = "They agree."
    async with switchboard.running():
        message = await fake.send_message("A long message about agreeing on many things.")
        it = await fake.send_context_menu("Summarize", message)
        summary = await switchboard.wait_answered(it)
    assert body_of(summary.content) == "They agree." and route_of(summary.content)[0] == "conversion"
    assert prompt_seen(switchboard).endswith("A long message about agreeing on many things.")


async def test_fix_menu_shows_what_changed_as_a_diff(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = "I have gone to the store yesterday and bought bread."
    async with switchboard.running():
        message = await fake.send_message("I has went to teh store yesterday and bought bread.")
        it = await fake.send_context_menu("Fix spelling and grammar", message)
        summary = await switchboard.wait_answered(it)
    body = body_of(summary.content)
    assert body.startswith("I have gone to the store yesterday and bought bread.\n```diff\n")
    assert "- I has went to teh store yesterday and …\n+ I have gone to the store yesterday and …" in body
    assert route_of(summary.content)[0] == "conversion" and summary.ephemeral
    # The model's text is not streamed as it comes: every edit already shows the diff.
    edits = [s.content or "" for s in summary.steps if s.kind == "edit_original"]
    assert edits and all("```diff" in e for e in edits)


async def test_fix_menu_with_nothing_to_fix(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.small.reply = "All good here."
    async with switchboard.running():
        message = await fake.send_message("All good here.")
        it = await fake.send_context_menu("Fix spelling and grammar", message)
        summary = await switchboard.wait_answered(it)
    assert body_of(summary.content) == "No spelling or grammar mistakes found."


async def test_explain_menu_routes_code_as_code_and_text_as_chat(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.large.reply = "It adds one."
    switchboard.small.reply = "It means hello."
    async with switchboard.running():
        code = await fake.send_message("```python\ndef inc(x):\n    return x + 1\n```")
        it = await fake.send_context_menu("Explain", code)
        explained_code = await switchboard.wait_answered(it)
        prose = await fake.send_message("Howdy, partner")
        it = await fake.send_context_menu("Explain", prose)
        explained_prose = await switchboard.wait_answered(it)
    assert route_of(explained_code.content)[:2] == ("code", "large")
    assert route_of(explained_prose.content)[:2] == ("chat", "small")


async def test_menu_on_a_message_without_text_is_refused(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        message = await fake.send_message("", attachments=[("cat.png", b"\x89PNG\r\n")])
        it = await fake.send_context_menu("Translate", message)
        note = await private_note(fake, it)
    assert note == "That message has no text to translate." and switchboard.model_calls() == 0


async def test_everyday_commands_share_the_rate_limit(switchboard: Harness) -> None:
    fake = switchboard.fake
    async with switchboard.running():
        assert switchboard.store is not None
        await switchboard.store.update_guild_config(
            int(fake.guild_id), 1, "test", rate_limit_per_minute=1, rate_limit_burst=1
        )
        switchboard.small.reply = "yes"
        it = await fake.send_interaction("classify", {"text": "ok?", "labels": "yes, no"})
        await switchboard.wait_answered(it)
        it = await fake.send_interaction("json", {"prompt": "p", "choices": "yes, no"})
        note = await private_note(fake, it)
    assert note.startswith("You're sending requests too fast")
