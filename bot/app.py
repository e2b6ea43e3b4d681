"""The Bot subclass and the wiring that builds its resources (discord.py's advanced_startup style)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.answering import AnswerService
from bot.ratelimit import RateLimiter
from bot.settings import Settings
from bot.storage import Store
from inference.service import Switchboard

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.ask", "cogs.chat", "cogs.admin", "cogs.stats")


class SwitchboardTree(app_commands.CommandTree):
    """Turns unexpected command errors into a short private message instead of a silent failure."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        if isinstance(error, app_commands.CheckFailure):
            return  # the check already told the user
        log.error(
            "command %s failed",
            interaction.command.qualified_name if interaction.command else "?",
            exc_info=error,
        )
        message = "Something went wrong on my side; the error was logged."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(message, ephemeral=True)
            else:
                await interaction.response.send_message(message, ephemeral=True)
        except discord.HTTPException:
            pass


class SwitchboardBot(commands.Bot):
    """Receives every resource in its constructor; loads cogs and syncs commands in setup_hook."""

    def __init__(
        self,
        *,
        settings: Settings,
        board: Switchboard,
        store: Store,
        limiter: RateLimiter | None = None,
        shutdown_grace_s: float = 20.0,
        **options: object,
    ) -> None:
        intents = discord.Intents.default()
        intents.message_content = True  # thread conversations and mentions read message text
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            # Nothing the bot sends may ping anyone unless a call opts in explicitly.
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            tree_cls=SwitchboardTree,
            **options,  # type: ignore[arg-type]
        )
        self.settings = settings
        self.board = board
        self.store = store
        self.limiter = limiter or RateLimiter()
        self.answers = AnswerService(board, store, settings)
        self.shutdown_grace_s = shutdown_grace_s
        self._jobs: set[asyncio.Task[object]] = set()
        self.closing = False

    async def setup_hook(self) -> None:
        for ext in EXTENSIONS:
            await self.load_extension(ext)
        if self.settings.dev_guild_id:
            guild = discord.Object(self.settings.dev_guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)
        else:
            await self.tree.sync()

    @contextlib.asynccontextmanager
    async def job(self) -> AsyncIterator[None]:
        """Mark the current task as an in-flight reply so shutdown lets it finish (within a grace period)."""
        task = asyncio.current_task()
        if task is not None:
            self._jobs.add(task)  # type: ignore[arg-type]
        try:
            yield
        finally:
            if task is not None:
                self._jobs.discard(task)  # type: ignore[arg-type]

    async def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        jobs = [t for t in self._jobs if not t.done()]
        if jobs:
            log.info("waiting up to %.0fs for %d in-flight replies", self.shutdown_grace_s, len(jobs))
            _done, pending = await asyncio.wait(jobs, timeout=self.shutdown_grace_s)
            for task in pending:
                task.cancel()  # the reply handler says it was cut off
            if pending:
                await asyncio.wait(pending, timeout=5)
        await super().close()


async def start(settings: Settings) -> None:
    """Build everything from settings, run until closed, then release everything in order."""
    from inference.classifier import TaskClassifier

    from bot.storage import Store
    from inference.catalogue import load_catalogue, load_routing
    from inference.netguard import Guard
    from inference.router import Router

    catalogue = load_catalogue(settings.catalogue_path)
    policy = load_routing(settings.routing_path, catalogue)
    classifier = await asyncio.to_thread(TaskClassifier.load, settings.cache_dir)
    guard = Guard(
        allow_private=settings.allow_private_endpoints,
        allowed_hosts=frozenset(settings.allowed_endpoint_hosts),
    )
    async with aiohttp.ClientSession() as session:
        board = Switchboard(
            Router(classifier, policy, catalogue), cache_dir=settings.cache_dir, session=session, guard=guard
        )
        store = await Store.open(settings.resolved_database_url)
        try:
            warm = [*policy.models.values()] if settings.warm_models else []
            for note in await board.start(probe=True, warm=warm):
                log.warning("start-up: %s", note)
            bot = SwitchboardBot(settings=settings, board=board, store=store)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
            async with bot:
                assert settings.discord_token is not None
                await bot.start(settings.discord_token.get_secret_value())
        finally:
            await board.aclose()
            await store.close()
            log.info("shut down cleanly")


def run_bot(settings: Settings) -> int:
    try:
        asyncio.run(start(settings))
    except discord.LoginFailure:
        log.error("Discord refused the token (DISCORD_TOKEN): check it in the developer portal")
        return 2
    return 0
