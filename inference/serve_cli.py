"""``python -m bot serve``: the router over the OpenAI chat-completions protocol (inference/serving/openai_api.py).

Loopback by default; bound anywhere else it refuses to start without an API key. It prints one line on stderr
with the URL once it listens, warms the routed models in the background (requests that arrive meanwhile share
the load) and stops cleanly on SIGINT or SIGTERM, closing every backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import aiohttp
from aiohttp import web

from inference.catalogue import Catalogue, RoutingPolicy
from inference.errors import InferenceError
from inference.serving.openai_api import ApiLimits, create_app, is_loopback

if TYPE_CHECKING:
    from inference.router import Classifier
    from inference.serving.service import Switchboard

log = logging.getLogger(__name__)


async def serve_command(
    *,
    host: str,
    port: int,
    catalogue: Catalogue,
    policy: RoutingPolicy,
    cache_dir: Path,
    env: Mapping[str, str] | None = None,
    api_key: str | None = None,
    limits: ApiLimits | None = None,
    warm: bool = True,
    stderr: TextIO = sys.stderr,
    stop: asyncio.Event | None = None,
    listening: asyncio.Future[str] | None = None,
    classifier: Classifier | None = None,
) -> int:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set). Exit 2 when bound beyond loopback without a key.

    ``listening`` (for callers in the same loop) gets the API's base URL once the server accepts connections;
    ``classifier`` replaces the prepared task classifier in ``cache_dir``.
    """
    if not is_loopback(host) and not api_key:
        print(
            f"error: refusing to serve on {host} without an API key: set SWITCHBOARD_SERVE_API_KEY "
            "(clients send Authorization: Bearer KEY), or bind to 127.0.0.1",
            file=stderr,
        )
        return 2
    from inference.router import Router
    from inference.serving.service import Switchboard

    if classifier is None:
        from inference.classifier import TaskClassifier

        classifier = await asyncio.to_thread(
            TaskClassifier.load, cache_dir, long_context_tokens=policy.escalation.long_context_tokens
        )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread (tests), or Windows
            loop.add_signal_handler(sig, stop.set)
    async with aiohttp.ClientSession() as session:
        board = Switchboard(Router(classifier, policy, catalogue), cache_dir=cache_dir, session=session, env=env)
        runner = web.AppRunner(create_app(board, api_key=api_key, limits=limits), access_log=None)
        warming: asyncio.Task[None] | None = None
        try:
            for note in await board.start(probe=True):
                print(f"note: {note}", file=stderr)
            await runner.setup()
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as exc:
                print(f"error: can't listen on {host}:{port}: {exc.strerror or exc}", file=stderr)
                return 1
            bound = runner.addresses[0]
            shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
            url = f"http://{shown}:{bound[1]}/v1"
            print(f"serving the OpenAI-compatible API on {url}", file=stderr, flush=True)
            if listening is not None:
                listening.set_result(url)
            if warm:
                names = [board.resolve(name) for name in policy.models.values()]
                warming = asyncio.create_task(_warm(board, names))
            await stop.wait()
        finally:
            if warming is not None:
                warming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await warming
            await runner.cleanup()
            await board.aclose()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
    print("stopped", file=stderr)
    return 0


async def _warm(board: Switchboard, names: list[str]) -> None:
    """Load the routed models now, so the first request is not the one that waits for them."""
    for name in dict.fromkeys(names):
        try:
            await board.backend(name)
        except InferenceError as exc:  # the first request will try again, and report it
            log.warning("warming %s failed: %s", name, exc)
