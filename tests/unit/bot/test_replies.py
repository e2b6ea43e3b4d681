"""Mention safety, message splitting and streamed replies (bot/replies.py)."""

from __future__ import annotations

import asyncio
import itertools
import re
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.replies import (
    REPLY_MENTIONS,
    SAFE_MENTIONS,
    Edit,
    StreamingReply,
    _split,
    footer,
    neutralize_mentions,
    split_message,
)

# What Discord would turn into a ping or a mention pill.
PING = re.compile(r"@everyone|@here|<@[!&]?\d+>|<#\d+>", re.IGNORECASE)

# --------------------------------------------------------------------------------------------------
# A reference fence reader, written independently of the one under test (same CommonMark rules).


def fence_lines(chunk: str) -> tuple[list[str], bool]:
    """(the lines that are not fence lines, whether a code block is left open at the end)."""
    open_ticks = 0
    kept = []
    for raw in chunk.split("\n"):
        line = raw.rstrip("\r")
        m = re.fullmatch(r"[ \t]*(`{3,})(.*)", line) if len(line) <= 64 else None
        if m and not open_ticks and "`" not in m[2]:
            open_ticks = len(m[1])
        elif m and open_ticks and len(m[1]) >= open_ticks and not m[2].strip():
            open_ticks = 0
        else:
            kept.append(raw)
    return kept, bool(open_ticks)


def balanced(chunk: str) -> bool:
    return not fence_lines(chunk)[1]


def content(text: str) -> str:
    """Text minus fence lines, line breaks and whitespace: what splitting must preserve."""
    return re.sub(r"\s", "", "".join(fence_lines(text)[0]))


def chunks_content(chunks: list[str]) -> str:
    return "".join(content(c) for c in chunks)


# --------------------------------------------------------------------------------------------------
# Mentions


@pytest.mark.parametrize(
    "text",
    ["@everyone", "@here", "hi @Everyone!", "<@123456789012345678>", "<@!1234>", "<@&98765>", "<#555>"],
)
def test_mentions_are_defused(text: str) -> None:
    out = neutralize_mentions(text)
    assert not PING.search(out)
    assert out.replace("\u200b", "") == text  # still reads the same


@pytest.mark.parametrize("text", ["mail me at a@b.com", "@dataclass", "x = 1 < 2", "<:emoji:123>", ""])
def test_ordinary_text_is_untouched(text: str) -> None:
    assert neutralize_mentions(text) == text


def test_neutralize_is_idempotent() -> None:
    once = neutralize_mentions("@everyone <@1> <@&2> <#3> @here")
    assert neutralize_mentions(once) == once


def test_allowed_mentions_constants() -> None:
    assert SAFE_MENTIONS.to_dict() == {"parse": []}
    assert REPLY_MENTIONS.to_dict() == {"parse": [], "replied_user": True}


# --------------------------------------------------------------------------------------------------
# Splitting: examples


def test_short_text_is_one_chunk() -> None:
    assert split_message("hello") == ["hello"]
    assert split_message("x" * 2000) == ["x" * 2000]


