"""The hot paths' prepared statements on the session's asyncpg connection
(billing_common.db.PostgresDriver): they join the session's transaction when one is open,
commit on their own otherwise, write several rows atomically in one statement, and report a
server that went away as DatabaseUnavailable (a 503), as SQLAlchemy's statements do."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text

from billing_common.db import (
    DatabaseUnavailable,
    create_engine,
    ping,
    pooled_driver,
    postgres_driver,
    session_factory,
    signals_outage,
)
from billing_common.testing import postgres_shutting_down

pytestmark = pytest.mark.integration


def plain_postgres_url(url: str) -> str:
    return url.replace("postgresql+asyncpg", "postgresql")


TABLES = (
    "CREATE TABLE parent (id text PRIMARY KEY);"
    " CREATE TABLE child (id serial PRIMARY KEY, parent_id text NOT NULL REFERENCES parent (id))"
)


async def _count(url: str, table: str) -> int:
    connection = await asyncpg.connect(plain_postgres_url(url))
    try:
        return int(await connection.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await connection.close()


async def test_statements_join_the_open_transaction_and_roll_back_with_it(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    try:
        async with engine.begin() as conn:
            for statement in TABLES.split(";"):
                await conn.execute(text(statement))
        async with sessions() as session:
            await (await session.connection()).execute(text("SELECT 1"))  # with its BEGIN
            driver = await postgres_driver(session)
            assert driver is not None and driver.in_transaction()
            await driver.insert_all([("parent", {"id": "p-1"})])
            await session.rollback()
        assert await _count(postgres_url, "parent") == 0

        async with sessions() as session:
            driver = await postgres_driver(session)
            assert driver is not None and not driver.in_transaction()
            # Parent and child in one statement: the foreign key holds at its end.
            await driver.insert_all([("parent", {"id": "p-2"}), ("child", {"parent_id": "p-2"})])
            await session.rollback()  # nothing open: the statement committed by itself
        assert (await _count(postgres_url, "parent"), await _count(postgres_url, "child")) == (1, 1)

        async with sessions() as session:
            driver = await postgres_driver(session)
            assert driver is not None
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await driver.insert_all([("parent", {"id": "p-3"}), ("child", {"parent_id": "x"})])
        assert await _count(postgres_url, "parent") == 1  # all of it or none
    finally:
        await engine.dispose()


async def test_guarded_inserts_write_all_rows_only_while_the_guard_holds(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url)
    sessions = session_factory(engine)
    try:
        async with engine.begin() as conn:
            for statement in TABLES.split(";"):
                await conn.execute(text(statement))
            await conn.execute(text("CREATE TABLE versions (name text PRIMARY KEY, n int)"))
            await conn.execute(text("INSERT INTO versions VALUES ('a', 3)"))
        guard = "SELECT coalesce((SELECT n FROM versions WHERE name = $1), 0)"
        rows = [("parent", {"id": "p-1"}), ("child", {"parent_id": "p-1"})]
        async with sessions() as session:
            driver = await postgres_driver(session)
            assert driver is not None
            # Out of date: nothing written, the current value answered.
            assert await driver.insert_all_if(rows, guard=guard, guard_args=("a",), expected=2) == 3
            assert (await _count(postgres_url, "parent"), await _count(postgres_url, "child")) == (
                0,
                0,
            )
            assert await driver.insert_all_if(rows, guard=guard, guard_args=("a",), expected=3) == 3
            assert (await _count(postgres_url, "parent"), await _count(postgres_url, "child")) == (
                1,
                1,
            )
            # A name without a row answers the guard's default.
            other = [("parent", {"id": "p-2"})]
            written = await driver.insert_all_if(other, guard=guard, guard_args=("b",), expected=0)
            assert written == 0
            assert await _count(postgres_url, "parent") == 2
            # All of it or none, as insert_all.
            broken = [("parent", {"id": "p-3"}), ("child", {"parent_id": "x"})]
            with pytest.raises(asyncpg.ForeignKeyViolationError):
                await driver.insert_all_if(broken, guard=guard, guard_args=("a",), expected=3)
            assert await _count(postgres_url, "parent") == 2
    finally:
        await engine.dispose()


async def test_a_connection_the_server_terminated_is_database_unavailable_then_heals(
    postgres_url: str,
) -> None:
    engine = create_engine(postgres_url, pool_size=1)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:
            driver = await postgres_driver(session)
            assert driver is not None
            assert (await driver.fetchrow("SELECT 1"))[0] == 1
            admin = await asyncpg.connect(plain_postgres_url(postgres_url))
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await admin.close()
            with pytest.raises(DatabaseUnavailable):
                await driver.fetchrow("SELECT 1")
        await ping(engine)  # the dead connection left the pool: the next one is fresh
    finally:
        await engine.dispose()


async def test_a_pooled_connect_refused_while_the_server_shuts_down_is_unavailable(
    postgres_url: str,
) -> None:
    """57P03 on connect ("the database system is shutting down") reaches no `handle_error`
    hook for a raw pool checkout: pooled_driver translates it, a 503 rather than a 500."""
    engine = create_engine(postgres_url, pool_size=1)
    try:
        with postgres_shutting_down(engine), pytest.raises(DatabaseUnavailable, match="shutting"):
            async with pooled_driver(engine) as driver:
                await driver.fetchval("SELECT 1")
        async with pooled_driver(engine) as driver:  # the server is back
            assert await driver.fetchval("SELECT 1") == 1
        assert engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


def test_signals_outage_tells_a_server_going_away_from_a_wrong_statement() -> None:
    shutting_down = asyncpg.exceptions.CannotConnectNowError("shutting down")
    wrapper = RuntimeError("the dialect's wrapper")
    wrapper.__cause__ = shutting_down
    assert signals_outage(shutting_down) and signals_outage(wrapper)
    assert signals_outage(ConnectionRefusedError())
    assert not signals_outage(asyncpg.exceptions.UndefinedTableError("no such table"))
    assert not signals_outage(ValueError("a bug"))


async def test_sqlite_has_no_driver(tmp_path: object) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    try:
        async with session_factory(engine)() as session:
            assert await postgres_driver(session) is None
    finally:
        await engine.dispose()
