"""A bounded server-sent events reader: the lines and events of a ``text/event-stream`` body.

Every read is bounded: a line over :data:`MAX_LINE` bytes, or an event whose data lines never end in a
blank line past :data:`MAX_EVENT` characters, ends the stream with :class:`ResponseTooLarge`, so a server
that never stops talking costs a few MiB, not the process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from inference.errors import ResponseTooLarge

#: Longest SSE line accepted; a server streaming an endless line is broken, not chatty.
MAX_LINE = 1 << 20
#: Most characters of data in one SSE event (data lines accumulate until a blank line; one may never come).
MAX_EVENT = 1 << 20


async def lines(body: aiohttp.StreamReader) -> AsyncIterator[str]:
    """Lines of the body (\\n, \\r\\n or \\r), without the terminator; a line over MAX_LINE ends the stream."""
    buf = b""
    async for chunk in body.iter_any():
        buf += chunk
        while True:
            cut = _line_end(buf)
            if cut is None:
                break
            end, nxt = cut
            yield buf[:end].decode("utf-8", "replace")
            buf = buf[nxt:]
        if len(buf) > MAX_LINE:
            raise ResponseTooLarge(f"stream broken: a line over {MAX_LINE} bytes")
    if buf:
        yield buf.decode("utf-8", "replace")


def _line_end(buf: bytes) -> tuple[int, int] | None:
    n, r = buf.find(b"\n"), buf.find(b"\r")
    if n < 0 and r < 0:
        return None
    if r >= 0 and (n < 0 or r < n):
        if r + 1 == len(buf):
            return None  # a lone \r at the end may be the first half of \r\n: wait for more
        return (r, r + 2) if buf[r + 1 : r + 2] == b"\n" else (r, r + 1)
    return (n, n + 1)


async def events(body: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The data of each server-sent event (data: lines joined by newlines); comments skipped."""
    data: list[str] = []
    size = 0
    async for line in lines(body):
        if not line:
            if data:
                yield "\n".join(data)
                data, size = [], 0
            continue
        if line.startswith(":"):  # keep-alive comment
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
            size += len(value) + 1
            if size > MAX_EVENT:  # data lines that never end in a blank line
                raise ResponseTooLarge(f"stream broken: an event over {MAX_EVENT} characters")
    if data:
        yield "\n".join(data)
