"""The tables: created and upgraded only by the alembic migrations in ``bot/storage/migrations``.

* ``guild_settings``  one row per guild; ``data`` is JSON holding only the
  :class:`~bot.storage.config.GuildConfig` fields the server's admins set. Defaults are declared once, on
  GuildConfig (as in Red-DiscordBot's Config), so adding a field needs no migration and unknown stored
  keys are ignored.
* ``audit_log``       who changed what and when (actor, action, details JSON); written in the same
  transaction as the change it describes.
* ``guild_models``    admin-added OpenAI-compatible endpoints, unique per (guild, name); ``spec`` is an
  :class:`OpenAIModel` as JSON without any key; the key is sealed in ``api_key``.
* ``conversations`` / ``messages``  thread chats; messages are ordered by their id.
* ``request_log``     one row per answered request, for ``/stats``.
* ``route_corrections``  a user's correction of one answer's route: "Ask the larger model" (``kind`` larger) or
  "Wrong task?" (``kind`` task, with the task they picked). A server's corrections override the global
  classifier for similar requests there (bot/corrections.py) until an admin undoes them.
* ``rate_buckets``    users' token buckets when several processes share them (bot/ratelimit.py
  ``StoreRateLimiter``); ``updated`` is wall-clock seconds since the epoch, which every process agrees on.
* ``scheduled_jobs``  reminders, recurring agent goals and other timed work (bot/scheduler.py). A process claims a
  due job with a conditional UPDATE on ``runs`` (a version counter), so two processes on one database never
  both fire it; the same UPDATE moves a recurring job to its next slot or marks a one-shot job ``done``.

A new table goes here, with a migration next to the others (see :mod:`bot.storage.engine`); a test fails
while the tables here and the migrations disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator


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

route_corrections = Table(
    "route_corrections",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("guild_id", BigInteger, nullable=False),
    Column("channel_id", BigInteger, nullable=True),
    Column("user_id", BigInteger, nullable=False),
    Column("text", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("routed_task", String(32), nullable=False),
    Column("routed_tier", String(16), nullable=False),
    Column("task", String(32), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index(None, "guild_id", "id"),
)

rate_buckets = Table(
    "rate_buckets",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("tokens", Float, nullable=False),
    Column("updated", Float, nullable=False),
    # The rate and size last used, so a sweep can tell a bucket that has refilled (and can be forgotten).
    Column("per_second", Float, nullable=False),
    Column("burst", Float, nullable=False),
)

scheduled_jobs = Table(
    "scheduled_jobs",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("guild_id", BigInteger, nullable=True),  # None: a direct message
    Column("channel_id", BigInteger, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("next_run_at", UTCDateTime, nullable=False),
    Column("interval_s", Integer, nullable=True),  # None: runs once
    Column("created_at", UTCDateTime, nullable=False),
    Column("cancelled", Boolean, nullable=False),
    Column("done", Boolean, nullable=False),
    #: Times claimed: the version a claim's conditional UPDATE checks.
    Column("runs", Integer, nullable=False),
    Column("claimed_by", String(100), nullable=True),
    Column("claimed_at", UTCDateTime, nullable=True),
    Index(None, "next_run_at"),
    Index(None, "guild_id", "user_id"),
)
