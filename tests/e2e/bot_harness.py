"""Builders for end-to-end tests of the real Switchboard bot against the fake Discord.

The bot is wired like ``bot.app.start()`` wires it, with test resources: settings without an ``.env``,
a SQLite file under ``tmp_path``, a Switchboard whose router uses a keyword classifier and whose
backends are :class:`~tests.fakes.backends.ScriptedBackend` instances (scripted answers, an optional gate for
a slow model and the test's FakeClock advanced per streamed piece), and a rate limiter on a manual clock.

    async def test_something(switchboard: Harness) -> None:
        switchboard.small.reply = "hello"
        async with switchboard.running() as bot:
            it = await switchboard.fake.send_interaction("ask", {"prompt": "hi"})
            summary = await switchboard.wait_answered(it)

``running()`` may be entered again after it exits (a restart on the same database file). Other knobs,
set before ``running()``: ``settings_overrides`` (Settings fields; ``shared_rate_limits=True``: the rate
limiter is the database's, on ``limiter_clock``), ``allowed_hosts`` (operator-allowed
endpoint hosts), ``resolved`` (the guard's fake DNS: ``api.example.com`` is public, ``internal.example.com``
resolves to 10.0.0.5), ``shutdown_grace_s``. ``probe`` records the store's writes and wakes the fake's
waiters, so a test can wait for one without sleeping: ``await fake.wait_for(lambda:
switchboard.probe.count("add_message") == 2)``. ERROR records of the ``bot``, ``cogs``, ``inference`` and
``sqlalchemy`` loggers fail the test, as the ``discord`` logger's do.
"""

from __future__ import annotations

import contextlib
import logging
import re
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from bot.app import SwitchboardBot
from bot.ratelimit import Limiter, RateLimiter, StoreRateLimiter
from bot.settings import Settings
from bot.storage import Store
from inference.artifacts import default_cache_dir, embedder_dir
from inference.backends.base import Backend
from inference.catalogue import Catalogue, ModelSpec, RoutingPolicy, load_routing
from inference.knowledge.embedder import Embedder
from inference.knowledge.service import KnowledgeBase, open_index
from inference.router import Router
from inference.serving.clock import FakeClock
from inference.serving.netguard import Guard
from inference.serving.service import Switchboard
from inference.types import Classification, Request, TaskId, Tier
from tests.fakes.backends import ScriptedBackend, fake_catalogue
from tests.fakes.discord import FakeDiscord, InteractionSummary, RecordedRequest

SMALL, LARGE, LOCAL = "small-fake", "large-fake", "local-fake"
#: The bot's own loggers (and its database layer): an ERROR from any of them fails the test.
BOT_LOGGERS = ("bot", "cogs", "inference", "sqlalchemy")
#: A public-looking host and what the fake resolver answers for it (and for a rebinding one).
PUBLIC_HOST, PUBLIC_IP = "api.example.com", "93.184.216.34"
REBINDING_HOST = "internal.example.com"
FOOTER_RE = re.compile(
    # A task id's underscore arrives escaped ("tool\_use"): the footer shows markdown literally.
    r"\n-# (?P<task>[\w\\]+) · (?P<tier>small|large) · (?P<model>[\w\\-]+) · "
    r"(?P<secs>[\d.]+s|\d+m \d\ds)(?P<note> · .*)?$"
)
CURSOR = " ▌"


class KeywordClassifier:
    """Deterministic stand-in for the trained classifier."""

    def classify(self, request: Request) -> Classification:
        text = request.text.lower()
        task: TaskId = "chat"
        difficulty = 0.1
        signals: tuple[str, ...] = ()
        if "```" in text or "code" in text:
            task, difficulty = "code", 0.3
        elif "translate" in text:
            task = "conversion"
        elif "according to the docs" in text:
            task = "rag"
        elif "calculate" in text or "server info" in text or "remind" in text or "poll" in text:
            task = "tool_use"
        elif "prove" in text or ("how many" in text and "train" in text):
            difficulty, signals = 0.9, ("reasoning",)
        return Classification(
            task=task,
            confidence=0.9,
            difficulty=difficulty,
            signals=signals,
            prompt_tokens=len(text) // 4,
            embedding=words_vector(text),
        )


def words_vector(text: str, dim: int = 256) -> np.ndarray:
    """A bag-of-words unit vector: texts with the same words are similar, texts sharing none are orthogonal-ish
    (a stand-in for the classifier's embedding, for per-server corrections)."""
    out = np.zeros(dim, dtype=np.float32)
    for word in re.findall(r"\w+", text.lower()):
        out[zlib.crc32(word.encode()) % dim] += 1.0
    norm = float(np.linalg.norm(out))
    return out / norm if norm else out


