"""The Bot subclass and the wiring that builds its resources (discord.py's advanced_startup style)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeGuard

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.answering import AnswerService
from bot.confirm import Confirmations
from bot.conversations import ConversationService
from bot.corrections import Corrections
from bot.delivery import Delivery
from bot.endpoints import EndpointService
from bot.everyday import EverydayService
from bot.keybox import KeyBox
from bot.knowledge import KnowledgeService
from bot.observability import OpsServer
from bot.ratelimit import Limiter, limiter_for
from bot.reminders import MakePoll, Remind, member_can_view
from bot.scheduler import Scheduler, WallClock, default_owner, utc_now
from bot.settings import Settings
from bot.storage import Store
from bot.tools import GuildInfo, RequestContext, ToolService, guild_info
from inference.serving.service import Switchboard

if TYPE_CHECKING:
    from inference.knowledge.service import KnowledgeBase
    from inference.tools import ToolBox
    from inference.tools.base import Confirm, Tool

log = logging.getLogger(__name__)

EXTENSIONS = (
    "cogs.ask",
    "cogs.chat",
    "cogs.everyday",
    "cogs.admin",
    "cogs.stats",
    "cogs.docs",
    "cogs.help",
    "cogs.feedback",
    "cogs.reminders",
    "cogs.agent",
)


class RedactFormValues(logging.Filter):
    """discord.py logs every gateway event at DEBUG; what a user types into a form (an API key) must not be.

    Installed on the ``discord.gateway`` logger: a modal submit's values become ``***`` in the record.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(_is_form_submit(a) for a in record.args):
            record.args = tuple(_redacted(a) if _is_form_submit(a) else a for a in record.args)
        return True


def _is_form_submit(payload: object) -> TypeGuard[dict[str, Any]]:
    if not isinstance(payload, dict) or payload.get("t") != "INTERACTION_CREATE":
        return False
    data = payload.get("d")
    return isinstance(data, dict) and data.get("type") == discord.InteractionType.modal_submit.value


