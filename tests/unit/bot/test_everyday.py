"""The everyday commands' input parsing and formatting (bot/everyday.py), without Discord."""

from __future__ import annotations

import pytest

from bot.answering import UserError
from bot.everyday import (
    MessageLink,
    explain_prompt,
    format_labels,
    lines_of,
    parse_labels,
    parse_message_link,
    transcript,
    word_diff,
)
from inference.languages import LANGUAGES, find, for_locale, matching
from inference.structured import LabelResult


@pytest.mark.parametrize(
    ("link", "expected"),
    [
        ("https://discord.com/channels/1/2/3", MessageLink(1, 2, 3)),
        ("<https://ptb.discord.com/channels/1/2/3>", MessageLink(1, 2, 3)),
        ("https://discordapp.com/channels/@me/2/3/", MessageLink(None, 2, 3)),
    ],
)
def test_message_links(link: str, expected: MessageLink) -> None:
    assert parse_message_link(link) == expected


@pytest.mark.parametrize("link", ["https://discord.com/channels/1/2", "http://discord.com/channels/1/2/3", "hi"])
def test_not_message_links(link: str) -> None:
    with pytest.raises(UserError, match="isn't a message link"):
        parse_message_link(link)


def test_labels_are_trimmed_and_kept_in_order() -> None:
    assert parse_labels(" spam ,ham,, eggs ") == ["spam", "ham", "eggs"]
    with pytest.raises(UserError, match="at most 64"):
        parse_labels("a, " + "b" * 65)


def test_lines_skip_blanks_and_are_bounded() -> None:
    assert lines_of("f.txt", "\ufeffa\n\n b \r\nc".encode()) == ["a", "b", "c"]
    with pytest.raises(UserError, match="isn't UTF-8"):
        lines_of("f.txt", b"\xff\xfe\xfa")


def test_transcript_keeps_the_newest_messages_that_fit() -> None:
    messages = [("ann", "first"), ("bob", "second\nline"), ("cy", "third")]
    assert transcript(messages, 1000) == ("ann: first\nbob: second line\ncy: third", 0)
    assert transcript(messages, 30) == ("bob: second line\ncy: third", 1)


def test_word_diff_shows_each_change_with_context() -> None:
    before = "one two three four five six seven eight nine ten eleven twelve"
    after = "one two three four five SIX seven eight nine ten eleven twelve"
    assert (
        word_diff(before, after)
        == "- … three four five six seven eight nine …\n+ … three four five SIX seven eight nine …"
    )
    assert word_diff("same  text", "same text") == ""


def test_explain_tells_code_from_prose() -> None:
    assert explain_prompt("```js\nx()\n```")[1] == "code"
    assert explain_prompt("import os\nprint(os.getcwd());\nx = 1;")[1] == "code"
    assert explain_prompt("The meeting moved to Friday.\nBring snacks.")[1] == "chat"


def test_languages_by_code_name_and_locale() -> None:
    assert find("FR") == find("french") and find("fr") is not None
    assert for_locale("pt-BR").name == "Portuguese (Brazil)" and for_locale("es-419").code == "es"
    assert for_locale("zh-CN").code == "zh" and for_locale("xx-YY").code == "en"
    assert [lang.code for lang in matching("span")] == ["es"]
    assert len(matching("")) == 25 and len({lang.code for lang in LANGUAGES}) == len(LANGUAGES)


def test_label_scores_are_shown_only_from_log_probabilities() -> None:
    plain = LabelResult(["spam"], {"spam": 1.0, "ham": 0.0})
    scored = LabelResult(["spam"], {"spam": 0.8, "ham": 0.15})
    assert format_labels(plain, every_score=True) == "`spam`"
    assert format_labels(scored, every_score=True) == "`spam`\nspam 0.80 · ham 0.15"
    assert format_labels(scored, every_score=False) == "`spam` 0.80"
    assert format_labels(LabelResult([], {"a": 0.0}), every_score=True) == "*(none of the labels)*"
