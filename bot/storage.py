"""The one store for per-server state: guild config, custom models, conversations, request log, audit log.

SQLAlchemy 2.0 Core over an async engine: a SQLite file by default (WAL, foreign keys on), any async URL
(``postgresql+asyncpg://...``) otherwise. Every method is async; every timestamp is timezone-aware UTC.

Schema (tables below; created and upgraded only by the alembic migrations in ``bot/migrations``):

* ``guild_settings``  one row per guild; ``data`` is JSON holding only the :class:`GuildConfig` fields the
  server's admins set. Defaults are declared once, on :class:`GuildConfig` (as in Red-DiscordBot's
  Config), so adding a field needs no migration and unknown stored keys are ignored.
* ``audit_log``       who changed what and when (actor, action, details JSON); written in the same
  transaction as the change it describes.
* ``guild_models``    admin-added OpenAI-compatible endpoints, unique per (guild, name); ``spec`` is an
  :class:`OpenAIModel` as JSON, which names the API key's environment variable, never the key.
* ``conversations`` / ``messages``  thread chats; messages are ordered by their id.
* ``request_log``     one row per answered request, for ``/stats``.

Migrations: :meth:`Store.open` runs ``alembic upgrade head`` programmatically on the async engine (through
``run_sync``, so it works inside a running event loop). To change the schema, edit the tables here, then::

    A="alembic -c bot/migrations/alembic.ini -x url=sqlite+aiosqlite:///tmp/dev.db"  # a scratch DB
    $A upgrade head                                          # autogenerate diffs against a DB at head
    $A revision --autogenerate --rev-id 0002 -m "add foo"    # writes versions/0002_add_foo.py
    $A check                                                 # "No new upgrade operations detected."

review the generated file in ``bot/migrations/versions/`` (SQLite alters tables in batch mode), and run
``pytest tests/unit/test_storage.py``: a test fails while the tables here and the migrations disagree.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from alembic import command
from alembic.config import Config
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    func,
    select,
)
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.types import TypeDecorator

from inference.catalogue import OpenAIModel, RoutingOverrides
from inference.types import ChatMessage, TaskId, Tier

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite+aiosqlite:///data/switchboard.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
Role = Literal["system", "user", "assistant"]


class StorageError(Exception):
    """Base class of the store's own errors."""


class AlreadyExists(StorageError):
    """The row to create exists already (e.g. a custom model with that name in this server)."""


class NotFound(StorageError):
    """The row to change does not exist."""


# --- per-guild config: defaults declared once -------------------------------------------------------------


