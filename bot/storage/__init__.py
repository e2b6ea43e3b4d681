"""Per-server state behind one store.

* :mod:`~bot.storage.schema`  the tables (a new table goes here, and a migration beside the others)
* :mod:`~bot.storage.engine`  the async engine, and alembic migrations (``migrations/``) run at open
* :mod:`~bot.storage.config`  :class:`GuildConfig`: one server's settings, their defaults and their rules
* :mod:`~bot.storage.store`   :class:`Store`: every read and write, and the records it returns
"""

from bot.storage.config import GuildConfig
from bot.storage.engine import DEFAULT_URL, MIGRATIONS_DIR, alembic_config, make_engine, migrate, run_migrations
from bot.storage.errors import AlreadyExists, NotFound, StorageError
from bot.storage.schema import (
    UTCDateTime,
    audit_log,
    conversations,
    guild_models,
    guild_settings,
    messages,
    metadata,
    rate_buckets,
    request_log,
    route_corrections,
    scheduled_jobs,
)
from bot.storage.store import (
    AuditEntry,
    Conversation,
    Correction,
    CustomModel,
    Job,
    Role,
    Stats,
    Store,
    StoredMessage,
)

__all__ = [
    "DEFAULT_URL",
    "MIGRATIONS_DIR",
    "AlreadyExists",
    "AuditEntry",
    "Conversation",
    "Correction",
    "CustomModel",
    "GuildConfig",
    "Job",
    "NotFound",
    "Role",
    "Stats",
    "StorageError",
    "Store",
    "StoredMessage",
    "UTCDateTime",
    "alembic_config",
    "audit_log",
    "conversations",
    "guild_models",
    "guild_settings",
    "make_engine",
    "messages",
    "metadata",
    "migrate",
    "rate_buckets",
    "request_log",
    "route_corrections",
    "run_migrations",
    "scheduled_jobs",
]
