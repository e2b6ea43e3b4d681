"""Operators see the bot working: /health and /metrics on the bot's own port, off unless asked for."""

from __future__ import annotations

import aiohttp
import pytest

from tests.e2e.bot_harness import Harness


async def _get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.text()


def _sample(page: str, name: str, **labels: str) -> float | None:
    """The value of one sample of the text exposition format, or None when it is absent."""
    for line in page.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_health_and_metrics_count_answers_and_refusals(switchboard: Harness) -> None:
    fake = switchboard.fake
    switchboard.settings_overrides = {"metrics_port": 0, "max_prompt_chars": 40}
    async with switchboard.running() as bot:
        assert bot.ops is not None and bot.ops.port
        port = bot.ops.port
        await fake.wait_for(bot.is_ready)
        status, body = await _get(port, "/health")
        assert status == 200 and '"gateway": "connected"' in body and '"database": "ok"' in body

        await switchboard.wait_answered(await fake.send_interaction("ask", {"prompt": "hello there"}))
        refused = await fake.send_interaction("ask", {"prompt": "x" * 200})
        await fake.wait_for_response(refused, lambda summary: summary.followups)

        status, page = await _get(port, "/metrics")
        assert status == 200
        assert _sample(page, "switchboard_requests_total", task="chat", tier="small", outcome="ok") == 1
        assert _sample(page, "switchboard_refusals_total", reason="invalid_request") == 1
        assert _sample(page, "switchboard_request_seconds_count", task="chat", tier="small") == 1
        assert _sample(page, "switchboard_backend_in_flight", model="small-fake") == 0
        assert _sample(page, "switchboard_discord_guilds") == 1
    # Closed with the bot: nothing listens any more.
    try:
        await _get(port, "/health")
    except aiohttp.ClientConnectionError:
        pass
    else:
        raise AssertionError("the ops server outlived the bot")


async def test_no_ops_port_unless_configured(switchboard: Harness) -> None:
    async with switchboard.running() as bot:
        assert bot.ops is None


async def test_health_is_503_when_the_database_does_not_answer(
    switchboard: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    switchboard.settings_overrides = {"metrics_port": 0}
    async with switchboard.running() as bot:
        assert bot.ops is not None and bot.ops.port
        await switchboard.fake.wait_for(bot.is_ready)

        async def unreachable() -> None:
            raise ConnectionRefusedError("database is down")

        monkeypatch.setattr(bot.store, "ping", unreachable)
        status, body = await _get(bot.ops.port, "/health")
        assert status == 503 and '"database": "unreachable (ConnectionRefusedError)"' in body


async def test_a_server_admins_own_model_is_counted_under_one_label(switchboard: Harness) -> None:
    """Its name is the admin's to choose (and change): it must not become a series of its own."""
    from inference.catalogue import OpenAIModel
    from inference.types import Tier
    from tests.e2e.bot_harness import PUBLIC_HOST
    from tests.fakes.backends import ScriptedBackend

    fake = switchboard.fake
    switchboard.settings_overrides = {"metrics_port": 0}
    switchboard.backends["my-secret-project"] = ScriptedBackend("my-secret-project", "hi", clock=switchboard.clock)
    async with switchboard.running() as bot:
        assert bot.ops is not None and bot.ops.port
        store = bot.store
        guild, alice = int(fake.guild_id), int(fake.user["id"])
        spec = OpenAIModel(base_url=f"https://{PUBLIC_HOST}/v1", model="m", tier=Tier.SMALL)
        await store.add_model(guild, alice, "my-secret-project", spec)
        await store.set_task_model(guild, alice, "chat", "my-secret-project")
        answered = await switchboard.wait_answered(await fake.send_interaction("ask", {"prompt": "hello"}))
        assert "my\\-secret\\-project" in answered.content or "my-secret-project" in answered.content
        _status, page = await _get(bot.ops.port, "/metrics")
    assert "my-secret-project" not in page
    assert _sample(page, "switchboard_requests_total", task="chat", model="custom", outcome="ok") == 1