class GuildConfig(BaseModel):
    """One server's settings. Missing values mean the default below."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    #: Task id -> model name, on top of the routing policy (see :meth:`routing_overrides`).
    task_models: dict[TaskId, Annotated[str, Field(min_length=1, max_length=100)]] = Field(default_factory=dict)
    #: Escalation threshold override; None = the routing policy's.
    threshold: float | None = Field(default=None, ge=0, le=1)
    channel_system_prompts: dict[int, Annotated[str, Field(max_length=4000)]] = Field(default_factory=dict)
    #: Channels where the bot answers; empty = everywhere.
    allowed_channels: list[int] = Field(default_factory=list)
    #: Per-user token bucket: refill rate and bucket size. A burst of 8 lets a quick back-and-forth through.
    rate_limit_per_minute: int = Field(default=20, ge=1, le=600)
    rate_limit_burst: int = Field(default=8, ge=1, le=100)
    #: Members with any of these roles are never rate limited.
    exempt_roles: list[int] = Field(default_factory=list, max_length=100)
    max_prompt_chars: int = Field(default=4000, ge=1, le=100_000)

    def routing_overrides(self) -> RoutingOverrides:
        return RoutingOverrides(task_models=self.task_models, threshold=self.threshold)

    def channel_allowed(self, channel_id: int) -> bool:
        return not self.allowed_channels or channel_id in self.allowed_channels

    def system_prompt_for(self, channel_id: int) -> str | None:
        return self.channel_system_prompts.get(channel_id)


_ROUTE_FIELDS = ("task_models", "threshold")
#: Spec fields never stored for a server's endpoint: its key lives sealed in its own column.
_SERVER_SPEC_EXCLUDED = frozenset({"api_key", "api_key_env"})


def _unknown_fields_error(changes: dict[str, Any]) -> ValidationError | None:
    unknown = [k for k in changes if k not in GuildConfig.model_fields]
    if not unknown:
        return None
    return ValidationError.from_exception_data(
        GuildConfig.__name__, [{"type": "extra_forbidden", "loc": (k,), "input": changes[k]} for k in unknown]
    )


def _parse_config(guild_id: int, data: dict[str, Any]) -> GuildConfig:
    """Lenient read: unknown keys are ignored, invalid stored values fall back to their defaults."""
    known = {k: v for k, v in data.items() if k in GuildConfig.model_fields}
    try:
        return GuildConfig.model_validate(known)
    except ValidationError as exc:
        bad = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        # Field names only: values may be prompt text.
        log.warning("guild %s: stored config fields %s invalid, using defaults", guild_id, sorted(bad))
        return GuildConfig.model_validate({k: v for k, v in known.items() if k not in bad})


# --- records handed to callers ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    guild_id: int
    actor_id: int
    action: str
    details: dict[str, Any]
    at: datetime


@dataclass(frozen=True, slots=True)
class CustomModel:
    guild_id: int
    name: str
    spec: OpenAIModel
    created_by: int
    created_at: datetime
    #: The endpoint's API key as sealed by bot/keybox.py; None = keyless.
    sealed_key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    thread_id: int
    guild_id: int
    channel_id: int
    user_id: int
    tier: Tier
    model: str
    system_prompt: str | None
    created_at: datetime
    closed_at: datetime | None

    @property
    def closed(self) -> bool:
        return self.closed_at is not None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    role: Role
    content: str
    tokens: int
    created_at: datetime

    def as_chat(self) -> ChatMessage:
        return ChatMessage(role=self.role, content=self.content)


@dataclass(frozen=True, slots=True)
class Stats:
    total: int
    #: (task, tier) -> requests.
    by_task_tier: dict[tuple[str, str], int]
    #: Fraction of requests answered by the small tier; 0.0 when there were none.
    small_share: float
    #: Model -> median latency of its successful requests.
    median_latency_ms: dict[str, float]
    failures: int
    fallbacks: int


# --- tables (the migrations must match these; a test checks) ----------------------------------------------


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, whatever the backend keeps (SQLite keeps naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# 64-bit ids; SQLite only autoincrements a column declared exactly INTEGER.
_ID = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
guild_settings = Table(
    "guild_settings",
    metadata,
    Column("guild_id", BigInteger, primary_key=True, autoincrement=False),
    Column("data", JSON, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("guild_id", BigInteger, nullable=False),
    Column("actor_id", BigInteger, nullable=False),
    Column("action", String(64), nullable=False),
    Column("details", JSON, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "guild_id", "id"),
)
guild_models = Table(
    "guild_models",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("guild_id", BigInteger, nullable=False),
    Column("name", String(100), nullable=False),
    Column("spec", JSON, nullable=False),
    #: The admin's API key for the endpoint, sealed by bot/keybox.py (never in plain text).
    Column("api_key", LargeBinary, nullable=True),
    Column("created_by", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("guild_id", "name"),
)
conversations = Table(
    "conversations",
    metadata,
    Column("thread_id", BigInteger, primary_key=True, autoincrement=False),
    Column("guild_id", BigInteger, nullable=False, index=True),
    Column("channel_id", BigInteger, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("tier", String(16), nullable=False),
    Column("model", String(100), nullable=False),
    Column("system_prompt", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
)
messages = Table(
    "messages",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column(
        "conversation_id",
        BigInteger,
        ForeignKey("conversations.thread_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)
request_log = Table(
    "request_log",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("guild_id", BigInteger, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("task", String(32), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("model", String(100), nullable=False),
    Column("latency_ms", Integer, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("fallback", Boolean, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "guild_id", "at"),
)


# --- engine and migrations --------------------------------------------------------------------------------


def make_engine(url: str | URL, *, foreign_keys: bool = True) -> AsyncEngine:
    """An async engine; for SQLite: parent dir created, WAL, busy timeout, real BEGIN, foreign keys."""
    sa_url = make_url(url)
    if sa_url.get_backend_name() != "sqlite":
        return create_async_engine(sa_url, pool_pre_ping=True)
    engine = create_async_engine(sa_url)
    if sa_url.database and sa_url.database != ":memory:" and not sa_url.database.startswith("file:"):
        Path(sa_url.database).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver's implicit BEGIN skips reads and DDL; emit our own
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front (see _writer), so read-then-write never hits a stale snapshot.
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}")

    return engine


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return cfg


def run_migrations(conn: Connection, revision: str = "head") -> None:
    """Upgrade on a live (sync-facade) connection, inside its transaction."""
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)
    if conn.dialect.name == "sqlite":
        # Migrations run with foreign keys off (batch mode recreates tables); check what they left.
        bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if bad:
            raise StorageError(f"migration left {len(bad)} foreign key violations, e.g. {tuple(bad[0])}")


def _writer(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (same pool) whose transactions start with SQLite's BEGIN IMMEDIATE."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


async def migrate(url: str | URL) -> None:
    """Upgrade to head; concurrent callers on one SQLite file queue up, the later ones find nothing to do.

    A database that cannot be opened, read or upgraded (not SQLite, damaged, unreadable) raises
    :class:`StorageError` naming it and what to do; the upgrade's transaction is rolled back, so the file
    is left as it was.
    """
    from sqlalchemy.exc import DatabaseError

    engine = make_engine(url, foreign_keys=False)
    try:
        async with _writer(engine).begin() as conn:
            await conn.run_sync(run_migrations)
    except DatabaseError as exc:
        parsed = make_url(url)
        where = parsed.database if parsed.get_backend_name() == "sqlite" else parsed.render_as_string(True)
        raise StorageError(
            f"cannot open the database {where}: {exc.orig or exc}. It was left unchanged; if it is damaged or "
            "not Switchboard's, move it aside (or point SWITCHBOARD_DATABASE_URL at another one) and start again"
        ) from exc
    finally:
        await engine.dispose()


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- the store --------------------------------------------------------------------------------------------


class Store:
    """Open with ``await Store.open(url)`` (or ``async with await Store.open(url) as store``)."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = _utcnow) -> None:
        self._engine = engine
        self._write = _writer(engine)  # every write transaction goes through this
        self._clock = clock
        # Config writes are read-modify-write of one JSON row: serialise them within the process.
        self._config_lock = asyncio.Lock()

    @classmethod
    async def open(cls, url: str | URL = DEFAULT_URL, *, clock: Callable[[], datetime] = _utcnow) -> Store:
        await migrate(url)
        return cls(make_engine(url), clock=clock)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def close(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Store({self._engine.url!r})"  # SQLAlchemy masks any password

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    async def _audit(
        self, conn: AsyncConnection, guild_id: int, actor_id: int, action: str, details: dict[str, Any]
    ) -> None:
        row = dict(guild_id=guild_id, actor_id=actor_id, action=action, details=details, at=self._now())
        await conn.execute(audit_log.insert().values(**row))

    # guild config

    async def _stored_config(
        self, conn: AsyncConnection, guild_id: int, *, lock: bool = False
    ) -> dict[str, Any] | None:
        query = select(guild_settings.c.data).where(guild_settings.c.guild_id == guild_id)
        data = (await conn.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
        return dict(data) if data is not None else None

    async def guild_config(self, guild_id: int) -> GuildConfig:
        async with self._engine.connect() as conn:
            return _parse_config(guild_id, await self._stored_config(conn, guild_id) or {})

    async def update_guild_config(self, guild_id: int, actor_id: int, action: str, **changes: Any) -> GuildConfig:
        """Validate, persist and audit in one transaction; an invalid change raises pydantic's
        ValidationError (unknown fields included) and writes nothing. A dict or list value replaces the
        stored one: to change one entry, use set_task_model / set_channel_prompt (no lost updates)."""
        if (error := _unknown_fields_error(changes)) is not None:
            raise error
        return await self._change_config(guild_id, actor_id, action, lambda _: changes)

    async def set_task_model(self, guild_id: int, actor_id: int, task: TaskId, model: str | None) -> GuildConfig:
        """Route one task to ``model``; None = back to the default."""

        def edit(config: GuildConfig) -> dict[str, Any]:
            task_models: dict[str, str] = {k: v for k, v in config.task_models.items() if k != task}
            return {"task_models": task_models | ({task: model} if model is not None else {})}

        return await self._change_config(guild_id, actor_id, "route.set" if model else "route.clear", edit)

    async def set_channel_prompt(
        self, guild_id: int, actor_id: int, channel_id: int, prompt: str | None
    ) -> GuildConfig:
        """One channel's system prompt; None = back to the default."""

        def edit(config: GuildConfig) -> dict[str, Any]:
            prompts = {k: v for k, v in config.channel_system_prompts.items() if k != channel_id}
            return {"channel_system_prompts": prompts | ({channel_id: prompt} if prompt is not None else {})}

        return await self._change_config(guild_id, actor_id, "prompt.set" if prompt else "prompt.clear", edit)

    async def reset_guild_routes(self, guild_id: int, actor_id: int) -> GuildConfig:
        """Back to the routing policy: task models and threshold return to their defaults."""
        return await self._change_config(guild_id, actor_id, "routes.reset", lambda _: {}, unset=_ROUTE_FIELDS)

    async def _change_config(
        self,
        guild_id: int,
        actor_id: int,
        action: str,
        edit: Callable[[GuildConfig], dict[str, Any]],
        unset: tuple[str, ...] = (),
    ) -> GuildConfig:
        """Read, edit, validate, write and audit in one write transaction (no lost updates)."""
        async with self._config_lock, self._write.begin() as conn:
            stored = await self._stored_config(conn, guild_id, lock=True)
            before = _parse_config(guild_id, stored or {})
            changes = edit(before)
            base = {k: v for k, v in before.model_dump().items() if k not in unset}
            after = GuildConfig.model_validate({**base, **changes})  # raises before any write
            old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
            keys = [*changes, *(k for k in unset if k not in changes)]
            data = {k: v for k, v in (stored or {}).items() if k not in unset} | {k: new[k] for k in changes}
            values = dict(data=data, updated_at=self._now())
            if stored is None:
                await conn.execute(guild_settings.insert().values(guild_id=guild_id, **values))
            else:
                where = guild_settings.c.guild_id == guild_id
                await conn.execute(guild_settings.update().where(where).values(**values))
            details = {"changes": {k: new[k] for k in keys}, "previous": {k: old[k] for k in keys}}
            await self._audit(conn, guild_id, actor_id, action, details)
        return after

    # custom models

    async def add_model(self, guild_id: int, actor_id: int, name: str, spec: OpenAIModel) -> CustomModel:
        name = name.strip()
        if not 0 < len(name) <= 100:
            raise ValueError("model name must be 1 to 100 characters")
        spec_json = spec.model_dump(mode="json", exclude=set(_SERVER_SPEC_EXCLUDED))
        model = CustomModel(guild_id, name, OpenAIModel.model_validate(spec_json), actor_id, self._now())
        row = dict(guild_id=guild_id, name=name, spec=spec_json)
        row |= dict(created_by=actor_id, created_at=model.created_at)
        try:
            async with self._write.begin() as conn:
                await conn.execute(guild_models.insert().values(**row))
                await self._audit(conn, guild_id, actor_id, "model.add", {"name": name, "spec": spec_json})
        except IntegrityError:
            raise AlreadyExists(f"this server already has a model named {name!r}") from None
        return model

    async def remove_model(self, guild_id: int, actor_id: int, name: str) -> None:
        where = (guild_models.c.guild_id == guild_id) & (guild_models.c.name == name)
        async with self._write.begin() as conn:
            if (await conn.execute(guild_models.delete().where(where))).rowcount == 0:
                raise NotFound(f"this server has no model named {name!r}")
            await self._audit(conn, guild_id, actor_id, "model.remove", {"name": name})

    async def list_models(self, guild_id: int) -> list[CustomModel]:
        query = select(guild_models).where(guild_models.c.guild_id == guild_id).order_by(guild_models.c.name)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        models = []
        for r in rows:
            # Older rows may name an environment variable: a server's endpoint never reads the operator's.
            stored = {k: v for k, v in r["spec"].items() if k not in _SERVER_SPEC_EXCLUDED}
            try:
                spec = OpenAIModel.model_validate(stored)
            except ValidationError:
                log.warning("guild %s: stored model %r no longer valid, skipped", guild_id, r["name"])
                continue
            models.append(
                CustomModel(r["guild_id"], r["name"], spec, r["created_by"], r["created_at"], r["api_key"])
            )
        return models

    async def set_model_key(self, guild_id: int, actor_id: int, name: str, sealed: bytes | None) -> None:
        """Store (or with None, clear) the sealed API key of this server's model ``name``."""
        where = (guild_models.c.guild_id == guild_id) & (guild_models.c.name == name)
        async with self._write.begin() as conn:
            if (await conn.execute(guild_models.update().where(where).values(api_key=sealed))).rowcount == 0:
                raise NotFound(f"this server has no model named {name!r}")
            # That a key was set or cleared, never the key.
            await self._audit(conn, guild_id, actor_id, "model.key", {"name": name, "set": sealed is not None})

    # conversations

    async def create_conversation(
        self,
        thread_id: int,
        guild_id: int,
        channel_id: int,
        user_id: int,
        tier: Tier,
        model: str,
        system_prompt: str | None = None,
    ) -> Conversation:
        conv = Conversation(
            thread_id, guild_id, channel_id, user_id, Tier(tier), model, system_prompt, self._now(), None
        )
        row = {k: getattr(conv, k) for k in conversations.c.keys()}
        try:
            async with self._write.begin() as conn:
                await conn.execute(conversations.insert().values(**row))
        except IntegrityError:
            raise AlreadyExists(f"thread {thread_id} already has a conversation") from None
        return conv

    async def get_conversation(self, thread_id: int) -> Conversation | None:
        query = select(conversations).where(conversations.c.thread_id == thread_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).mappings().one_or_none()
        return None if row is None else Conversation(**{**row, "tier": Tier(row["tier"])})

    async def _update_conversation(self, thread_id: int, **values: Any) -> None:
        where = conversations.c.thread_id == thread_id
        async with self._write.begin() as conn:
            if (await conn.execute(conversations.update().where(where).values(**values))).rowcount == 0:
                raise NotFound(f"no conversation in thread {thread_id}")

    async def set_conversation_tier(self, thread_id: int, tier: Tier, model: str) -> None:
        await self._update_conversation(thread_id, tier=Tier(tier).value, model=model)

    async def close_conversation(self, thread_id: int) -> None:
        """Idempotent: a second close keeps the first time."""
        where = (conversations.c.thread_id == thread_id) & conversations.c.closed_at.is_(None)
        async with self._write.begin() as conn:
            result = await conn.execute(conversations.update().where(where).values(closed_at=self._now()))
        if result.rowcount:
            return
        if await self.get_conversation(thread_id) is None:
            raise NotFound(f"no conversation in thread {thread_id}")

    async def add_message(self, thread_id: int, role: Role, content: str, tokens: int) -> StoredMessage:
        at = self._now()
        exists = select(conversations.c.thread_id).where(conversations.c.thread_id == thread_id)
        async with self._write.begin() as conn:
            if (await conn.execute(exists)).first() is None:
                raise NotFound(f"no conversation in thread {thread_id}")
            row = dict(conversation_id=thread_id, role=role, content=content, tokens=tokens, created_at=at)
            message_id = (await conn.execute(messages.insert().values(**row).returning(messages.c.id))).scalar_one()
        return StoredMessage(message_id, role, content, tokens, at)

    async def history(self, thread_id: int, limit: int | None = None) -> list[StoredMessage]:
        """Oldest first; with ``limit``, the latest ``limit`` messages."""
        cols = (messages.c.id, messages.c.role, messages.c.content, messages.c.tokens, messages.c.created_at)
        query = select(*cols).where(messages.c.conversation_id == thread_id).order_by(messages.c.id.desc())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query if limit is None else query.limit(limit))).all()
        return [StoredMessage(*r) for r in reversed(rows)]

    # request log and stats

    async def record_request(
        self,
        guild_id: int,
        user_id: int,
        task: str,
        tier: Tier,
        model: str,
        latency_ms: float,
        ok: bool,
        fallback: bool,
        at: datetime | None = None,
    ) -> None:
        row = dict(guild_id=guild_id, user_id=user_id, task=task, tier=Tier(tier).value, model=model)
        row |= dict(latency_ms=round(latency_ms), ok=ok, fallback=fallback, at=at or self._now())
        async with self._write.begin() as conn:
            await conn.execute(request_log.insert().values(**row))

    async def stats(self, guild_id: int, since: datetime | None = None) -> Stats:
        where = request_log.c.guild_id == guild_id
        if since is not None:
            where &= request_log.c.at >= since
        c = request_log.c
        counts = select(c.task, c.tier, func.count()).where(where).group_by(c.task, c.tier)
        flags = select(func.count(), c.ok, c.fallback).where(where).group_by(c.ok, c.fallback)
        latencies = select(c.model, c.latency_ms).where(where & c.ok)
        async with self._engine.connect() as conn:
            by_task_tier = {(t, tier): n for t, tier, n in (await conn.execute(counts)).all()}
            flag_rows = (await conn.execute(flags)).all()
            per_model: dict[str, list[int]] = defaultdict(list)
            for model, ms in (await conn.execute(latencies)).all():
                per_model[model].append(ms)
        total = sum(by_task_tier.values())
        small = sum(n for (_, tier), n in by_task_tier.items() if tier == Tier.SMALL.value)
        return Stats(
            total=total,
            by_task_tier=by_task_tier,
            small_share=small / total if total else 0.0,
            median_latency_ms={m: float(statistics.median(v)) for m, v in sorted(per_model.items())},
            failures=sum(n for n, ok, _ in flag_rows if not ok),
            fallbacks=sum(n for n, _, fb in flag_rows if fb),
        )

    # audit log

    async def audit(self, guild_id: int, limit: int = 25) -> list[AuditEntry]:
        """Newest first."""
        query = select(audit_log).where(audit_log.c.guild_id == guild_id).order_by(audit_log.c.id.desc())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit))).mappings().all()
        return [AuditEntry(**r) for r in rows]
