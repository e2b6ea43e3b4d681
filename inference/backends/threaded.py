"""Run a blocking token generator in a worker thread and consume it from the event loop.

Local backends (ONNX Runtime, PyTorch) generate in a thread so the event loop never blocks; closing
the async side sets a stop flag the worker checks between tokens. The worker may run at most
``max_ahead`` pieces ahead of the consumer, so a closed stream stops generating within a few tokens
however fast the model is, and a slow consumer never buffers a whole answer.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Generator

_DONE = object()
#: How often a worker waiting for the consumer re-checks the stop flag (seconds).
_POLL_S = 0.05


async def iterate_in_thread(
    make: Callable[[threading.Event], Generator[str, None, None]], *, max_ahead: int = 8
) -> AsyncIterator[str]:
    """Yield what ``make(stop_event)`` yields, produced in a daemon thread.

    ``make`` must check ``stop_event`` between tokens and return when it is set.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()
    credits = threading.Semaphore(max_ahead)

    def put(item: object) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        pieces = make(stop)
        try:
            for piece in pieces:
                while not credits.acquire(timeout=_POLL_S):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                put(piece)
        except BaseException as exc:  # handed to the consumer
            put(exc)
        finally:
            pieces.close()  # runs the generator's cleanup (lock release, finish reason) in this thread
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
            credits.release()
            yield item  # type: ignore[misc]
    finally:
        stop.set()
