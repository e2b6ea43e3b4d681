"""Chunking: headings kept as context and position, message boundaries kept, PDF pages, type sniffing."""

from __future__ import annotations

import itertools

import pytest

from inference.errors import BadRequest
from inference.knowledge.base import MessageText
from inference.knowledge.chunking import (
    MAX_FILE_BYTES,
    TARGET_CHARS,
    DocumentRejected,
    chunk_file,
    chunk_markdown,
    chunk_messages,
    html_to_text,
    split_text,
)

RULES = """# Club rules

Be kind.

## Meetings

Meetings are on Thursdays at 18:00 in room B12.
Bring your badge.

## Fees
Fees are 5 EUR.
"""


def test_markdown_chunks_carry_their_heading_path_and_lines() -> None:
    chunks = chunk_markdown(RULES)
    meetings = next(c for c in chunks if "B12" in c.text)
    assert meetings.context == "Club rules > Meetings"
    assert meetings.position == "section 'Meetings' (lines 7-8)"
    assert "Fees" not in meetings.text  # a heading starts a new chunk
    fees = next(c for c in chunks if "5 EUR" in c.text)
    assert fees.context == "Club rules > Fees" and fees.position == "section 'Fees' (line 11)"


def test_setext_headings_and_fenced_hashes() -> None:
    text = "Intro\n=====\nHello.\n\n```\n# not a heading\n```\n"
    (chunk,) = chunk_markdown(text)
    assert chunk.context == "Intro" and "# not a heading" in chunk.text


def test_long_sections_split_near_the_target_with_overlap() -> None:
    text = " ".join(f"Sentence number {i} says something." for i in range(200))
    pieces = split_text(text)
    assert len(pieces) > 3
    assert all(len(p) <= TARGET_CHARS + 100 for p in pieces)
    # each piece after the first starts with the end of the previous one
    for before, after in itertools.pairwise(pieces):
        assert after.split(" ", 1)[0] in before[-100:]


def test_html_keeps_headings_and_drops_scripts() -> None:
    html = "<html><head><title>t</title></head><body><h1>Guide</h1><p>Hello <b>there</b>.</p>"
    html += "<h2>Setup</h2><p>Run it.</p><script>alert('x')</script></body></html>"
    assert "# Guide" in html_to_text(html) and "alert" not in html_to_text(html)
    chunks = chunk_file("guide.html", html.encode())
    assert [c.context for c in chunks] == ["Guide", "Guide > Setup"]
    # a page saved as .txt is still read as HTML (the type is sniffed from the bytes too)
    assert chunk_file("saved.txt", b"<!DOCTYPE html>" + html.encode()) == chunks


def test_pdf_pages_become_positions() -> None:
    pypdf = pytest.importorskip("pypdf")
    from tests.unit.inference.knowledge.pdf import tiny_pdf

    data = tiny_pdf(["Page one text about apples.", "Second page mentions room B12."])
    assert pypdf.PdfReader.__name__  # the library that reads it
    chunks = chunk_file("doc.pdf", data)
    assert [(c.position, "B12" in c.text) for c in chunks] == [("page 1", False), ("page 2", True)]


def test_messages_are_one_chunk_each_with_author_and_jump_link() -> None:
    messages = [
        MessageText(1, 10, "ann", "First rule: be kind.", "https://discord.com/channels/5/10/1"),
        MessageText(2, 10, "bob", "Second rule: " + "no spam. " * 150, "https://discord.com/channels/5/10/2"),
    ]
    chunks = chunk_messages(messages)
    assert chunks[0].text == "First rule: be kind." and chunks[0].context == "ann"
    assert chunks[0].position.endswith("/10/1") and chunks[0].message_id == 1 and chunks[0].channel_id == 10
    long = [c for c in chunks if c.message_id == 2]
    assert len(long) > 1 and all("First rule" not in c.text for c in long)


@pytest.mark.parametrize(
    ("name", "data", "words"),
    [
        ("virus.exe", b"MZ...", "only"),
        ("fake.pdf", b"hello", "not a PDF"),
        ("notes.txt", b"%PDF-1.4 binary", "binary"),
        ("latin.txt", "café".encode("latin-1"), "UTF-8"),
    ],
)
def test_unsupported_or_mislabelled_files_are_refused(name: str, data: bytes, words: str) -> None:
    with pytest.raises(DocumentRejected, match=words) as info:
        chunk_file(name, data)
    assert isinstance(info.value, BadRequest) and words in info.value.user_text


def test_too_large_files_are_refused() -> None:
    with pytest.raises(DocumentRejected, match="too large"):
        chunk_file("big.txt", b"a" * (MAX_FILE_BYTES + 1))


def test_a_pdf_with_too_many_pages_is_refused_before_reading_them(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pypdf")
    from inference.knowledge import chunking
    from tests.unit.inference.knowledge.pdf import tiny_pdf

    monkeypatch.setattr(chunking, "MAX_PDF_PAGES", 2)
    assert len(chunking.chunk_file("two.pdf", tiny_pdf(["one", "two"]))) == 2
    with pytest.raises(DocumentRejected, match="3 pages; at most 2"):
        chunking.chunk_file("three.pdf", tiny_pdf(["one", "two", "three"]))