def _redacted(payload: dict[str, Any]) -> dict[str, Any]:
    def scrub(node: object) -> object:
        if isinstance(node, dict):
            return {k: ("***" if k == "value" else scrub(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [scrub(v) for v in node]
        return node

    return {**payload, "d": scrub(payload["d"])}


_FORM_FILTER = RedactFormValues()


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


class SwitchboardBot(commands.AutoShardedBot):
    """Receives every resource in its constructor; loads cogs and syncs commands in setup_hook.

    Sharded: the shard count comes from settings or, unset, from Discord (GET /gateway/bot); a process runs
    ``settings.shard_ids`` (all when unset), so a large bot runs as several processes over one database."""

    def __init__(
        self,
        *,
        settings: Settings,
        board: Switchboard,
        store: Store,
        limiter: Limiter | None = None,
        keybox: KeyBox | None = None,
        knowledge: KnowledgeBase | None = None,
        tools: ToolBox | None = None,
        shutdown_grace_s: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: WallClock = utc_now,
        **options: object,
    ) -> None:
        logging.getLogger("discord.gateway").addFilter(_FORM_FILTER)  # idempotent: one shared instance
        # A text bot: the voice extras' start-up warnings are noise.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        intents = discord.Intents.default()
        intents.message_content = True  # thread conversations and mentions read message text
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            # Nothing the bot sends may ping anyone unless a call opts in explicitly.
            allowed_mentions=discord.AllowedMentions.none(),
            help_command=None,
            tree_cls=SwitchboardTree,
            shard_count=settings.shard_count,
            # None (every shard) is discord.py's own default, though its type hint names only a list.
            shard_ids=list(settings.shard_ids) if settings.shard_ids is not None else None,  # type: ignore[arg-type]
            **options,  # type: ignore[arg-type]
        )
        self.settings = settings
        self.board = board
        self.store = store
        # Not `limiter or ...`: an empty RateLimiter is falsy (it has __len__). Several processes (shards) on one
        # database share buckets there; one process on SQLite keeps them in memory.
        self.limiter = limiter if limiter is not None else limiter_for(settings, store)
        #: Seals the API keys server admins give for their endpoints (bot/keybox.py).
        self.keybox = keybox or KeyBox.from_secret_or_file(
            settings.secret_key.get_secret_value() if settings.secret_key else None, settings.data_dir / "secret.key"
        )
        self.shutdown_grace_s = shutdown_grace_s
        #: Monotonic clock for streaming edits and the footer's time (tests pass a manual one).
        self.clock = clock
        # The services the cogs receive (each cog's setup names the ones it uses).
        #: Users' corrections of routes, per server, as the router's memory (bot/corrections.py).
        self.corrections = Corrections(store, embed=board.embed, clock=clock)
        #: The tools a tool_use request may call, per server (bot/tools.py): built-ins, the operator's HTTP tools
        #: (config/tools.yaml, behind the endpoint guard) and server_info.
        self.tools = ToolService(
            tools if tools is not None else _default_tools(settings, board),
            self._guild_info,
            request_tools=self._request_tools,
            confirm=self._request_confirm,
        )
        self.answers = AnswerService(board, store, settings, self.keybox, knowledge, self.corrections, self.tools)
        self.delivery = Delivery(self.answers, self.limiter, settings, clock)
        self.conversations = ConversationService(store, board)
        self.endpoints = EndpointService(board, store, self.keybox)
        self.everyday = EverydayService(self.answers, self.delivery, settings, clock)
        #: The server's knowledge base on Discord (/docs and its sync listeners); None when not built.
        self.knowledge = (
            KnowledgeService(knowledge, max_file_bytes=settings.max_attachment_bytes) if knowledge is not None else None
        )
        #: /health and /metrics for operators (bot/observability.py), when settings.metrics_port is set.
        self.ops: OpsServer | None = None
        self._jobs: set[asyncio.Task[object]] = set()
        self.closing = False
        self._close_task: asyncio.Task[None] | None = None
        #: Wall-clock UTC time for scheduled jobs (reminders); tests pass a manual one.
        self.wall_clock = wall_clock
        #: Jobs kept in the database (bot/scheduler.py); cogs register a handler per kind.
        self.scheduler = Scheduler(
            store,
            wall_clock,
            default_owner(),
            poll_s=settings.scheduler_poll_s,
            ready=self.wait_until_ready,  # a job fired before the gateway is up would find no channel
            # A process running some shards fires only its servers' jobs (all shards: every job).
            shards=(settings.shard_count, settings.shard_ids)
            if settings.shard_ids is not None and settings.shard_count is not None
            else None,
        )
        #: Confirm / Cancel prompts for actions that speak for the bot (bot/confirm.py).
        self.confirmations = Confirmations(settings.confirm_timeout_s)

    def messageable(self, channel_id: int | None) -> discord.abc.Messageable | None:
        """A channel to post in by id: the cached one, else a partial one (posting needs no cache)."""
        if channel_id is None:
            return None
        channel = self.get_channel(channel_id)
        return channel if isinstance(channel, discord.abc.Messageable) else self.get_partial_messageable(channel_id)

    def _request_tools(self, request: RequestContext) -> list[Tool]:
        """``remind`` and ``poll``, bound to the channel the request came from (bot/reminders.py)."""
        if request.channel_id is None:
            return []
        channel_id, guild_id = request.channel_id, request.guild_id

        async def can_view(user_id: int) -> bool:  # someone else reminded must see the channel it is posted in
            return await member_can_view(self.get_guild(guild_id) if guild_id else None, channel_id, user_id)

        remind = Remind(
            self.store,
            self.wall_clock,
            guild_id=guild_id,
            channel_id=channel_id,
            user_id=request.user_id,
            can_view=can_view,
        )
        return [remind, MakePoll(lambda: self.messageable(channel_id))]

    def _request_confirm(self, request: RequestContext) -> Confirm | None:
        """Confirm / Cancel for the request's calls that act, asked of its user in its channel."""
        if request.channel_id is None:
            return None
        channel_id = request.channel_id
        return self.confirmations.for_tools(lambda: self.messageable(channel_id), request.user_id)

    def _guild_info(self, guild_id: int) -> GuildInfo | None:
        guild = self.get_guild(guild_id)
        return guild_info(guild) if guild is not None else None

    async def on_message(self, message: discord.Message, /) -> None:
        # No text commands: mentions are questions for the ask cog, not a command prefix. (The default
        # would run process_commands and log CommandNotFound at ERROR for every mention.)
        return

    async def setup_hook(self) -> None:
        if self.settings.metrics_port is not None:
            self.ops = OpsServer(self)
            await self.ops.start(self.settings.metrics_host, self.settings.metrics_port)
        for ext in EXTENSIONS:
            await self.load_extension(ext)
        if self.settings.scheduler_poll_s > 0:  # 0: run only when asked (tests call scheduler.run_due())
            self.scheduler.start()
        if self.shard_ids is not None and 0 not in self.shard_ids:
            return  # commands belong to the application, not a shard: the process running shard 0 syncs them
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
        # Re-entrant: a job inside a job (a chat turn inside its message handler) ends with the outer one.
        added = task is not None and task not in self._jobs
        if added:
            self._jobs.add(task)  # type: ignore[arg-type]
        try:
            yield
        finally:
            if added:
                self._jobs.discard(task)  # type: ignore[arg-type]

    async def close(self) -> None:
        # Every caller (signal handler, `async with bot`, a test) waits for the same shutdown, so nothing
        # is released (HTTP session, store) while replies are still being finished.
        if self._close_task is None:
            self.closing = True
            self._close_task = asyncio.ensure_future(self._close())
        await asyncio.shield(self._close_task)

    async def _close(self) -> None:
        # Running jobs get the same grace period as replies, at the same time (not one after the other).
        scheduler = asyncio.ensure_future(self.scheduler.stop(self.shutdown_grace_s))
        self.confirmations.cancel_all()  # an unanswered prompt is a no: the replies waiting on it can finish
        jobs = [t for t in self._jobs if not t.done()]
        if jobs:
            log.info("waiting up to %.0fs for %d in-flight replies", self.shutdown_grace_s, len(jobs))
            _done, pending = await asyncio.wait(jobs, timeout=self.shutdown_grace_s)
            for task in pending:
                task.cancel()  # the reply handler says it was cut off
            if pending:
                await asyncio.wait(pending, timeout=5)
        await scheduler
        if self.ops is not None:
            await self.ops.stop()
        await super().close()


def _default_tools(settings: Settings, board: Switchboard) -> ToolBox:
    from inference.tools import default_toolbox

    return default_toolbox(env=settings.operator_env(), guard=board.guard)


async def start(settings: Settings) -> None:
    """Build everything from settings, run until closed, then release everything in order."""
    from bot.storage import Store
    from inference.catalogue import load_catalogue, load_routing
    from inference.classifier import TaskClassifier
    from inference.errors import ConfigError
    from inference.knowledge.service import KnowledgeBase
    from inference.router import Router
    from inference.serving.netguard import Guard

    env = settings.operator_env()
    catalogue = load_catalogue(settings.catalogue_path, env)
    policy = load_routing(settings.routing_path, catalogue, env)
    classifier = await asyncio.to_thread(
        TaskClassifier.load, settings.cache_dir, long_context_tokens=policy.escalation.long_context_tokens
    )
    guard = Guard(
        allow_private=settings.allow_private_endpoints,
        allowed_hosts=frozenset(settings.allowed_endpoint_hosts),
    )
    async with aiohttp.ClientSession() as session:
        board = Switchboard(
            Router(classifier, policy, catalogue),
            cache_dir=settings.cache_dir,
            session=session,
            guard=guard,
            env=env,
        )
        store = await Store.open(settings.resolved_database_url)
        knowledge: KnowledgeBase | None = None
        try:
            try:
                knowledge = await KnowledgeBase.open(settings.resolved_database_url, settings.cache_dir)
            except ConfigError as exc:  # the embedder is not prepared: everything but /docs still works
                log.warning("start-up: knowledge base off (/docs): %s", exc)
            warm = [*policy.models.values()] if settings.warm_models else []
            for note in await board.start(probe=True, warm=warm):
                log.warning("start-up: %s", note)
            bot = SwitchboardBot(settings=settings, board=board, store=store, knowledge=knowledge)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
            async with bot:
                assert settings.discord_token is not None
                await bot.start(settings.discord_token.get_secret_value())
        finally:
            await board.aclose()
            if knowledge is not None:
                await knowledge.close()
            await store.close()
            log.info("shut down cleanly")


def run_bot(settings: Settings) -> int:
    from bot.storage import StorageError

    try:
        asyncio.run(start(settings))
    except StorageError as exc:
        # The store opens before Discord is contacted: one line naming the database and what to do.
        log.error("%s", exc)
        return 2
    except discord.LoginFailure:
        log.error("Discord refused the token (DISCORD_TOKEN): check it in the developer portal")
        return 2
    except (aiohttp.ClientConnectionError, OSError) as exc:
        # Not a bug to trace: the network or Discord is down. Say so in one line.
        log.error("cannot reach Discord: %s", exc)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
