"""End-to-end fixtures: the unmodified discord.py client against the fake Discord on 127.0.0.1.

    async def test_ask(fake_discord, run_bot):
        bot = make_bot()  # any discord.Client / commands.Bot
        async with run_bot(bot):
            interaction = await fake_discord.send_interaction("ask", {"prompt": "hi"})
            summary = await fake_discord.wait_for_response(interaction)
            assert summary.kinds[0] == "callback"

Fixtures:
- `fake_discord`: a started FakeDiscord with discord.py pointed at it (Route.BASE and
  DiscordWebSocket.DEFAULT_GATEWAY monkeypatched). At teardown the test fails on any OpenAPI violation,
  unhandled REST route or crash of the fake (see FakeDiscord.problems()).
- `run_bot`: `async with run_bot(bot[, token]) as bot:` starts `bot.start(token)` in a task, waits
  until ready, fails the test if the start task dies, and closes the bot at exit. discord.py waits
  `guild_ready_timeout` (2 s by default) before on_ready: construct bots with
  `guild_ready_timeout=0.05`, or let run_bot lower it (it does when it is above 0.5 s).
- `discord_errors` (autouse): fails the test on ERROR records of the `discord` logger (errors inside
  commands and listeners are only logged). `discord_errors.take()` returns and clears the records a
  test expected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import discord
import discord.gateway
import discord.http
import pytest
import yarl

from tests.fakes.discord import FakeDiscord

ClientT = TypeVar("ClientT", bound=discord.Client)
READY_TIMEOUT = 5.0
WATCHED_LOGGERS = ("discord",)


class LogWatch(logging.Handler):
    """Collects ERROR records; the fixture fails the test on any left at teardown."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.fake: FakeDiscord | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self.fake is not None:
            self.fake.log_errors.append(self.describe(record))
            self.fake.notify()

    def take(self) -> list[logging.LogRecord]:
        """Return the records so far and forget them (for tests that expect an error)."""
        taken, self.records = self.records, []
        return taken

    @staticmethod
    def describe(record: logging.LogRecord) -> str:
        text = f"{record.name}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            text += f" [{type(record.exc_info[1]).__name__}: {record.exc_info[1]}]"
        return text

    def report(self) -> str:
        formatter = logging.Formatter("%(name)s %(levelname)s: %(message)s")
        return "\n\n".join(formatter.format(r) for r in self.records)


@pytest.fixture(autouse=True)
def discord_errors() -> Iterator[LogWatch]:
    watch = LogWatch()
    loggers = [logging.getLogger(name) for name in WATCHED_LOGGERS]
    for logger in loggers:
        logger.addHandler(watch)
    try:
        yield watch
    finally:
        for logger in loggers:
            logger.removeHandler(watch)
    if watch.records:
        pytest.fail(f"discord.py logged {len(watch.records)} error(s):\n{watch.report()}", pytrace=False)


@pytest.fixture
async def fake_discord(monkeypatch: pytest.MonkeyPatch, discord_errors: LogWatch) -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    discord_errors.fake = fake
    # Process-wide class attributes: patched per test, so run one fake at a time.
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
    try:
        yield fake
    finally:
        await fake.close()
    if problems := fake.problems():
        pytest.fail("fake Discord found problems:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def run_bot(fake_discord: FakeDiscord) -> Callable[..., contextlib.AbstractAsyncContextManager[Any]]:
    @contextlib.asynccontextmanager
    async def _run(
        bot: ClientT, token: str | None = None, *, ready_timeout: float = READY_TIMEOUT
    ) -> AsyncIterator[ClientT]:
        state: Any = bot._connection  # discord.py waits this long after the last GUILD_CREATE
        if getattr(state, "guild_ready_timeout", 0) > 0.5:
            state.guild_ready_timeout = 0.05
        identified = fake_discord.identify_count
        fake_discord.abort_reason = None  # a previous bot of this test may have died
        task = asyncio.create_task(bot.start(token or fake_discord.token), name="bot.start")

        def died(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and (exc := t.exception()) is not None:
                fake_discord.abort(f"bot.start() raised {type(exc).__name__}: {exc}")
            elif not bot.is_closed():
                fake_discord.abort("bot.start() returned while the bot was still open")

        task.add_done_callback(died)
        try:
            # `wait_until_ready` needs login() to have run: wait for IDENTIFY (or the task dying) first.
            await fake_discord.wait_for(
                lambda: fake_discord.identify_count > identified or task.done(), ready_timeout, what="IDENTIFY"
            )
            if not task.done():
                ready = asyncio.ensure_future(bot.wait_until_ready())
                await asyncio.wait({task, ready}, timeout=ready_timeout, return_when=asyncio.FIRST_COMPLETED)
                if not ready.done():
                    ready.cancel()
                    if not task.done():
                        pytest.fail(f"bot not ready within {ready_timeout} s", pytrace=False)
            if task.done():
                exc = None if task.cancelled() else task.exception()
                pytest.fail(f"bot.start() ended during start-up: {exc!r}", pytrace=False)
            yield bot
        finally:
            with contextlib.suppress(Exception):
                await bot.close()
            await asyncio.wait({task}, timeout=5)  # start() returns once closed; exceptions read below
            if not task.done():
                task.cancel()
        if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
            pytest.fail(f"bot.start() raised: {exc!r}", pytrace=False)

    return _run


# The real bot's harness (tests/e2e/test_bot_*.py): imported last, it builds on the fixtures above.
from tests.e2e.bot_harness import switchboard  # noqa: E402, F401
