"""Turning model text into Discord messages: mention safety, 2000-character chunks, streaming edits.

Everything here is Discord-agnostic except the ``AllowedMentions`` constants: the streaming driver talks
to Discord only through two callables the cog hands it, so it can be tested with plain recording fakes
and a fake clock.

Code fences follow CommonMark (which is what models write): a fence is a line of at most
``_MAX_FENCE_LINE`` characters made of optional indentation, three or more backticks and an info string
without backticks (its first word is the language tag); it is closed by a line of at least as many
backticks and nothing else. A fence left open at the end of the text is closed, so an answer cut off by
the token limit still renders as code.
"""

from __future__ import annotations

import asyncio
import bisect
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import NamedTuple

import discord

__all__ = [
    "DISCORD_LIMIT",
    "REPLY_MENTIONS",
    "SAFE_MENTIONS",
    "Clock",
    "Edit",
    "Send",
    "StreamingReply",
    "Upload",
    "footer",
    "neutralize_mentions",
    "split_message",
]

DISCORD_LIMIT = 2000

#: For every message that carries model text: nothing in it may ping (discord.py's own default
#: would let ``@everyone`` through).
SAFE_MENTIONS = discord.AllowedMentions.none()
#: For the *first* message of a reply sent with ``Message.reply``: pings the asker and nobody else.
#: Model text is still neutralised, so the only possible ping is the reply reference itself.
REPLY_MENTIONS = discord.AllowedMentions(everyone=False, users=False, roles=False, replied_user=True)

# --------------------------------------------------------------------------------------------------
# Mentions

_ZWSP = "\u200b"
# A zero-width space after the sigil keeps the text readable but stops Discord from parsing a mention.
# Lookaheads rather than whole-mention matches: an unfinished "<@12" is defused too, which is harmless.
_MENTION_RE = re.compile(r"@(?=everyone|here)|(?<=<)@(?=[!&]?\d)|(?<=<)#(?=\d)", re.IGNORECASE)


def neutralize_mentions(text: str) -> str:
    """Defuse ``@everyone``, ``@here`` and ``<@id>``/``<@!id>``/``<@&id>``/``<#id>`` so they render as text.

    Idempotent. Used on all model output, belt and braces with :data:`SAFE_MENTIONS`.
    """
    return _MENTION_RE.sub(lambda m: m.group() + _ZWSP, text)


def _raw_offset(raw: str, neutral_offset: int) -> int:
    """Map an offset in ``neutralize_mentions(raw)`` back to ``raw`` (each insertion is one ZWSP)."""
    inserted = 0
    for m in _MENTION_RE.finditer(raw):
        if neutral_offset <= m.end() + inserted:
            break
        inserted += 1
    return neutral_offset - inserted


# --------------------------------------------------------------------------------------------------
# Splitting

# Fence lines longer than this are treated as text: it bounds the fence lines we add, so a chunk always
# has room for content, and a line of 5000 backticks cannot demand a 5000-backtick closing fence.
_MAX_FENCE_LINE = 64
_LANG_RE = re.compile(r"[\w+\-.#]{1,32}")
_MIN_LIMIT = 200  # room for a reopened fence, a closing fence and real content


class _Fence(NamedTuple):
    ticks: int
    lang: str


def _fence_like(line: str) -> bool:
    """Could this line (no newline) be a fence in some state? Cuts must never create one."""
    line = line.rstrip("\r")
    return len(line) <= _MAX_FENCE_LINE and line.lstrip(" \t").startswith("```")


def _classify(line: str, fence: _Fence | None) -> _Fence | None:
    """The fence state after ``line`` (without its newline), given the state before it."""
    if not _fence_like(line):
        return fence
    stripped = line.rstrip("\r").lstrip(" \t")
    ticks = len(stripped) - len(stripped.lstrip("`"))
    info = stripped[ticks:]
    if fence is None:
        if "`" in info:  # CommonMark: "```x```" on one line is inline code, not a fence
            return None
        words = info.split()
        lang = words[0] if words and _LANG_RE.fullmatch(words[0]) else ""
        return _Fence(ticks, lang)
    if ticks >= fence.ticks and not info.strip():
        return None
    return fence


def _scan(text: str, fence: _Fence | None = None) -> _Fence | None:
    """The fence state at the end of ``text``, starting from ``fence``."""
    for line in text.split("\n"):
        fence = _classify(line, fence)
    return fence


