"""Sources into chunks: text, Markdown, HTML, PDF and Discord messages.

- Text and Markdown are split on headings (Markdown ``#`` lines, and underlined setext headings); each chunk
  carries its heading path as context and its position as "section 'Meetings' (lines 3-5)".
- HTML goes through BeautifulSoup (scripts and styles dropped) into text with Markdown-style headings.
- PDF goes through pypdf, page by page; the position is "page N".
- Each Discord message is its own chunk (never merged with another: message boundaries are kept), split only
  when long; the context is the author and the position the message's jump link.

Chunks aim at :data:`TARGET_CHARS` (~500-800 characters) and split on paragraph, then line, then sentence
boundaries, with a small overlap (:data:`OVERLAP_CHARS`) between the pieces of one section.
The type comes from the name and is checked against the bytes (a PDF must start with ``%PDF-``; text must
decode as UTF-8), so a renamed binary is refused with a clear message.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePath

from inference.errors import BadRequest
from inference.knowledge.base import Chunk, MessageText

#: Largest file accepted for indexing (checked before download by the bot, and again here).
MAX_FILE_BYTES = 10 * 1024 * 1024
#: Pages read from one PDF: text extraction costs time per page, and a small file can declare thousands.
MAX_PDF_PAGES = 500
TARGET_CHARS = 700
MIN_CHARS = 200
OVERLAP_CHARS = 80
SUPPORTED_SUFFIXES = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".pdf": "pdf"}
SUPPORTED_SUFFIXES |= {".html": "html", ".htm": "html"}


class DocumentRejected(BadRequest):
    """A file that can't be indexed (unsupported type, too large, unreadable); the message says why."""

    short = "document rejected"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.user_text = message


def kind_of(name: str) -> str:
    """``text``, ``markdown``, ``html`` or ``pdf`` from the file name; DocumentRejected otherwise."""
    suffix = PurePath(name).suffix.lower()
    kind = SUPPORTED_SUFFIXES.get(suffix)
    if kind is None:
        allowed = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise DocumentRejected(f"{name!r} can't be indexed: only {allowed} files are supported")
    return kind


def check_size(name: str, size: int) -> None:
    if size > MAX_FILE_BYTES:
        raise DocumentRejected(
            f"{name!r} is too large to index ({size / 1e6:.1f} MB; the limit is {MAX_FILE_BYTES / 1e6:.0f} MB)"
        )


def chunk_file(name: str, data: bytes) -> list[Chunk]:
    """Chunks of a file; DocumentRejected for an unsupported, oversized or unreadable one."""
    kind = kind_of(name)
    check_size(name, len(data))
    looks_pdf = data.lstrip()[:5] == b"%PDF-"
    if kind == "pdf":
        if not looks_pdf:
            raise DocumentRejected(f"{name!r} is not a PDF (its content doesn't start like one)")
        return chunk_pdf(data)
    if looks_pdf or b"\x00" in data[:4096]:
        raise DocumentRejected(f"{name!r} looks like a binary file, not {kind}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DocumentRejected(f"{name!r} is not UTF-8 text") from None
    if kind == "html" or (kind == "text" and re.match(r"\s*<(!doctype html|html)[\s>]", text, re.IGNORECASE)):
        return chunk_markdown(html_to_text(text))
    return chunk_markdown(text)


# --- splitting ----------------------------------------------------------------------------------------


def split_text(text: str, target: int = TARGET_CHARS, overlap: int = OVERLAP_CHARS) -> list[str]:
    """Pieces of about ``target`` characters, cut at paragraph/line/sentence/word boundaries, each after the
    first starting with up to ``overlap`` characters of the previous piece's end (at a word boundary)."""
    text = text.strip()
    if len(text) <= target:
        return [text] if text else []
    units = _units(text, target)
    pieces: list[str] = []
    current = ""
    for unit in units:
        if current and len(current) + len(unit) > target:
            pieces.append(current.strip())
            tail = current[-overlap:]
            cut = tail.find(" ")
            current = (tail[cut + 1 :] if cut >= 0 else "") + unit
        else:
            current += unit
    if current.strip():
        pieces.append(current.strip())
    return pieces


def _units(text: str, target: int) -> list[str]:
    """Split into paragraph units (keeping separators), breaking any unit longer than ``target`` further."""
    out: list[str] = []
    for para in re.split(r"(?<=\n\n)", text):
        if len(para) <= target:
            out.append(para)
            continue
        for line in re.split(r"(?<=\n)", para):
            if len(line) <= target:
                out.append(line)
                continue
            for sentence in re.split(r"(?<=[.!?])\s+", line):
                while len(sentence) > target:
                    cut = sentence.rfind(" ", 0, target)
                    cut = cut if cut > target // 2 else target
                    out.append(sentence[:cut] + " ")
                    sentence = sentence[cut:].lstrip()
                out.append(sentence + " ")
    return out


# --- Markdown / text ----------------------------------------------------------------------------------

_ATX = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SETEXT = re.compile(r"^(=+|-+)\s*$")


@dataclass
class _Section:
    path: tuple[str, ...]
    first: int  # 1-based line numbers
    last: int
    lines: list[str]


def _sections(text: str) -> list[_Section]:
    lines = text.splitlines()
    sections: list[_Section] = []
    path: list[tuple[int, str]] = []
    current = _Section((), 1, 0, [])
    in_fence = False

    def start(level: int, title: str, lineno: int) -> None:
        nonlocal current
        sections.append(current)
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, title))
        current = _Section(tuple(t for _, t in path), lineno, lineno, [])

    for i, line in enumerate(lines, start=1):
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        heading = None if in_fence else _ATX.match(line)
        if heading:
            start(len(heading.group(1)), heading.group(2).strip(), i)
            continue
        nxt = lines[i] if i < len(lines) else ""
        if (
            not in_fence
            and line.strip()
            and _SETEXT.match(nxt)
            and (not current.lines or not current.lines[-1].strip())
            and len(nxt.strip()) >= 3
        ):
            start(1 if nxt.strip()[0] == "=" else 2, line.strip(), i)
            continue
        if not in_fence and _SETEXT.match(line) and sections and current.first == i - 1 and not current.lines:
            current.last = i
            continue  # the underline of the setext heading just started
        if not current.lines:
            current.first = i
        current.lines.append(line)
        current.last = i
    sections.append(current)
    return [s for s in sections if any(line.strip() for line in s.lines)]


