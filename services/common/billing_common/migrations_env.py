"""The body of every service's Alembic env.py.

Runs on a connection handed in by `billing_common.db.migrate` (start-up, tests), or opens its
own async engine when called from the `alembic` command line (`make migrate`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine


def _configure_and_run(
    connection: Connection, metadata: MetaData | None, version_table: str
) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run(metadata: MetaData | None, default_version_table: str) -> None:
    config = context.config
    version_table: str = config.attributes.get("version_table", default_version_table)
    connection: Any = config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection, metadata, version_table)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("set DATABASE_URL (or sqlalchemy.url) to run migrations")

    async def _online() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.run_sync(_configure_and_run, metadata, version_table)
        await engine.dispose()

    asyncio.run(_online())
