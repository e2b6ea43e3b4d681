"""bot/knowledge.py without a gateway: file checks before download, message links, progress edits, source names."""

from __future__ import annotations

import pytest

from bot.answering import UserError
from bot.knowledge import check_file, parse_message_link, progress_editor, source_name

MB = 1024 * 1024


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("notes.txt", "text/plain; charset=utf-8"),
        ("README.md", "text/markdown"),
        ("README.md", None),
        ("guide.pdf", "application/pdf"),
        ("page.HTML", "text/html"),
        ("page.htm", "application/octet-stream"),
    ],
)
def test_supported_files_pass(name: str, ctype: str | None) -> None:
    check_file(name, ctype, 1000, MB)


@pytest.mark.parametrize(
    ("name", "ctype"),
    [("tool.exe", "application/x-msdownload"), ("photo.png", "image/png"), ("fake.pdf", "image/png"), ("noext", None)],
)
def test_unsupported_types_are_refused(name: str, ctype: str | None) -> None:
    with pytest.raises(UserError, match="unsupported type"):
        check_file(name, ctype, 10, MB)


def test_too_large_names_both_sizes() -> None:
    with pytest.raises(UserError, match=r"too large \(2 MB\); files may be at most 1 MB"):
        check_file("big.txt", "text/plain", 2 * MB, MB)


def test_message_links() -> None:
    assert parse_message_link("https://discord.com/channels/1/22/333") == (1, 22, 333)
    assert parse_message_link(" <https://ptb.discord.com/channels/1/22/333> ") == (1, 22, 333)
    assert parse_message_link("https://discordapp.com/channels/1/22/333") == (1, 22, 333)
    for bad in ("not a link", "https://discord.com/channels/@me/22/333", "https://evil.com/channels/1/2/3"):
        with pytest.raises(UserError, match="not a message link"):
            parse_message_link(bad)


def test_source_names() -> None:
    assert source_name("channel", 5) == "channel:5"
    assert source_name("pins", 5) == "pins:5"
    assert source_name("message", 5, 6) == "message:5/6"


async def test_progress_edits_about_ten_times_and_always_the_end() -> None:
    shown: list[str] = []

    async def edit(text: str) -> None:
        shown.append(text)

    progress = progress_editor(edit, "`big.md`")
    for done in range(1, 1001):
        await progress(done, 1000)
    assert len(shown) <= 12
    assert shown[0] == "⏳ Indexing `big.md`: indexed 1/1000 chunks"
    assert shown[-1] == "⏳ Indexing `big.md`: indexed 1000/1000 chunks"