def _opener(fence: _Fence) -> str:
    return "`" * fence.ticks + fence.lang + "\n"


@dataclass(frozen=True)
class _Piece:
    """One message's worth: ``body`` is a slice of the original text starting at ``start``."""

    start: int
    body: str
    opened: _Fence | None  # fence open where the body starts: reopened by a prefix line
    closed: _Fence | None  # fence open where the body ends: closed by a suffix line

    def render(self, tail: str = "") -> str:
        """The message text; ``tail`` (a cursor) goes after the body, inside any open code block."""
        text = self.body + tail
        if self.closed is not None:
            text += ("" if text.endswith("\n") else "\n") + "`" * self.closed.ticks
        return (_opener(self.opened) if self.opened else "") + text

    @property
    def blank(self) -> bool:
        # Blank bodies only occur outside code (a fence change means a fence line), so dropping one
        # never unbalances anything.
        return self.opened is None and self.closed is None and not self.body.strip()


def _suffix_len(fence: _Fence | None, ends_with_newline: bool) -> int:
    return 0 if fence is None else fence.ticks + (0 if ends_with_newline else 1)


class _Lines:
    """Fence state at each line start of ``text[pos:end]``, for cheap state look-ups at cut points."""

    def __init__(self, text: str, pos: int, end: int, fence: _Fence | None) -> None:
        self.starts = [pos]
        self.fences = [fence]
        # Whether the open code block has visible content by this line (a block that is only its
        # opener or only blank lines does not render in Discord, so cuts avoid making one).
        self.content = [False]
        has = False
        i = pos
        while True:
            nl = text.find("\n", i, end)
            if nl < 0:
                break
            line = text[i:nl]
            new = _classify(line, fence)
            if new != fence:
                has = False
            elif fence is not None and line.strip():
                has = True
            fence = new
            i = nl + 1
            self.starts.append(i)
            self.fences.append(fence)
            self.content.append(has)

    def at(self, text: str, p: int) -> tuple[int, _Fence | None, bool]:
        """(start of the line holding ``p``, fence state at ``p``, code content before ``p``)."""
        k = bisect.bisect_right(self.starts, p) - 1
        ls = self.starts[k]
        # A line cut mid-way is never a fence line (see valid() in _choose_cut), so it does not change the state.
        return ls, self.fences[k], self.content[k] or bool(text[ls:p].strip())


_CLOSER_AHEAD = re.compile(r"(?:[ \t]*\r?\n)*([ \t]*(`{3,})[ \t]*\r?)(?:\n|\Z)")


def _split(text: str, limit: int, opened: _Fence | None = None, *, partial: bool = False) -> list[_Piece]:
    """Cut ``text`` into pieces whose rendering is at most ``limit`` characters.

    ``opened`` is the fence open at the start of ``text`` (streaming continues mid-block).
    ``partial`` means more text may follow, so a cut is never made where the line after it is still
    short enough to turn into a fence line.
    """
    pieces: list[_Piece] = []
    pos = 0
    fence = opened
    n = len(text)
    while pos < n:
        prefix = len(_opener(fence)) if fence else 0
        if prefix + (n - pos) <= limit:  # the rest may fit, closing fence included
            end_fence = _scan(text[pos:], fence)
            if prefix + (n - pos) + _suffix_len(end_fence, text.endswith("\n")) <= limit:
                pieces.append(_Piece(pos, text[pos:], fence, end_fence))
                break
        window = min(n, pos + limit - prefix)
        lines = _Lines(text, pos, window, fence)
        cut = _choose_cut(text, pos, window, limit - prefix, lines, partial)
        _, cut_fence, _ = lines.at(text, cut)
        pieces.append(_Piece(pos, text[pos:cut], fence, cut_fence))
        pos, fence = cut, cut_fence
    return pieces


