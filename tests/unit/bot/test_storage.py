"""The store keeps per-server state across restarts, validates before writing, and audits every change.

Every test uses a real SQLite file in tmp_path, migrated by alembic exactly as the bot does at start-up.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import SecretStr, ValidationError
from sqlalchemy import Connection, inspect
from sqlalchemy.exc import IntegrityError

from bot.storage import (
    AlreadyExists,
    GuildConfig,
    NotFound,
    Store,
    alembic_config,
    guild_models,
    guild_settings,
    make_engine,
    messages,
    metadata,
    migrate,
)
from inference.catalogue import OpenAIModel, RoutingOverrides
from inference.types import ChatMessage, Tier

GUILD, OTHER_GUILD, ADMIN = 111, 222, 42
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float = 1) -> None:
        self.now += timedelta(seconds=seconds)


_DATABASES = itertools.count()


@pytest.fixture(params=["sqlite", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store test runs on SQLite and on a real PostgreSQL (started by the suite: ``postgres_url``)."""
    if request.param == "sqlite":
        # A nested dir that does not exist yet: opening creates it.
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'switchboard.db'}"
    return await fresh_postgres_database(request.getfixturevalue("postgres_url"), f"store_{next(_DATABASES)}")


async def fresh_postgres_database(server_url: str, name: str) -> str:
    """An empty database ``name`` on the test server, as an asyncpg URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    from inference.knowledge.postgres import asyncpg_url

    base = make_url(asyncpg_url(server_url))
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        await admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(url: str, clock: Clock) -> AsyncIterator[Store]:
    store = await Store.open(url, clock=clock)
    yield store
    await store.close()


def spec(model: str = "llama-3.1-8b") -> OpenAIModel:
    return OpenAIModel.model_validate({"tier": "large", "base_url": "https://api.example.com/v1", "model": model})


# --- guild config -----------------------------------------------------------------------------------------


async def test_defaults_when_nothing_stored(store: Store):
    config = await store.guild_config(GUILD)
    assert config == GuildConfig()
    assert config.task_models == {} and config.threshold is None
    assert config.channel_system_prompts == {} and config.allowed_channels == []
    assert (config.rate_limit_per_minute, config.rate_limit_burst, config.max_prompt_chars) == (20, 8, 4000)
    assert config.exempt_roles == []
    assert config.channel_allowed(123) and config.system_prompt_for(123) is None
    assert await store.audit(GUILD) == []


async def test_update_persists_and_writes_audit_row(store: Store, clock: Clock):
    updated = await store.update_guild_config(
        GUILD, ADMIN, "routes.set", task_models={"code": "big-coder"}, threshold=0.3
    )
    assert updated.task_models == {"code": "big-coder"} and updated.threshold == 0.3

    config = await store.guild_config(GUILD)
    assert config == updated
    assert config.routing_overrides() == RoutingOverrides(task_models={"code": "big-coder"}, threshold=0.3)
    assert await store.guild_config(OTHER_GUILD) == GuildConfig()

    [entry] = await store.audit(GUILD)
    assert (entry.guild_id, entry.actor_id, entry.action) == (GUILD, ADMIN, "routes.set")
    assert entry.details == {
        "changes": {"task_models": {"code": "big-coder"}, "threshold": 0.3},
        "previous": {"task_models": {}, "threshold": None},
    }
    assert entry.at == T0 and entry.at.tzinfo is not None


async def test_updates_accumulate_and_channel_keys_come_back_as_ints(store: Store):
    await store.update_guild_config(GUILD, ADMIN, "prompt.set", channel_system_prompts={555: "Be terse."})
    await store.update_guild_config(GUILD, ADMIN, "channels.set", allowed_channels=[555, 556])
    await store.update_guild_config(GUILD, ADMIN, "limits.set", rate_limit_per_minute=10)
    config = await store.guild_config(GUILD)
    assert config.system_prompt_for(555) == "Be terse."
    assert config.channel_allowed(556) and not config.channel_allowed(999)
    assert config.rate_limit_per_minute == 10
    assert [e.action for e in await store.audit(GUILD)] == ["limits.set", "channels.set", "prompt.set"]


@pytest.mark.parametrize(
    "changes",
    [
        {"threshold": 2.0},
        {"threshold": -0.1},
        {"colour": "red"},
        {"threshold": 0.5, "colour": "red"},
        {"task_models": {"not-a-task": "m"}},
        {"rate_limit_per_minute": 0},
        {"max_prompt_chars": "lots"},
        {"channel_system_prompts": {"general": "hi"}},
        {"allowed_channels": "everywhere"},
    ],
)
async def test_invalid_change_raises_and_writes_nothing(store: Store, changes: dict[str, object]):
    await store.update_guild_config(GUILD, ADMIN, "threshold.set", threshold=0.7)
    with pytest.raises(ValidationError):
        await store.update_guild_config(GUILD, ADMIN, "bad", **changes)
    assert (await store.guild_config(GUILD)).threshold == 0.7
    assert [e.action for e in await store.audit(GUILD)] == ["threshold.set"]


async def test_reset_routes_clears_task_models_and_threshold_only(store: Store):
    await store.update_guild_config(GUILD, ADMIN, "routes.set", task_models={"chat": "m"}, threshold=0.9)
    await store.update_guild_config(GUILD, ADMIN, "limits.set", rate_limit_burst=5)
    config = await store.reset_guild_routes(GUILD, ADMIN + 1)
    assert config == await store.guild_config(GUILD)
    assert config.task_models == {} and config.threshold is None and config.rate_limit_burst == 5
    latest = (await store.audit(GUILD))[0]
    assert (latest.actor_id, latest.action) == (ADMIN + 1, "routes.reset")
    assert latest.details["previous"] == {"task_models": {"chat": "m"}, "threshold": 0.9, "task_thresholds": {}}


async def test_set_one_task_model_or_channel_prompt_keeps_the_others(store: Store):
    await store.set_task_model(GUILD, ADMIN, "code", "coder")
    await store.set_task_model(GUILD, ADMIN, "chat", "chatty")
    await store.set_channel_prompt(GUILD, ADMIN, 10, "Ten.")
    await store.set_channel_prompt(GUILD, ADMIN, 20, "Twenty.")
    await store.set_task_model(GUILD, ADMIN, "chat", None)
    await store.set_channel_prompt(GUILD, ADMIN, 10, None)
    config = await store.guild_config(GUILD)
    assert config.task_models == {"code": "coder"}
    assert config.channel_system_prompts == {20: "Twenty."}
    assert [e.action for e in await store.audit(GUILD)][:2] == ["prompt.clear", "route.clear"]
    with pytest.raises(ValidationError):
        await store.set_task_model(GUILD, ADMIN, "juggling", "m")  # type: ignore[arg-type]
    assert len(await store.audit(GUILD)) == 6


async def test_stored_unknown_keys_ignored_and_invalid_values_fall_back(store: Store):
    async with store.engine.begin() as conn:
        data = {"threshold": 0.25, "from_a_newer_version": True, "rate_limit_per_minute": -3}
        await conn.execute(guild_settings.insert().values(guild_id=GUILD, data=data, updated_at=T0))
    config = await store.guild_config(GUILD)
    assert config.threshold == 0.25 and config.rate_limit_per_minute == 20
    # Updating one field keeps the keys this version does not know.
    await store.update_guild_config(GUILD, ADMIN, "threshold.set", threshold=0.5)
    async with store.engine.connect() as conn:
        stored = (await conn.execute(guild_settings.select())).one().data
    assert stored["from_a_newer_version"] is True and stored["threshold"] == 0.5


# --- custom models ----------------------------------------------------------------------------------------


async def test_custom_models_add_list_remove_with_audit(store: Store):
    added = await store.add_model(GUILD, ADMIN, "llama", spec())
    await store.add_model(GUILD, ADMIN, "aardvark", spec("other"))
    await store.add_model(OTHER_GUILD, ADMIN, "llama", spec())  # names are per guild

    models = await store.list_models(GUILD)
    assert [m.name for m in models] == ["aardvark", "llama"]
    assert models[1] == added
    assert models[1].spec.model == "llama-3.1-8b" and models[1].created_by == ADMIN

    await store.remove_model(GUILD, ADMIN, "llama")
    assert [m.name for m in await store.list_models(GUILD)] == ["aardvark"]
    assert [m.name for m in await store.list_models(OTHER_GUILD)] == ["llama"]

    entries = await store.audit(GUILD)
    assert [e.action for e in entries] == ["model.remove", "model.add", "model.add"]
    stored_spec = spec().model_dump(mode="json", exclude={"api_key", "api_key_env"})
    assert entries[-1].details == {"name": "llama", "spec": stored_spec}


async def test_duplicate_model_raises_already_exists_and_audits_nothing(store: Store):
    await store.add_model(GUILD, ADMIN, "llama", spec())
    with pytest.raises(AlreadyExists, match="llama"):
        await store.add_model(GUILD, ADMIN, "llama", spec("different"))
    assert (await store.list_models(GUILD))[0].spec.model == "llama-3.1-8b"
    assert len(await store.audit(GUILD)) == 1


async def test_removing_missing_model_raises_not_found_and_audits_nothing(store: Store):
    with pytest.raises(NotFound, match="ghost"):
        await store.remove_model(GUILD, ADMIN, "ghost")
    assert await store.audit(GUILD) == []


# --- conversations ----------------------------------------------------------------------------------------


async def test_conversation_survives_close_and_reopen(url: str, clock: Clock):
    store = await Store.open(url, clock=clock)
    await store.create_conversation(900, GUILD, 10, 20, Tier.SMALL, "smollm2", system_prompt="Be kind.")
    await store.add_message(900, "user", "hello", 2)
    clock.tick()
    await store.add_message(900, "assistant", "hi there", 3)
    await store.set_conversation_tier(900, Tier.LARGE, "qwen-7b")
    await store.close()

    reopened = await Store.open(url, clock=clock)
    try:
        conv = await reopened.get_conversation(900)
        assert conv is not None
        assert (conv.guild_id, conv.channel_id, conv.user_id) == (GUILD, 10, 20)
        assert (conv.tier, conv.model, conv.system_prompt) == (Tier.LARGE, "qwen-7b", "Be kind.")
        assert conv.created_at == T0 and not conv.closed
        history = await reopened.history(900)
        assert [m.as_chat() for m in history] == [
            ChatMessage("user", "hello"),
            ChatMessage("assistant", "hi there"),
        ]
        assert [m.tokens for m in history] == [2, 3]
        assert history[1].created_at == T0 + timedelta(seconds=1)
    finally:
        await reopened.close()


async def test_history_is_in_insertion_order_and_limit_keeps_the_latest(store: Store):
    await store.create_conversation(1, GUILD, 10, 20, Tier.SMALL, "m")
    await store.create_conversation(2, GUILD, 10, 20, Tier.SMALL, "m")
    said = ["hello", "zebra", "apple", "mango", "banana"]  # neither sorted nor reverse-sorted
    for i, content in enumerate(said):
        await store.add_message(1, "user" if i % 2 == 0 else "assistant", content, 5 - i)
        await store.add_message(2, "user", f"other{i}", 1)
    assert [m.content for m in await store.history(1)] == said
    assert [m.content for m in await store.history(1, limit=2)] == ["mango", "banana"]
    assert await store.history(3) == []


async def test_conversation_errors_and_idempotent_close(store: Store, clock: Clock):
    assert await store.get_conversation(404) is None
    with pytest.raises(NotFound):
        await store.add_message(404, "user", "hi", 1)
    with pytest.raises(NotFound):
        await store.set_conversation_tier(404, Tier.LARGE, "m")
    with pytest.raises(NotFound):
        await store.close_conversation(404)

    await store.create_conversation(7, GUILD, 10, 20, Tier.SMALL, "m")
    with pytest.raises(AlreadyExists):
        await store.create_conversation(7, GUILD, 10, 20, Tier.SMALL, "m")
    await store.close_conversation(7)
    clock.tick(60)
    await store.close_conversation(7)
    conv = await store.get_conversation(7)
    assert conv is not None and conv.closed_at == T0


# --- request log and stats --------------------------------------------------------------------------------


async def test_stats_counts_share_and_median_latency(store: Store):
    rows = [
        # task, tier, model, latency, ok, fallback
        ("chat", "small", "smol", 100, True, False),
        ("chat", "small", "smol", 300, True, False),
        ("chat", "small", "smol", 200, True, False),
        ("code", "large", "big", 1000, True, False),
        ("code", "large", "big", 2000, True, True),
        ("code", "small", "smol", 9999, False, False),  # failures are not in the median
    ]
    for task, tier, model, ms, ok, fallback in rows:
        await store.record_request(GUILD, 5, task, Tier(tier), model, ms, ok, fallback)
    await store.record_request(OTHER_GUILD, 5, "chat", Tier.LARGE, "big", 1, True, False)

    stats = await store.stats(GUILD)
    assert stats.total == 6
    assert stats.by_task_tier == {("chat", "small"): 3, ("code", "large"): 2, ("code", "small"): 1}
    assert stats.small_share == pytest.approx(4 / 6)
    assert stats.median_latency_ms == {"big": 1500.0, "smol": 200.0}
    assert (stats.failures, stats.fallbacks) == (1, 1)


async def test_stats_empty_and_since(store: Store):
    empty = await store.stats(GUILD)
    assert (empty.total, empty.small_share, empty.by_task_tier, empty.median_latency_ms) == (0, 0.0, {}, {})

    await store.record_request(GUILD, 5, "chat", Tier.SMALL, "smol", 10, True, False, at=T0 - timedelta(days=2))
    # Aware times in any zone are stored as UTC.
    east = timezone(timedelta(hours=5))
    await store.record_request(GUILD, 5, "chat", Tier.LARGE, "big", 20, True, False, at=T0.astimezone(east))
    recent = await store.stats(GUILD, since=T0 - timedelta(days=1))
    assert recent.total == 1 and recent.by_task_tier == {("chat", "large"): 1}
    assert recent.small_share == 0.0


# --- migrations and lifecycle -----------------------------------------------------------------------------


def _schema_diffs(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


async def test_migrations_build_the_schema_from_empty_and_stamp_head(url: str):
    await migrate(url)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_current_revision) == head
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            assert set(metadata.tables) | {"alembic_version"} == tables
            # The tables declared in bot/storage/schema.py and the migrations agree.
            assert await conn.run_sync(_schema_diffs) == []
            if url.startswith("sqlite"):  # SQLite's connection settings (PostgreSQL has them built in)
                assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
                assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await engine.dispose()


async def test_migrations_downgrade_to_empty_and_back(url: str):
    await migrate(url)
    engine = make_engine(url, foreign_keys=False)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(lambda c: _alembic(c, "downgrade", "base"))
            assert await conn.run_sync(lambda c: inspect(c).get_table_names()) == ["alembic_version"]
    finally:
        await engine.dispose()
    await migrate(url)
    store = await Store.open(url)
    try:
        assert await store.guild_config(GUILD) == GuildConfig()
    finally:
        await store.close()


def _alembic(conn: Connection, action: str, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    getattr(command, action)(cfg, revision)


async def test_opening_twice_is_idempotent_and_keeps_data(url: str):
    first = await Store.open(url)
    await first.update_guild_config(GUILD, ADMIN, "threshold.set", threshold=0.4)
    second = await Store.open(url)  # both open at once, same file
    try:
        assert (await second.guild_config(GUILD)).threshold == 0.4
        await second.record_request(GUILD, 1, "chat", Tier.SMALL, "m", 5, True, False)
        assert (await first.stats(GUILD)).total == 1
    finally:
        await first.close()
        await second.close()
    third = await Store.open(url)
    try:
        assert len(await third.audit(GUILD)) == 1
    finally:
        await third.close()


async def test_concurrent_config_updates_from_two_stores_lose_nothing(url: str):
    # Two processes' worth of stores on one file, each doing read-modify-write of the same guild row.
    first, second = await Store.open(url), await Store.open(url)
    try:
        channels = list(range(1, 21))
        await asyncio.gather(
            *((first if c % 2 else second).set_channel_prompt(GUILD, ADMIN, c, f"p{c}") for c in channels),
            *(second.update_guild_config(OTHER_GUILD, ADMIN, "limits.set", rate_limit_burst=b) for b in range(1, 11)),
        )
        assert (await first.guild_config(GUILD)).channel_system_prompts == {c: f"p{c}" for c in channels}
        assert len(await first.audit(GUILD, limit=100)) == 20
        assert (await first.guild_config(OTHER_GUILD)).rate_limit_burst in range(1, 11)
    finally:
        await first.close()
        await second.close()


async def test_foreign_keys_are_enforced(store: Store):
    with pytest.raises(IntegrityError):
        async with store.engine.begin() as conn:
            row = dict(conversation_id=404, role="user", content="x", tokens=1, created_at=T0)
            await conn.execute(messages.insert().values(**row))


async def test_timestamps_are_aware_utc(store: Store):
    east = timezone(timedelta(hours=5))
    await store.record_request(GUILD, 5, "chat", Tier.SMALL, "m", 10, True, False, at=T0.astimezone(east))
    await store.create_conversation(1, GUILD, 10, 20, Tier.SMALL, "m")
    conv = await store.get_conversation(1)
    assert conv is not None and conv.created_at.utcoffset() == timedelta(0)
    assert (await store.stats(GUILD, since=T0)).total == 1
    assert (await store.stats(GUILD, since=T0 + timedelta(seconds=1))).total == 0


async def test_a_server_model_never_keeps_an_environment_variable_or_a_plain_key(store: Store):
    # A server's endpoint never reads the operator's environment: the field is dropped on the way in, and
    # ignored in rows written before that rule.
    sneaky = spec().model_copy(update={"api_key_env": "DISCORD_TOKEN", "api_key": SecretStr("sk-plain-SENTINEL")})
    added = await store.add_model(GUILD, ADMIN, "sneaky", sneaky)
    assert added.spec.api_key_env is None and added.spec.api_key is None
    async with store.engine.begin() as conn:
        (row,) = (await conn.execute(guild_models.select())).mappings().all()
        assert "api_key_env" not in row["spec"] and "SENTINEL" not in json.dumps(row["spec"])
        legacy = {**row["spec"], "api_key_env": "SWITCHBOARD_LARGE_API_KEY"}
        await conn.execute(guild_models.update().values(spec=legacy))
    (listed,) = await store.list_models(GUILD)
    assert listed.spec.api_key_env is None and listed.sealed_key is None
    assert "SENTINEL" not in json.dumps([e.details for e in await store.audit(GUILD)])


async def test_sealed_model_keys_are_stored_cleared_and_audited_without_the_key(store: Store):
    await store.add_model(GUILD, ADMIN, "llama", spec())
    await store.set_model_key(GUILD, ADMIN, "llama", b"sealed-bytes")
    (model,) = await store.list_models(GUILD)
    assert model.sealed_key == b"sealed-bytes"
    await store.set_model_key(GUILD, ADMIN, "llama", None)
    assert (await store.list_models(GUILD))[0].sealed_key is None
    with pytest.raises(NotFound):
        await store.set_model_key(OTHER_GUILD, ADMIN, "llama", b"x")  # another server's model: not found
    actions = [(e.action, e.details) for e in await store.audit(GUILD)]
    assert ("model.key", {"name": "llama", "set": False}) in actions
    assert ("model.key", {"name": "llama", "set": True}) in actions


async def test_task_framing_merges_per_task_resets_and_keeps_concurrent_changes(store: Store):
    await store.set_task_framing(GUILD, ADMIN, "chat", {"system": "Be terse."})
    await store.set_task_framing(GUILD, ADMIN, "chat", {"temperature": 0.3})  # merged, not replaced
    # Two admins at once, on two tasks: neither change is lost (one transaction each).
    await asyncio.gather(
        store.set_task_framing(GUILD, ADMIN, "code", {"max_new_tokens": 300}),
        store.set_task_framing(GUILD, ADMIN, "conversion", {"system": "Translate only."}),
    )
    config = await store.guild_config(GUILD)
    assert config.task_framing["chat"].system == "Be terse." and config.task_framing["chat"].temperature == 0.3
    assert config.task_framing["code"].max_new_tokens == 300
    assert config.task_framing["conversion"].system == "Translate only."
    await store.set_task_framing(GUILD, ADMIN, "chat", None)
    assert "chat" not in (await store.guild_config(GUILD)).task_framing
    assert [e.action for e in await store.audit(GUILD)][:1] == ["tasks.reset"]
    with pytest.raises(ValidationError):
        await store.set_task_framing(GUILD, ADMIN, "chat", {"temperature": 9})


# --- route corrections ------------------------------------------------------------------------------------


async def test_corrections_are_kept_per_server_listed_newest_first_and_undone(store: Store, clock: Clock):
    first = await store.add_correction(
        GUILD,
        7,
        "what is the vibe of this msg",
        kind="task",
        routed_task="chat",
        routed_tier=Tier.SMALL,
        task="classification",
        channel_id=555,
    )
    clock.tick()
    second = await store.add_correction(
        GUILD,
        8,
        "summarise this long thread",
        kind="larger",
        routed_task="conversion",
        routed_tier=Tier.SMALL,
        task="conversion",
    )
    await store.add_correction(
        OTHER_GUILD, 9, "elsewhere", kind="larger", routed_task="chat", routed_tier=Tier.SMALL, task="chat"
    )
    assert [c.id for c in await store.corrections(GUILD)] == [second.id, first.id]
    assert (first.kind, first.task, first.routed_tier, first.channel_id, first.at) == (
        "task",
        "classification",
        "small",
        555,
        T0,
    )
    assert [c.text for c in await store.corrections(OTHER_GUILD)] == ["elsewhere"]
    # Another server can't undo this server's correction; this server's admin can, and it is audited.
    with pytest.raises(NotFound):
        await store.remove_correction(OTHER_GUILD, ADMIN, first.id)
    removed = await store.remove_correction(GUILD, ADMIN, first.id)
    assert removed.text == "what is the vibe of this msg"
    assert [c.id for c in await store.corrections(GUILD)] == [second.id]
    assert (await store.audit(GUILD))[0].action == "correction.remove"
    with pytest.raises(NotFound):
        await store.remove_correction(GUILD, ADMIN, first.id)


async def test_a_long_request_is_kept_bounded(store: Store):
    c = await store.add_correction(
        GUILD, 7, "x" * 50_000, kind="larger", routed_task="chat", routed_tier=Tier.SMALL, task="chat"
    )
    assert len(c.text) == len((await store.corrections(GUILD))[0].text) == 2000


async def test_preference_counts_answers_and_requests_for_the_larger_model_per_task(store: Store):
    for task in ("chat", "chat", "chat", "conversion"):
        await store.record_request(GUILD, 7, task, Tier.SMALL, "small", 10, True, False)
    await store.add_correction(GUILD, 7, "a", kind="larger", routed_task="chat", routed_tier=Tier.SMALL, task="chat")
    await store.add_correction(GUILD, 7, "b", kind="task", routed_task="chat", routed_tier=Tier.SMALL, task="code")
    await store.add_correction(
        OTHER_GUILD, 7, "c", kind="larger", routed_task="conversion", routed_tier=Tier.SMALL, task="conversion"
    )
    assert await store.preference(GUILD) == {"chat": (3, 1), "conversion": (1, 0)}


async def test_task_thresholds_are_set_one_at_a_time_and_reset_with_the_routes(store: Store):
    await store.set_task_threshold(GUILD, ADMIN, "chat", 0.3)
    await store.set_task_threshold(GUILD, ADMIN, "conversion", 0.6)
    await store.set_task_threshold(GUILD, ADMIN, "conversion", None)
    config = await store.guild_config(GUILD)
    assert config.task_thresholds == {"chat": 0.3}
    assert config.routing_overrides().task_thresholds == {"chat": 0.3}
    with pytest.raises(ValidationError):
        await store.set_task_threshold(GUILD, ADMIN, "chat", 1.5)
    await store.reset_guild_routes(GUILD, ADMIN)
    assert (await store.guild_config(GUILD)).task_thresholds == {}