@pytest.mark.parametrize("text", ["", " ", "\n\n \n"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert split_message(text) == []


def test_limit_too_small_is_refused() -> None:
    with pytest.raises(ValueError):
        split_message("x", limit=50)


def test_single_huge_word_is_hard_cut() -> None:
    chunks = split_message("x" * 5000)
    assert [len(c) for c in chunks] == [2000, 2000, 1000]
    assert "".join(chunks) == "x" * 5000


def test_prefers_paragraph_then_line_then_space() -> None:
    para = "word " * 250 + "\n\n"  # 1252 chars
    chunks = split_message(para * 3)
    assert chunks[0] == para
    lines = ("w " * 300 + "\n") * 5  # 601-char lines, no paragraphs
    chunks = split_message(lines)
    assert all(c.endswith("\n") for c in chunks[:-1])
    spaces = "word " * 1000
    chunks = split_message(spaces)
    assert all(c.endswith(" ") for c in chunks[:-1])
    assert "".join(chunks) == spaces


def test_small_paragraph_early_does_not_waste_a_message() -> None:
    text = "intro\n\n" + "word " * 1000
    chunks = split_message(text)
    assert len(chunks[0]) > 1000


def test_long_code_block_is_closed_and_reopened_with_its_language() -> None:
    code = "```python\n" + "".join(f"print({i})\n" for i in range(600)) + "```\nAfter the code."
    chunks = split_message(code)
    assert len(chunks) >= 3
    for i, chunk in enumerate(chunks):
        assert len(chunk) <= 2000
        assert balanced(chunk)
        assert chunk.startswith("```python\n")
        if i < len(chunks) - 1:
            assert chunk.endswith("\n```")
    assert chunks[-1].endswith("```\nAfter the code.")
    assert chunks_content(chunks) == content(code)


def test_code_line_longer_than_the_limit() -> None:
    code = "```js\nconst s = '" + "a" * 4500 + "';\n```"
    chunks = split_message(code)
    assert all(len(c) <= 2000 and balanced(c) for c in chunks)
    assert all(c.startswith("```js\n") for c in chunks)
    assert chunks_content(chunks) == content(code)


def test_no_empty_code_block_at_a_cut() -> None:
    # The opener would fit at the end of chunk one, but an empty block there would render as junk.
    text = "a" * 1990 + "\n```py\n" + "x = 1\n" * 10 + "```"
    chunks = split_message(text)
    assert chunks[0] == "a" * 1990 + "\n"
    assert chunks[1].startswith("```py\nx = 1")


def test_unclosed_fence_is_closed_at_the_end() -> None:
    chunks = split_message("Here:\n```sh\nls -la\n")
    assert chunks == ["Here:\n```sh\nls -la\n```"]


def test_longer_fence_nests_a_shorter_one() -> None:
    inner = "```python\nprint(1)\n```\n"
    text = "````markdown\n" + inner * 120 + "````\n"
    chunks = split_message(text)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.startswith("````markdown\n")
        assert balanced(chunk)
    assert chunks_content(chunks) == content(text)


def test_inline_triple_backticks_are_not_a_fence() -> None:
    text = ("Use ```x``` inline.\n" + "word " * 100 + "\n") * 10
    chunks = split_message(text)
    assert all(not c.startswith("```") for c in chunks)
    assert "".join(chunks) == text


@pytest.mark.parametrize(
    "text",
    [
        "`" * 5000,
        "```\n" * 1500,
        "``````\n" * 900,
        ("`" * 40 + "\n") * 200,
        "```" + "x" * 4000,
        "a" * 1998 + "```py\n" + "b" * 10,
        "x" * 1999 + " ```js\ncode\n```",
    ],
    ids=["backticks", "many-fences", "six-tick-lines", "40-tick-lines", "fence-long-info", "fence-at-cut", "space"],
)
def test_pathological_input(text: str) -> None:
    chunks = split_message(text)
    assert chunks
    assert all(0 < len(c) <= 2000 and c.strip() for c in chunks)
    assert all(balanced(c) for c in chunks)
    assert chunks_content(chunks) == content(text)


# --------------------------------------------------------------------------------------------------
# Splitting: properties

_word = st.text(alphabet="abcdefghij@<>!&#*_", min_size=1, max_size=12)
_paragraph = st.lists(_word, min_size=1, max_size=120).map(" ".join).map(lambda s: s + "\n\n")
_long_word = st.integers(50, 3000).map(lambda n: "y" * n + "\n")
_code_line = st.one_of(_word, st.integers(0, 2500).map(lambda n: "z" * n), st.just(""), st.just("  ```not"))
_code_block = st.builds(
    lambda ticks, lang, lines, closed, indent: (
        f"{indent}{'`' * ticks}{lang}\n" + "".join(f"{ln}\n" for ln in lines) + (f"{'`' * ticks}\n" if closed else "")
    ),
    st.integers(3, 6),
    st.sampled_from(["", "python", "js", "c++", "long lang", "x`y"]),
    st.lists(_code_line, max_size=150),
    st.booleans(),
    st.sampled_from(["", "  "]),
)
_odd = st.sampled_from(
    ["```\n", "````\n", "`" * 70 + "\n", "Use ```x``` here. ", "@everyone <@123> ", "\n\n\n", " " * 40, "\r\n"]
)
_structured = st.lists(st.one_of(_paragraph, _long_word, _code_block, _odd), max_size=30).map("".join)
# Backtick soup: fence-ish lines of every length around the 64-character fence limit, CR/LF, mentions.
_noise = st.lists(
    st.one_of(
        st.text(alphabet="a `\n\t\r@<1>&#", max_size=300),
        st.sampled_from(["```py\n", "```\n", "````\n", "`" * 63 + "\n", "`" * 64, "`" * 65, " " * 60]),
    ),
    max_size=60,
).map("".join)
_texts = st.one_of(_structured, _structured, _noise)
_limits = st.sampled_from([200, 257, 500, 2000])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_texts, limit=_limits)
def test_split_properties(text: str, limit: int) -> None:
    chunks = split_message(text, limit)
    for chunk in chunks:
        assert 0 < len(chunk) <= limit
        assert chunk.strip()
        assert balanced(chunk), chunk
    assert chunks_content(chunks) == content(text)
    # Exactly: the chunk bodies are the original text, in order (fences are added around them).
    assert "".join(p.body for p in _split(text, limit)) == text


@settings(max_examples=100, deadline=None)
@given(text=_structured)
def test_split_of_prose_is_lossless(text: str) -> None:
    prose = text.replace("`", "'")  # no fences, so nothing is added
    kept = "".join(p.body for p in _split(prose, 500) if not p.blank)  # only blank chunks are dropped
    assert "".join(split_message(prose, 500)) == kept
    assert re.sub(r"\s", "", kept) == re.sub(r"\s", "", prose)


# --------------------------------------------------------------------------------------------------
# Footer


def test_footer_format() -> None:
    assert footer("chat", "small", "smollm2-onnx", 1.234) == "-# chat · small · smollm2-onnx · 1.2s"
    assert (
        footer("code", "large", "qwen", 75, "fell back to large")
        == "-# code · large · qwen · 1m 15s · fell back to large"
    )
    assert footer("chat", "small", "llama_3_8b", 12.4).endswith("llama\\_3\\_8b · 12s")
    assert "\n" not in footer("chat", "small", "m", 1, "two\nlines")


# --------------------------------------------------------------------------------------------------
# Streaming


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Discord:
    """Records every write, per message, with the fake clock's time."""

    clock: FakeClock
    messages: list[list[tuple[float, str]]] = field(default_factory=lambda: [[(0.0, "thinking…")]])

    def editor(self, index: int) -> Edit:
        async def edit(content: str) -> None:
            self.messages[index].append((self.clock(), content))

        return edit

    async def send(self, content: str) -> Edit:
        self.messages.append([(self.clock(), content)])
        return self.editor(len(self.messages) - 1)

    @property
    def final(self) -> list[str]:
        return [writes[-1][1] for writes in self.messages]

    def reply(self, **kwargs: object) -> StreamingReply:
        return StreamingReply(self.editor(0), self.send, clock=self.clock, **kwargs)  # type: ignore[arg-type]


FOOT = footer("chat", "small", "smollm2-onnx", 1.2)


async def stream(text: str, discord: Discord, reply: StreamingReply, size: int = 7, step: float = 0.05) -> None:
    for i in range(0, len(text), size):
        await reply.push(text[i : i + size])
        discord.clock.advance(step)


async def test_first_edit_is_immediate_then_throttled() -> None:
    d = Discord(FakeClock())
    reply = d.reply()
    await reply.push("   ")
    assert len(d.messages[0]) == 1  # blank text leaves the placeholder
    await reply.push("Hi")
    assert d.messages[0][-1] == (0.0, "   Hi ▌")
    d.clock.advance(0.5)
    await reply.push(" there")
    assert len(d.messages[0]) == 2
    d.clock.advance(0.5)
    await reply.push("!")
    assert d.messages[0][-1] == (1.0, "   Hi there! ▌")


async def test_edits_are_at_most_one_per_interval() -> None:
    d = Discord(FakeClock())
    reply = d.reply(interval=1.0)
    text = "All work and no play makes Jack a dull boy. " * 150  # ~6600 chars over ~47 s
    await stream(text, d, reply)
    for writes in d.messages:
        times = [t for t, _ in writes[1:]] if writes is d.messages[0] else [t for t, _ in writes]
        assert all(b - a >= 1.0 for a, b in itertools.pairwise(times)), times
    flush_times = sorted({t for writes in d.messages for t, _ in writes[1:]})
    assert len(flush_times) <= d.clock.now / 1.0 + 1
    await reply.finish(FOOT)
    assert all(len(c) <= 2000 for c in d.final)
    assert "".join(d.final).removesuffix("\n" + FOOT) == text


async def test_5000_char_answer_makes_three_messages_with_footer_last() -> None:
    d = Discord(FakeClock())
    reply = d.reply()
    text = "".join(f"Sentence number {i} of a long answer. " for i in range(200))[:5000]
    assert len(text) == 5000
    await stream(text, d, reply, size=50, step=0.1)
    await reply.finish(FOOT)
    assert len(d.messages) == 3 == reply.messages
    assert all(len(c) <= 2000 for c in d.final)
    assert d.final[-1].endswith("\n" + FOOT)
    assert all(FOOT not in c for c in d.final[:-1])
    assert all("▌" not in c for c in d.final)
    assert "".join(d.final).removesuffix("\n" + FOOT) == text


async def test_whole_answer_in_one_push() -> None:
    d = Discord(FakeClock())
    reply = d.reply()
    text = "x" * 5000
    await reply.push(text)
    await reply.finish(FOOT)
    assert [len(c) for c in d.final[:-1]] == [1997, 1997]
    assert d.final[-1] == "x" * 1006 + "\n" + FOOT


async def test_finished_messages_are_never_edited_again() -> None:
    d = Discord(FakeClock())
    reply = d.reply()
    await stream("word " * 1200, d, reply, step=0.3)
    await reply.finish(FOOT)
    for index, writes in enumerate(d.messages[:-1]):
        next_created = d.messages[index + 1][0][0]
        assert all(t <= next_created for t, _ in writes)


async def test_footer_that_does_not_fit_moves_text_to_a_new_message() -> None:
    d = Discord(FakeClock())
    reply = d.reply()
    text = "word " * 399  # 1995 chars: fits alone, not with the footer
    await reply.push(text)
    await reply.finish(FOOT)
    assert len(d.final) == 2
    assert all(len(c) <= 2000 for c in d.final)
    assert d.final[-1].endswith("\n" + FOOT)
    assert "".join(d.final).removesuffix("\n" + FOOT) == text


async def test_footer_joins_the_last_message_when_only_whitespace_follows_it() -> None:
    d = Discord(FakeClock())
    reply = d.reply()
    text = ("x" * 100 + "\n\n") * 19 + " " * 100  # cut after the last paragraph, blank remainder
    await reply.push(text)
    await reply.finish(FOOT)
    assert len(d.messages) == 1
    assert d.final[0] == text[:1938] + "\n" + FOOT


async def test_streamed_code_is_balanced_in_every_message() -> None:
    d = Discord(FakeClock())
    reply = d.reply()
    text = "Here you go:\n\n```python\n" + "".join(f"value_{i} = compute({i})\n" for i in range(250)) + "```\nDone."
    await stream(text, d, reply, size=11, step=0.2)
    for writes in d.messages:
        assert all(balanced(c) and len(c) <= 2000 for _, c in writes[1:] if c != "thinking…")
    await reply.finish(FOOT)
    assert len(d.final) >= 3
    assert all(balanced(c) for c in d.final)
    assert all(c.startswith("```python\n") for c in d.final[1:])
    assert chunks_content(d.final) == content(text + "\n" + FOOT)


async def test_streamed_mentions_are_defused_across_pieces() -> None:
    d = Discord(FakeClock())
    reply = d.reply()
    for piece in ["ping @every", "one and <@", "1234> and <@&", "5> @he", "re"]:
        await reply.push(piece)
        d.clock.advance(2)
        assert not any(PING.search(c) for w in d.messages for _, c in w)
    await reply.finish(FOOT)
    assert not PING.search(d.final[0])
    assert d.final[0].replace("\u200b", "").startswith("ping @everyone and <@1234> and <@&5> @here")


async def test_fail_keeps_streamed_text_and_adds_the_note() -> None:
    d = Discord(FakeClock())
    reply = d.reply()
    await reply.push("Partial answer")
    await reply.fail("⚠️ The model took too long to answer.")
    assert d.final == ["Partial answer\n⚠️ The model took too long to answer."]
    await reply.fail("again")  # no-op once done
    await reply.finish(FOOT)
    assert d.final == ["Partial answer\n⚠️ The model took too long to answer."]
    with pytest.raises(RuntimeError):
        await reply.push("more")


async def test_fail_before_any_text_replaces_the_placeholder() -> None:
    d = Discord(FakeClock())
    reply = d.reply()
    await reply.fail("⚠️ The model is unavailable right now.")
    assert d.final == ["⚠️ The model is unavailable right now."]


async def test_fail_inside_code_closes_the_block_first() -> None:
    d = Discord(FakeClock())
    reply = d.reply()
    await reply.push("```py\nx = 1\n")
    await reply.fail("⚠️ Cut off.")
    assert d.final == ["```py\nx = 1\n```\n⚠️ Cut off."]


async def test_empty_answer_says_so() -> None:
    d = Discord(FakeClock())
    reply = d.reply()
    await reply.finish(FOOT)
    assert d.final == ["*(the model returned an empty answer)*\n" + FOOT]


async def test_cursor_can_be_disabled() -> None:
    d = Discord(FakeClock())
    reply = d.reply(cursor="")
    await reply.push("Hello")
    assert d.final == ["Hello"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_texts, sizes=st.lists(st.integers(1, 400), min_size=1, max_size=8), step=st.sampled_from([0.1, 0.7, 3]))
async def test_streaming_properties(text: str, sizes: list[int], step: float) -> None:
    d = Discord(FakeClock())
    reply = d.reply(limit=500)
    i = k = 0
    while i < len(text):
        size = sizes[k % len(sizes)]
        await reply.push(text[i : i + size])
        d.clock.advance(step)
        i, k = i + size, k + 1
    await reply.finish(FOOT)
    for writes in d.messages:
        for _, c in writes:
            assert len(c) <= 500 and c.strip()
    final = d.final
    assert all(balanced(c) for c in final)
    assert all("▌" not in c for c in final)
    assert final[-1].endswith(FOOT)
    expected = text if text.strip() else "*(the model returned an empty answer)*"
    got = chunks_content(final).replace("\u200b", "")
    assert got == content(expected + "\n" + FOOT).replace("\u200b", "")
    assert not any(PING.search(c) for c in final)


@dataclass
class HeldDiscord(Discord):
    """A Discord that holds writes back while `held` is set (a 429 and its Retry-After)."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    held: bool = False
    in_flight: int = 0
    most_in_flight: int = 0

    def editor(self, index: int) -> Edit:
        async def edit(content: str) -> None:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                if self.held:
                    await self.gate.wait()
                self.messages[index].append((self.clock(), content))
            finally:
                self.in_flight -= 1

        return edit


async def test_held_back_write_does_not_stall_the_stream_and_latest_text_wins() -> None:
    d = HeldDiscord(FakeClock())
    reply = d.reply(patience=0)
    await reply.push("one")  # Discord is quick: written before push returns
    assert d.final == ["one ▌"]
    d.held = True
    d.clock.advance(1)
    await reply.push(" two")  # starts a write Discord holds back; push returns anyway
    for word in (" three", " four", " five"):
        d.clock.advance(1)
        await reply.push(word)  # coalesced: no second write while one is in flight
    assert d.final == ["one ▌"] and d.in_flight == 1
    d.held = False
    d.gate.set()
    d.clock.advance(1)
    await reply.push(" six")  # the held write lands, then the latest text goes out
    await reply.finish(FOOT)
    writes = [c for _, c in d.messages[0][1:]]
    assert writes == ["one ▌", "one two ▌", "one two three four five six ▌", "one two three four five six\n" + FOOT]
    assert d.most_in_flight == 1  # one write at a time: never reordered


async def test_finish_waits_for_a_held_write_and_writes_everything_last() -> None:
    d = HeldDiscord(FakeClock(), held=True)
    reply = d.reply(patience=0)
    await reply.push("partial")
    await reply.push(" and the rest")  # within the interval: shown by finish
    closing = asyncio.ensure_future(reply.finish(FOOT))
    await asyncio.sleep(0)
    assert not closing.done()  # the held write comes first
    d.gate.set()
    await closing
    assert [c for _, c in d.messages[0][1:]] == ["partial ▌", "partial and the rest\n" + FOOT]


async def test_failed_background_write_is_raised_to_the_caller() -> None:
    d = Discord(FakeClock())
    gate = asyncio.Event()

    async def broken(content: str) -> None:
        await gate.wait()
        raise RuntimeError("403 Forbidden")

    reply = StreamingReply(broken, d.send, clock=d.clock, patience=0)
    await reply.push("hello")
    gate.set()
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="Forbidden"):
        await reply.push(" world")


async def test_long_answer_stops_at_max_messages_and_attaches_the_whole_text() -> None:
    d = Discord(FakeClock())
    files: list[tuple[str, str, bytes]] = []

    async def upload(content: str, filename: str, data: bytes) -> None:
        files.append((content, filename, data))
        d.messages.append([(d.clock(), content)])

    reply = d.reply(max_messages=3, upload=upload)
    text = "```python\n" + "".join(f"value_{i} = compute({i})  # @everyone\n" for i in range(600)) + "```\nDone."
    await stream(text, d, reply, size=40, step=0.2)
    assert len(d.messages) <= 2  # streaming keeps the last message free for the file
    await reply.finish(FOOT)
    assert len(d.messages) == 3 == reply.messages
    assert all(balanced(c) and len(c) <= 2000 for c in d.final)
    assert d.final[-1] == "📎 The answer is longer than 3 messages: all of it is in answer.md.\n" + FOOT
    ((_, name, data),) = files
    assert name == "answer.md" and data.decode() == text


async def test_without_upload_the_last_allowed_message_is_cut_with_a_note() -> None:
    d = Discord(FakeClock())
    reply = d.reply(max_messages=2)
    text = "word " * 1500
    await stream(text, d, reply, size=30, step=0.3)
    await reply.finish(FOOT)
    assert len(d.messages) == 2
    assert all(len(c) <= 2000 and "▌" not in c for c in d.final)
    assert d.final[-1].endswith("\n… (cut: the answer is longer than 2 messages)\n" + FOOT)
    assert (d.final[0] + d.final[1]).startswith("word " * 700)
