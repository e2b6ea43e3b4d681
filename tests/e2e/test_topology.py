"""compose.yaml's topology without containers: the bot (through the fake Discord) on a real PostgreSQL the suite
starts, with its large tier a real OpenAI-compatible server (``transformers serve`` with the packaged SmolLM2) on
127.0.0.1. A hard request is answered by that server; the request, the server's settings and the knowledge base
all live in PostgreSQL, where a second bot process on the same database finds them."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from bot.storage import request_log
from inference.knowledge.postgres import asyncpg_url
from tests.e2e.bot_harness import LARGE, Harness
from tests.fakes.backends import fake_catalogue
from tests.integration.test_transformers_serve import _backend, serve_url  # noqa: F401 - a fixture
from tests.unit.bot.test_storage import fresh_postgres_database

pytestmark = pytest.mark.real_model


async def test_bot_postgres_and_a_serving_engine_side_by_side(
    switchboard: Harness,
    postgres_url: str,
    serve_url: str,  # noqa: F811 - the fixture imported above
) -> None:
    fake = switchboard.fake
    url = await fresh_postgres_database(postgres_url, "topology")
    switchboard.database_url = url
    switchboard.with_knowledge = True
    real = _backend(serve_url, stream=True)
    switchboard.real_backends[LARGE] = real
    # The fakes' catalogue allows 5 s to a first token; a real model on two shared cores needs longer.
    catalogue = fake_catalogue()
    catalogue.models[LARGE] = catalogue.models[LARGE].model_copy(update={"timeouts": real.spec.timeouts})
    switchboard.catalogue = catalogue
    switchboard.settings_overrides["max_new_tokens"] = 12
    async with switchboard.running():
        assert switchboard.store is not None and switchboard.knowledge is not None
        assert type(switchboard.knowledge.index).__name__ == "PostgresIndex"  # pgvector + full text, same server
        await switchboard.store.update_guild_config(int(fake.guild_id), 1, "test", rate_limit_burst=10)
        it = await fake.send_interaction("ask", {"prompt": "prove that 2 + 2 = 4 in one line"})
        answer = await switchboard.wait_answered(it, timeout=240)
        text, footer = answer.content.rsplit("\n-# ", 1)
        assert text.strip() and footer.startswith(f"chat · large · {LARGE}")
    engine = create_async_engine(asyncpg_url(url))
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(func.count()).select_from(request_log))).scalar_one()
    finally:
        await engine.dispose()
    assert rows == 1
    # A second bot process on the same database: the server's settings are there.
    switchboard.real_backends.clear()
    async with switchboard.running():
        assert switchboard.store is not None
        config = await switchboard.store.guild_config(int(fake.guild_id))
        assert config.rate_limit_burst == 10
