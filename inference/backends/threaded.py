"""Run a blocking token generator in a worker thread and consume it from the event loop.

Local backends (ONNX Runtime, PyTorch) generate in a thread so the event loop never blocks; closing
the async side sets a stop flag the worker checks between tokens.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator

_DONE = object()


async def iterate_in_thread(make: Callable[[threading.Event], Iterator[str]]) -> AsyncIterator[str]:
    """Yield what ``make(stop_event)`` yields, produced in a daemon thread.

    ``make`` must check ``stop_event`` between tokens and return when it is set.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()

    def put(item: object) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        try:
            for piece in make(stop):
                if stop.is_set():
                    break
                put(piece)
        except BaseException as exc:
            put(exc)
        finally:
            put(_DONE)

    thread = threading.Thread(target=work, name="switchboard-generate", daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