def _choose_cut(text: str, pos: int, window: int, budget: int, lines: _Lines, partial: bool) -> int:
    """The best cut in ``(pos, window]``: paragraph > line > space > anywhere, biggest first."""

    def valid(p: int, strict: bool) -> bool:
        ls, fence, has_content = lines.at(text, p)
        at_line_start = text[p - 1] == "\n"
        if not at_line_start:
            # Mid-line: the line must not be a fence line (they are short, so never need cutting),
            # and neither side of the cut may look like one once it starts or ends a message.
            le = text.find("\n", p)
            le = n if le < 0 else le
            if le - p <= _MAX_FENCE_LINE + 1:  # +1 for a "\r"
                if partial and le == n:  # the line may still grow into "```lang"
                    return False
                if _fence_like(text[p:le]) or _fence_like(text[text.rfind("\n", 0, p) + 1 : le]):
                    return False
            if _fence_like(text[ls:p]):
                return False
        if (p - pos) + _suffix_len(fence, at_line_start) > budget:
            return False
        if strict and fence is not None:
            # Don't leave an empty code block on either side of the cut.
            if not has_content:
                return False
            m = _CLOSER_AHEAD.match(text, p) if at_line_start else None
            if m and len(m.group(1).rstrip("\r")) <= _MAX_FENCE_LINE and len(m.group(2)) >= fence.ticks:
                return False
        return True

    def after(seps: tuple[str, ...]) -> Iterator[int]:
        """Positions just after any of ``seps`` in ``(pos, window]``, descending."""
        hi = window
        while True:
            best = -1
            for sep in seps:
                i = text.rfind(sep, pos, hi)
                if i >= 0:
                    best = max(best, i + len(sep))
            if best <= pos:
                return
            yield best
            hi = best - 1

    n = len(text)
    half = pos + (window - pos) // 2
    kinds = (("\n\n",), ("\n",), (" ", "\t"))
    for strict in (True, False):
        # The strict pass only avoids cosmetic flaws, so it gives up early (a block of blank lines
        # would otherwise make every candidate fail); the relaxed pass rarely rejects more than a few.
        tries = 200 if strict else None
        for seps in kinds:  # a natural boundary in the second half of the window
            for p in islice(after(seps), tries):
                if p < half:
                    break
                if valid(p, strict):
                    return p
        for seps in kinds[1:]:  # any natural boundary beats breaking a word
            for p in islice(after(seps), tries):
                if valid(p, strict):
                    return p
        for p in islice(range(window, pos, -1), tries):
            if valid(p, strict):
                return p
    # Unreachable for limit >= _MIN_LIMIT; a hard cut that fits keeps the loop finite regardless.
    return pos + max(1, budget - _MAX_FENCE_LINE - 1)


