"""The async engine and the migrations that build the schema.

SQLAlchemy 2.0 Core over an async engine: a SQLite file by default (WAL, foreign keys on), any async URL
(``postgresql+asyncpg://...``) otherwise.

Migrations: :meth:`~bot.storage.Store.open` runs ``alembic upgrade head`` programmatically on the async
engine (through ``run_sync``, so it works inside a running event loop). To change the schema, edit the
tables in :mod:`bot.storage.schema`, then::

    A="alembic -c bot/storage/migrations/alembic.ini -x url=sqlite+aiosqlite:///tmp/dev.db"  # a scratch DB
    $A upgrade head                                          # autogenerate diffs against a DB at head
    $A revision --autogenerate --rev-id 0003 -m "add foo"    # writes versions/0003_add_foo.py
    $A check                                                 # "No new upgrade operations detected."

review the generated file in ``bot/storage/migrations/versions/`` (SQLite alters tables in batch mode), and
run ``pytest tests/unit/bot/test_storage.py``: a test fails while the tables and the migrations disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bot.storage.errors import StorageError

DEFAULT_URL = "sqlite+aiosqlite:///data/switchboard.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


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
        # Writers take the write lock up front (see writer), so read-then-write never hits a stale snapshot.
        conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('sqlite_begin', 'DEFERRED')}")

    return engine


def writer(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (same pool) whose transactions start with SQLite's BEGIN IMMEDIATE."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


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


async def migrate(url: str | URL) -> None:
    """Upgrade to head; concurrent callers on one SQLite file queue up, the later ones find nothing to do.

    A database that cannot be opened, read or upgraded (not SQLite, damaged, unreadable) raises
    :class:`StorageError` naming it and what to do; the upgrade's transaction is rolled back, so the file
    is left as it was.
    """
    from sqlalchemy.exc import DatabaseError

    engine = make_engine(url, foreign_keys=False)
    try:
        async with writer(engine).begin() as conn:
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
