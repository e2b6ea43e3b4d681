"""Alembic environment for Switchboard's store.

Two ways in: ``bot.storage.engine.run_migrations`` hands over a live connection (``config.attributes["connection"]``)
inside its transaction; the alembic command line gets an engine built here from ``-x url=...`` or the
ini's ``sqlalchemy.url``.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from bot.storage.engine import DEFAULT_URL, make_engine
from bot.storage.schema import metadata

config = context.config


def _url() -> str:
    return context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url", DEFAULT_URL
    )


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things: recreate the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_command_line() -> None:
    engine = make_engine(_url(), foreign_keys=False)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
            # Foreign keys are off while migrating (batch mode recreates tables): check what is left.
            sqlite = conn.dialect.name == "sqlite"
            if sqlite and (await conn.exec_driver_sql("PRAGMA foreign_key_check")).first():
                raise RuntimeError("migration left foreign key violations; rolled back")
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    asyncio.run(_run_from_command_line())