_EMBEDDER: list[Embedder] = []


def shared_embedder() -> Embedder:
    """The prepared all-MiniLM-L6-v2, loaded once per test session (the test is skipped where it isn't prepared)."""
    if not _EMBEDDER:
        directory = embedder_dir(default_cache_dir())
        if not (directory / "model.onnx").exists():
            pytest.skip(f"the knowledge embedder is not prepared in {directory} (python -m bot models prepare)")
        _EMBEDDER.append(Embedder(directory))
    return _EMBEDDER[0]


def routing_policy() -> RoutingPolicy:
    base = load_routing()
    return RoutingPolicy(tiers=base.tiers, models={Tier.SMALL: SMALL, Tier.LARGE: LARGE})


class WallClock:
    """UTC wall-clock time that moves only when told: when scheduled jobs (reminders) are due."""

    def __init__(self, start: datetime = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class StoreProbe:
    """Wraps a Store's writes so tests can wait for them (the fake is notified after each one)."""

    WRITES = (
        "add_correction",
        "add_message",
        "close_conversation",
        "create_conversation",
        "record_request",
        "set_conversation_tier",
    )

    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def attach(self, store: Store) -> None:
        for name in self.WRITES:
            original = getattr(store, name)

            def make(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
                async def wrapper(*args: Any, **kwargs: Any) -> Any:
                    result = await original(*args, **kwargs)
                    self.calls.append((name, args, kwargs))
                    self.fake.notify()
                    return result

                return wrapper

            setattr(store, name, make(name, original))

    def count(self, name: str) -> int:
        return sum(1 for n, _, _ in self.calls if n == name)


class Harness:
    """One test's Switchboard world. Change ``settings_overrides``, backends or ``guard`` before ``running()``."""

    def __init__(self, fake: FakeDiscord, run_bot: Any, tmp_path: Path) -> None:
        self.fake = fake
        self._run_bot = run_bot
        self.tmp_path = tmp_path
        self.clock = FakeClock()  # streaming edits, footer time, and each streamed piece's pace
        self.limiter_clock = FakeClock()
        self.limiter = RateLimiter(clock=self.limiter_clock)
        self.board_clock = FakeClock()  # retry backoff and cooldowns: no real sleeping
        self.backends: dict[str, ScriptedBackend] = {
            name: ScriptedBackend(name, f"answer from {name}", clock=self.clock, step=0.1)
            for name in (SMALL, LARGE, LOCAL)
        }
        self.settings_overrides: dict[str, Any] = {}
        #: Another database than the test's SQLite file (e.g. the suite's PostgreSQL).
        self.database_url: str | None = None
        #: Real backends in place of scripted ones, by catalogue name (e.g. an OpenAIBackend on a local server).
        self.real_backends: dict[str, Backend] = {}
        #: Another catalogue than the fakes' (e.g. longer time limits for a real server).
        self.catalogue: Catalogue | None = None
        self.allowed_hosts: tuple[str, ...] = ()
        self.resolved: dict[str, list[str]] = {PUBLIC_HOST: [PUBLIC_IP], REBINDING_HOST: ["10.0.0.5"]}
        self.shutdown_grace_s = 5.0
        self.probe = StoreProbe(fake)
        #: When scheduled jobs are due (bot.wall_clock and its scheduler); tests call ``bot.scheduler.run_due()``.
        self.wall_clock = WallClock()
        #: Build the knowledge base (/docs) on the test's SQLite file with the prepared embedder (shared per session).
        self.with_knowledge = False
        self.knowledge: KnowledgeBase | None = None
        self.bot: SwitchboardBot | None = None
        self.store: Store | None = None
        self.board: Switchboard | None = None
        self.guard: Guard | None = None
        self.runs = 0

    # -- world --------------------------------------------------------------------------------------
    @property
    def small(self) -> ScriptedBackend:
        return self.backends[SMALL]

    @property
    def large(self) -> ScriptedBackend:
        return self.backends[LARGE]

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.tmp_path / 'db.sqlite'}"

    @property
    def settings(self) -> Settings:
        values: dict[str, Any] = {
            "data_dir": self.tmp_path,
            "database_url": self.db_url,
            "cache_dir": self.tmp_path / "cache",
            "allowed_endpoint_hosts": self.allowed_hosts,
            "warm_models": False,
            "scheduler_poll_s": 0,  # no background loop: tests run due jobs with bot.scheduler.run_due()
            **self.settings_overrides,
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    async def _resolve(self, host: str, port: int) -> list[str]:
        try:
            return self.resolved[host]
        except KeyError:
            raise OSError(f"{host}: no such host (fake resolver)") from None

    def model_calls(self) -> int:
        return sum(len(b.calls) for b in self.backends.values())

    # -- lifecycle ----------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SwitchboardBot]:
        """Build and start the bot as bot.app.start() does; at exit close bot, backends and store."""
        settings = self.settings
        catalogue = self.catalogue or fake_catalogue()
        self.guard = Guard(
            allow_private=settings.allow_private_endpoints,
            allowed_hosts=frozenset(settings.allowed_endpoint_hosts),
            resolve=self._resolve,
        )
        async with aiohttp.ClientSession() as session:
            guard = self.guard

            def factory(name: str, spec: ModelSpec) -> Backend | None:
                # Server-added endpoints (None): the real OpenAI backend, built, guarded and keyed as in production.
                return self.real_backends.get(name) or self.backends.get(name)

            board = Switchboard(
                Router(KeywordClassifier(), routing_policy(), catalogue),
                cache_dir=settings.cache_dir,
                session=session,
                guard=guard,
                backend_factory=factory,
                clock=self.board_clock,
                env=settings.operator_env(),
            )
            store = await Store.open(settings.resolved_database_url)
            self.probe.attach(store)
            self.store, self.board = store, board
            knowledge = None
            try:
                if self.with_knowledge:
                    knowledge = KnowledgeBase(await open_index(settings.resolved_database_url), shared_embedder())
                self.knowledge = knowledge
                await board.start(probe=False)
                bot = SwitchboardBot(
                    settings=settings,
                    board=board,
                    store=store,
                    limiter=self._limiter(settings, store),
                    clock=self.clock,
                    shutdown_grace_s=self.shutdown_grace_s,
                    wall_clock=self.wall_clock,
                    guild_ready_timeout=0.05,
                    knowledge=knowledge,
                )
                self.bot = bot
                self.runs += 1
                async with self._run_bot(bot):
                    yield bot
            finally:
                await board.aclose()
                if knowledge is not None:
                    await knowledge.close()
                await store.close()

    def _limiter(self, settings: Settings, store: Store) -> Limiter:
        # Asked for shared buckets (several bot processes): the database's, on the same manual clock.
        return StoreRateLimiter(store, clock=self.limiter_clock) if settings.shared_rate_limits else self.limiter

    # -- waiting and inspecting ---------------------------------------------------------------------
    async def wait_answered(self, interaction: Any, timeout: float = 5.0) -> InteractionSummary:  # noqa: ASYNC109
        """Until the reply carries its footer (or an error note) in its last message."""

        def done(s: InteractionSummary) -> bool:
            return bool(s.messages) and is_final(s.messages[-1]["content"])

        return await self.fake.wait_for_response(interaction, done, timeout)

    async def wait_final_message(self, channel_id: str | None = None, timeout: float = 5.0) -> dict[str, Any]:  # noqa: ASYNC109
        return await self.fake.wait_for_message(channel_id, lambda m: is_final(m["content"]), timeout=timeout)


def is_final(content: str) -> bool:
    return bool(FOOTER_RE.search(content)) or content.startswith("⚠️") or "\n⚠️" in content


def message_writes(fake: FakeDiscord) -> list[RecordedRequest]:
    """Every REST call that creates or edits a message (channel, interaction callback, webhook)."""
    out = []
    for r in fake.requests:
        if r.method not in ("POST", "PATCH"):
            continue
        if re.search(r"^/channels/\d+/messages(/\d+)?$", r.path) or r.path.startswith("/webhooks/"):
            out.append(r)
        elif r.path.startswith("/interactions/") and (r.json or {}).get("type") in (4, 7):
            out.append(r)
    return out


def allowed_mentions(request: RecordedRequest) -> Any:
    """The `allowed_mentions` a message write carried (inside `data` for an interaction callback)."""
    body = request.json or {}
    if request.path.startswith("/interactions/"):
        body = body.get("data") or {}
    return body.get("allowed_mentions")


def fence_lines(text: str) -> int:
    return sum(1 for line in text.split("\n") if line.lstrip(" \t").startswith("```"))


@pytest.fixture
def switchboard(
    fake_discord: FakeDiscord, run_bot: Any, tmp_path: Path, discord_errors: logging.Handler
) -> Iterator[Harness]:
    loggers = [logging.getLogger(name) for name in BOT_LOGGERS]
    for logger in loggers:
        logger.addHandler(discord_errors)
    try:
        yield Harness(fake_discord, run_bot, tmp_path)
    finally:
        for logger in loggers:
            logger.removeHandler(discord_errors)