def chunk_markdown(text: str) -> list[Chunk]:
    """Heading-aware chunks of Markdown or plain text (plain text is Markdown without headings)."""
    chunks: list[Chunk] = []
    for section in _sections(text):
        # Lines of each piece, for the position: find each piece's lines by walking the section.
        body = "\n".join(section.lines)
        context = " > ".join(section.path)
        offset_line = section.first
        for piece in split_text(body):
            start = _line_of(section.lines, piece, offset_line, section.first)
            end = start + piece.count("\n")
            offset_line = start
            where = f"section '{section.path[-1]}' " if section.path else ""
            position = f"{where}(lines {start}-{end})" if end > start else f"{where}(line {start})"
            chunks.append(Chunk(text=piece, position=position.strip(), context=context))
    return chunks


def _line_of(lines: list[str], piece: str, at_least: int, first: int) -> int:
    """The 1-based file line where ``piece`` starts (searching from ``at_least``)."""
    head = piece.splitlines()[0].strip() if piece else ""
    for idx in range(max(at_least - first, 0), len(lines)):
        if head and head[:40] in lines[idx]:
            return first + idx
    return at_least


# --- HTML -----------------------------------------------------------------------------------------------


def html_to_text(html: str) -> str:
    """Readable text of an HTML page with its headings as Markdown headings (so sections are kept)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "head"]):
        tag.decompose()
    for level in range(1, 7):
        for tag in soup.find_all(f"h{level}"):
            title = " ".join(tag.get_text(" ").split())
            tag.replace_with(f"\n\n{'#' * level} {title}\n\n")
    for tag in soup.find_all(["p", "div", "li", "tr", "br", "section", "article", "pre", "blockquote"]):
        tag.insert_after("\n")
    text = soup.get_text()
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# --- PDF ------------------------------------------------------------------------------------------------


def chunk_pdf(data: bytes) -> list[Chunk]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if len(reader.pages) > MAX_PDF_PAGES:
            raise DocumentRejected(
                f"the PDF has {len(reader.pages)} pages; at most {MAX_PDF_PAGES} can be indexed (split it first)"
            )
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise DocumentRejected(f"the PDF can't be read: {exc}") from None
    chunks = [
        Chunk(text=piece, position=f"page {number}")
        for number, page in enumerate(pages, start=1)
        for piece in split_text(page)
    ]
    if not chunks:
        raise DocumentRejected("the PDF has no extractable text (a scanned PDF needs OCR first)")
    return chunks


# --- Discord messages -----------------------------------------------------------------------------------


def chunk_messages(messages: Iterable[MessageText]) -> list[Chunk]:
    """One chunk per message (split only when long); context = author, position = the jump link."""
    return [
        Chunk(text=piece, position=m.jump_url, context=m.author, message_id=m.id, channel_id=m.channel_id)
        for m in messages
        for piece in split_text(m.content)
    ]


def chunk_texts(chunks: Sequence[Chunk]) -> list[str]:
    """What gets embedded for each chunk: the context (heading path or author) then the text."""
    return [f"{c.context}\n{c.text}" if c.context else c.text for c in chunks]
