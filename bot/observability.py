"""What operators see of a running bot: ``GET /health`` and ``GET /metrics`` (Prometheus), on their own port.

Served only when ``SWITCHBOARD_METRICS_PORT`` is set (compose sets it for its health check), on loopback unless
``SWITCHBOARD_METRICS_HOST`` says otherwise. ``/health`` is 200 when the gateway is connected and the database
answers, else 503, with the details as JSON either way. ``/metrics`` holds the same families as ``python -m bot
serve`` (requests per task, tier, model and outcome; latency and first-token histograms; refusals by reason;
fallbacks; in-flight requests per model) plus the bot's own: servers, and gateway latency per shard.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import Gauge

from inference.serving.metrics import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from bot.app import SwitchboardBot

log = logging.getLogger(__name__)

#: Longest the database check may take before the bot counts as unhealthy.
DB_TIMEOUT_S = 5.0


class OpsServer:
    """The health and metrics endpoints of one bot process."""

    def __init__(self, bot: SwitchboardBot) -> None:
        self.bot = bot
        self.metrics = bot.answers.metrics
        registry = self.metrics.registry
        self._guilds = Gauge("switchboard_discord_guilds", "Servers this process sees", registry=registry)
        self._latency = Gauge(
            "switchboard_discord_latency_seconds", "Gateway heartbeat latency", ["shard"], registry=registry
        )
        self._runner: web.AppRunner | None = None
        #: The port actually bound (the setting may be 0: any free port).
        self.port: int | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics_page)
        return app

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = int(self._runner.addresses[0][1])  # port 0 picks a free one
        log.info("health and metrics on http://%s:%s/ (/health, /metrics)", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def health(self, request: web.Request) -> web.Response:
        bot = self.bot
        # Ready stays true through a gateway outage: a shard whose socket is closed means not connected.
        shards_up = bool(bot.shards) and not any(shard.is_closed() for shard in bot.shards.values())
        gateway = "closed" if bot.is_closed() else "connected" if bot.is_ready() and shards_up else "connecting"
        try:
            async with asyncio.timeout(DB_TIMEOUT_S):
                await bot.store.ping()
            database = "ok"
        except Exception as exc:  # any failure is the answer, not a crash of the endpoint
            database = f"unreachable ({type(exc).__name__})"
        ok = gateway == "connected" and database == "ok" and not bot.closing
        body = {
            "ok": ok,
            "gateway": gateway,
            "database": database,
            "shards": sorted(bot.shards),
            "stand_ins": dict(bot.board.substitutes),
        }
        return web.json_response(body, status=200 if ok else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        bot = self.bot
        self.metrics.queue_depths(bot.board)
        self._guilds.set(len(bot.guilds))
        for shard_id, shard in bot.shards.items():
            if shard.latency == shard.latency:  # NaN until the first heartbeat is acknowledged
                self._latency.labels(str(shard_id)).set(shard.latency)
        return web.Response(body=self.metrics.page(), headers={"Content-Type": CONTENT_TYPE_LATEST})
