"""A migration interrupted half-way leaves no half-migrated database: the next start migrates
from scratch instead of failing on "table outbox already exists" (as after a `make run` whose
process died on a taken port while another service was migrating)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sqlalchemy import inspect

from billing_common.db import create_engine, migrate
from invoice_service.bootstrap import MIGRATIONS_DIR

# Runs the invoice service's migrations and kills the process, with no rollback or clean-up,
# right before the Nth CREATE TABLE: what an abort mid-start looks like to the database.
_KILLED_MID_MIGRATION = textwrap.dedent(
    """
    import asyncio, os, sys
    from sqlalchemy import event
    from billing_common.db import create_engine, migrate
    from invoice_service.bootstrap import MIGRATIONS_DIR

    async def main(url):
        engine = create_engine(url)
        created = 0

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _die(conn, cursor, statement, *args):
            nonlocal created
            if statement.lstrip().upper().startswith("CREATE TABLE"):
                created += 1
                if created == 4:
                    os._exit(17)

        await migrate(engine, MIGRATIONS_DIR, "alembic_version_invoice")

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_a_migration_killed_half_way_leaves_nothing_behind(database_url: str) -> None:
    died = subprocess.run(
        [sys.executable, "-c", _KILLED_MID_MIGRATION, database_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert died.returncode == 17, died.stderr[-2000:]
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        assert tables == [], f"a killed migration left {tables}"
        await migrate(engine, MIGRATIONS_DIR, "alembic_version_invoice")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        assert {"outbox", "alembic_version_invoice"} <= set(tables)
    finally:
        await engine.dispose()
