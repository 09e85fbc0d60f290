"""Async database access shared by all services: engines, column types, migrations.

SQLite (aiosqlite) for the embedded runtime, PostgreSQL (asyncpg) for the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import weakref
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import DateTime, Numeric, String, event, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.types import TypeDecorator
from sqlmodel.ext.asyncio.session import AsyncSession


class ExactDecimal(TypeDecorator[Decimal]):
    """Decimal stored exactly: NUMERIC on PostgreSQL, TEXT on SQLite (whose NUMERIC is a
    float and would lose cents)."""

    impl = Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(64))
        return dialect.type_descriptor(Numeric(asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            value = Decimal(str(value)) if isinstance(value, int | str) else value
        return format(value, "f") if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return value if isinstance(value, Decimal) else Decimal(str(value))


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both databases. SQLite keeps no offset, so values are stored as
    naive UTC there (which also keeps their text order chronological) and get UTC back on read.
    Naive datetimes are refused: an instant without a zone is a bug waiting to bill wrong."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError("naive datetimes are not stored: give them a timezone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if is_sqlite(url):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection per service: SQLite has a single writer, and queueing transactions
        # in-process is what keeps concurrent requests correct (no lock-upgrade deadlocks).
        engine = create_async_engine(url, pool_size=1, max_overflow=0, connect_args={"timeout": 30})
        _sqlite_pragmas(engine)
        return engine
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        json_serializer=json.dumps,
    )
    _replace_closed_connections(engine)
    return engine


def _replace_closed_connections(engine: AsyncEngine) -> None:
    """Hand out no pooled connection that PostgreSQL has closed (a restart, a terminated
    backend): asyncpg learns of the close from the socket, so checking costs no round trip.
    `pool_pre_ping` would spend three on every checkout (BEGIN, a query, ROLLBACK), a third
    of a small request's database time. A connection that breaks while in use is caught by
    SQLAlchemy's disconnect handling, which invalidates the pool."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver_connection = getattr(dbapi_connection, "_connection", None)
        is_closed = getattr(driver_connection, "is_closed", None)
        if is_closed is not None and is_closed():
            # The pool discards it and checks out another (or connects anew).
            raise DisconnectionError("PostgreSQL closed this pooled connection")


def _sqlite_pragmas(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def alembic_config(migrations_dir: Path, url: str, version_table: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["version_table"] = version_table
    return cfg


# Alembic's `context` is a module-level proxy: two migrations interleaving in one process
# (the embedded runtime starts four services at once) would run in each other's context.
_migration_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _migration_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _migration_locks.get(loop)
    if lock is None:
        lock = _migration_locks[loop] = asyncio.Lock()
    return lock


async def migrate(engine: AsyncEngine, migrations_dir: Path, version_table: str) -> None:
    """Apply a service's Alembic migrations up to head on an already-open engine."""
    url = engine.url.render_as_string(hide_password=False)
    cfg = alembic_config(migrations_dir, url, version_table)

    def _upgrade(connection: Connection) -> None:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")

    if engine.dialect.name != "sqlite":
        # PostgreSQL's DDL is transactional: the whole upgrade commits or none of it does.
        async with _migration_lock(), engine.begin() as conn:
            # Every replica's init container migrates at start-up: the first one holds this
            # lock until its upgrade commits, the others then find the schema at head.
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"),
                {"key": migration_lock_key(version_table)},
            )
            await conn.run_sync(_upgrade)
        return
    async with _migration_lock(), engine.connect() as conn:
        await conn.run_sync(_upgrade_sqlite_atomically, _upgrade)


def migration_lock_key(version_table: str) -> int:
    """The PostgreSQL advisory lock key (a signed 64-bit integer) of one service's
    migrations, stable across processes and versions."""
    digest = hashlib.sha256(f"billing-migrations:{version_table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _upgrade_sqlite_atomically(connection: Connection, upgrade: Any) -> None:
    """SQLite's DDL is transactional too, but Python's sqlite3 driver (under aiosqlite) opens a
    transaction only before INSERT/UPDATE/DELETE: each CREATE TABLE commits by itself. A start
    aborted mid-upgrade (`make run` with a port taken) then left tables without their revision,
    and every later start failed on "table outbox already exists". Here the driver's implicit
    transactions are off and one explicit BEGIN ... COMMIT spans the upgrade (SQLAlchemy's
    recipe for pysqlite/aiosqlite), so an interrupted upgrade leaves nothing behind."""
    dbapi_connection: Any = connection.connection.dbapi_connection
    previous = dbapi_connection.isolation_level
    dbapi_connection.isolation_level = None
    try:
        connection.exec_driver_sql("BEGIN")
        try:
            upgrade(connection)
        except BaseException:
            connection.rollback()
            raise
        connection.commit()
    finally:
        dbapi_connection.isolation_level = previous
