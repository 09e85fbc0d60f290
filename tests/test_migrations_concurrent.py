"""Replicas migrate in their init containers, so several may start `billing_launcher
migrate` on one database at once: on PostgreSQL they take turns on an advisory lock
instead of racing on Alembic's version table."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from billing_common.db import create_engine, migrate, migration_lock_key
from billing_launcher.registry import migrations_dir


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _waiting_advisory_locks(conn: asyncpg.Connection) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    )
    return count


@pytest.mark.asyncio
async def test_a_migration_waits_while_another_replica_holds_the_lock(postgres_url: str) -> None:
    holder = await asyncpg.connect(_libpq(postgres_url))
    engine = create_engine(postgres_url)
    try:
        await holder.execute(
            "SELECT pg_advisory_lock($1)", migration_lock_key("alembic_version_tax")
        )
        running = asyncio.create_task(
            migrate(engine, migrations_dir("tax"), version_table="alembic_version_tax")
        )
        for _ in range(200):  # until the migration queues behind the lock (or is done)
            if running.done() or await _waiting_advisory_locks(holder):
                break
            await asyncio.sleep(0.05)
        assert not running.done(), "migrated while another replica held the lock"
        assert await _waiting_advisory_locks(holder) == 1
        assert not await holder.fetchval("SELECT to_regclass('alembic_version_tax') IS NOT NULL")

        await holder.execute("SELECT pg_advisory_unlock_all()")
        await asyncio.wait_for(running, 60)
        assert await holder.fetchval("SELECT to_regclass('alembic_version_tax') IS NOT NULL")
        # A second replica arriving later finds the schema at head and changes nothing.
        await migrate(engine, migrations_dir("tax"), version_table="alembic_version_tax")
    finally:
        await engine.dispose()
        await holder.close()