def split_message(text: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Split ``text`` into Discord messages of at most ``limit`` characters.

    Cuts prefer paragraph, then line, then space boundaries. A cut inside a code block closes the
    fence at the end of the chunk and reopens it, with the same language tag, at the start of the next;
    apart from those added fence lines the chunks concatenate back to ``text``. Chunks that would be
    only whitespace are dropped, so blank text gives ``[]``. Mentions are not touched: see
    :func:`neutralize_mentions`.
    """
    if limit < _MIN_LIMIT:
        raise ValueError(f"limit must be at least {_MIN_LIMIT}")
    return [p.render() for p in _split(text, limit) if not p.blank]


# --------------------------------------------------------------------------------------------------
# Footer


def _seconds(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s"


def footer(task: str, tier: str, model: str, seconds: float, note: str | None = None) -> str:
    """One subtext line saying what answered, e.g. ``-# chat · small · smollm2-onnx · 1.2s``."""
    parts = [task, tier, model, _seconds(seconds)]
    if note:
        parts.append(note)
    # One line (a newline would end the subtext) and no markdown from model names like "llama_3_8b".
    fields = (discord.utils.escape_markdown(" ".join(str(p).split())) for p in parts)
    return neutralize_mentions("-# " + " · ".join(fields))


# --------------------------------------------------------------------------------------------------
# Streaming

#: Replace the content of one message.
Edit = Callable[[str], Awaitable[None]]
#: Post a new follow-up message with this content; returns the :data:`Edit` for that message.
Send = Callable[[str], Awaitable[Edit]]
#: Seconds from an arbitrary origin, like :func:`time.monotonic`.
Clock = Callable[[], float]
#: Post a new follow-up message with this content and one file (filename, bytes).
Upload = Callable[[str, str, bytes], Awaitable[None]]

_MAX_NOTE = 200  # footers and error notes are cut to this, so they always fit beside some text


class StreamingReply:
    """Stream an answer into Discord messages, editing at most once per ``interval`` seconds.

    The first message already exists (a deferred interaction response or a placeholder); ``edit``
    replaces its content. When the text outgrows it, the full part is finalised there and the rest goes
    to follow-ups made with ``send``, whose returned ``Edit`` keeps updating the newest message. Finished
    messages are never touched again. All text is passed through :func:`neutralize_mentions`.

    Pending text is shown on the next :meth:`push` past the interval, or by :meth:`finish`/:meth:`fail`
    (which write at once). Writes run one at a time, in order, in a task: :meth:`push` waits for a write at
    most ``patience`` seconds (event-loop time; None: always), so a write Discord holds back (a 429 and its
    ``Retry-After``) does not stall the model's stream. Text pushed meanwhile is coalesced into the next
    write (the latest text wins) and :meth:`finish` always writes the complete text last.

    Exceptions from ``edit``/``send`` propagate to the caller: from the :meth:`push` that wrote, or from
    the next :meth:`push`, :meth:`finish` or :meth:`fail` when the write was still running.

    ``max_messages`` bounds the reply: a longer answer ends, in its last message, with a short note and
    the footer, and (given ``upload``) the whole answer goes along as a file.
    """

    def __init__(
        self,
        edit: Edit,
        send: Send,
        *,
        clock: Clock = time.monotonic,
        interval: float = 1.0,
        limit: int = DISCORD_LIMIT,
        cursor: str = " ▌",
        empty: str = "*(the model returned an empty answer)*",
        patience: float | None = 2.0,
        max_messages: int | None = None,
        upload: Upload | None = None,
        filename: str = "answer.md",
    ) -> None:
        if limit < 500:
            raise ValueError("limit must be at least 500")
        if len(cursor) > 10:
            raise ValueError("cursor must be at most 10 characters")
        self._edit: Edit | None = edit  # None: the next text starts a new message
        self._send = send
        self._clock = clock
        self._interval = interval
        self._limit = limit
        self._cursor = cursor
        self._empty = empty
        self._raw = ""
        self._live = 0  # offset in _raw where the live (still editable) message's text starts
        self._open: _Fence | None = None  # code fence open at _live
        self._shown: str | None = None  # what the live message shows, to skip no-op edits
        self._last_flush: float | None = None
        # The newest finished message, in case the footer has to be added to it.
        self._prev: tuple[Edit, str] | None = None
        self._messages = 1
        self._done = False
        self._lock = asyncio.Lock()  # one writer at a time, so messages stay in order
        self._patience = patience
        # At most `max_messages` messages. Past that, with `upload`, the last one carries a note and the
        # whole answer as `filename` (so streaming keeps one message free for it); without, it is cut.
        if max_messages is not None and max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self._max = max_messages
        self._upload = upload if max_messages is not None and max_messages >= 2 else None
        self._filename = filename
        self._capped = False  # streaming reached the last message it may use: the rest waits for the close
        self._writing: asyncio.Task[None] | None = None  # the streaming write in flight, if any

    @property
    def text(self) -> str:
        """Everything pushed so far, unmodified."""
        return self._raw

    @property
    def messages(self) -> int:
        """How many messages the reply uses so far (the first one included)."""
        return self._messages

    @property
    def done(self) -> bool:
        return self._done

    async def push(self, piece: str) -> None:
        """Add streamed text; shows it if at least ``interval`` has passed since the last update."""
        if self._done:
            raise RuntimeError("push() after finish() or fail()")
        self._raise_failed_write()
        self._raw += piece
        if self._last_flush is not None and self._clock() - self._last_flush < self._interval:
            return
        if self._writing is not None and not await self._settled(self._writing):
            return  # Discord is holding the last write back: this text goes out with the next one
        self._writing = asyncio.create_task(self._locked_flush(), name="streaming-reply-write")
        await self._settled(self._writing)
        self._raise_failed_write()

    async def finish(self, footer: str) -> None:
        """Write the final text of every message, with ``footer`` as a last line of the last one."""
        await self._close(footer, self._empty)

    async def fail(self, message: str) -> None:
        """Keep what was streamed and add ``message`` as an honest error note (no-op once done)."""
        await self._close(message, "")

    # -- internals ---------------------------------------------------------------------------------

    async def _settled(self, task: asyncio.Task[None]) -> bool:
        """Wait up to ``patience`` for a write; True once it has finished."""
        await asyncio.wait({task}, timeout=self._patience)
        return task.done()

    def _raise_failed_write(self) -> None:
        task = self._writing
        if task is not None and task.done():
            self._writing = None
            task.result()  # re-raises the write's exception, if any

    async def _locked_flush(self) -> None:
        async with self._lock:
            if not self._done and not self._capped:
                await self._flush()

    def _slots(self) -> int:
        """How many more messages the reply may write to, the live one included."""
        if self._max is None:
            return 1 << 30
        next_index = self._messages + (1 if self._edit is None else 0)  # the message the next write goes to
        return self._max - next_index + 1

    async def _write(self, content: str, *, final: bool) -> None:
        if self._edit is None:
            self._edit = await self._send(content)
            self._messages += 1
        elif content != self._shown:
            await self._edit(content)
        self._shown = content
        if final:
            self._prev = (self._edit, content)
            self._edit, self._shown = None, None

    def _advance(self, raw: str, piece: _Piece) -> None:
        """Make ``piece`` (offsets in the neutralised live text of ``raw``) the start of the live message."""
        self._live += _raw_offset(raw[self._live :], piece.start)
        self._open = piece.opened

    async def _flush(self) -> None:
        raw = self._raw  # pushes may add text while this writes: offsets refer to this snapshot
        text = neutralize_mentions(raw[self._live :])
        if not text.strip():
            return  # nothing visible yet: keep the placeholder
        self._last_flush = self._clock()
        room = self._limit - len(self._cursor) - 1  # the cursor may need its own line
        *finished, live = _split(text, room, self._open, partial=True)
        stream_slots = self._slots() - (1 if self._upload is not None else 0)  # one kept for the file
        for piece in finished:
            if piece.blank:
                continue
            if stream_slots <= 1:  # the last message streaming may use: show what fits, the rest at close
                await self._write(piece.render(self._cursor), final=False)
                self._capped = True
                return
            await self._write(piece.render(), final=True)
            stream_slots -= 1
        self._advance(raw, live)
        if not live.blank:
            await self._write(live.render(self._cursor), final=False)

    async def _overflow(self, pieces: list[_Piece], tail: str) -> None:
        """More text than messages left: fill what is left, then the note (and the file) and ``tail``."""
        slots = self._slots()
        if self._upload is not None and slots >= 2:
            for piece in pieces[: slots - 1]:
                await self._write(piece.render(), final=True)
            note = f"📎 The answer is longer than {self._max} messages: all of it is in {self._filename}."
            await self._upload(note + tail, self._filename, self._raw.encode())
            self._messages += 1
            return
        for piece in pieces[: slots - 1]:
            await self._write(piece.render(), final=True)
        extra = f"\n… (cut: the answer is longer than {self._max} messages)" + tail
        last = pieces[slots - 1]
        cut = next(p for p in _split(last.body, self._limit - len(extra), last.opened) if not p.blank)
        await self._write(cut.render() + extra, final=True)

    async def _close(self, note: str, empty: str) -> None:
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing  # in order after it; its exception, if any, is the caller's
        async with self._lock:
            if self._done:
                return
            self._done = True
            note = " ".join(neutralize_mentions(note).split("\n"))[:_MAX_NOTE]
            tail = "\n" + note if note else ""
            text = neutralize_mentions(self._raw[self._live :])
            pieces = [p for p in _split(text, self._limit, self._open) if not p.blank]
            if pieces and len(pieces[-1].render()) + len(tail) > self._limit:
                last = pieces.pop()
                pieces += [p for p in _split(last.body, self._limit - len(tail), last.opened) if not p.blank]
            if len(pieces) > self._slots():
                await self._overflow(pieces, tail)
            elif pieces:
                for piece in pieces[:-1]:
                    await self._write(piece.render(), final=True)
                await self._write(pieces[-1].render() + tail, final=True)
            elif self._edit is None and self._prev is not None:
                # Everything visible is already in finished messages: add the note to the newest one.
                edit, content = self._prev
                if note and len(content) + len(tail) <= self._limit:
                    await edit(content + tail)
                elif note:
                    await self._write(note, final=True)
            else:
                body = "\n".join(s for s in (empty, note) if s)
                await self._write(body or "\u200b", final=True)
