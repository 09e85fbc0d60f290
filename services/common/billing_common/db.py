"""Async database access shared by all services: engines, column types, migrations.

SQLite (aiosqlite) for the embedded runtime, PostgreSQL (asyncpg) for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, Numeric, String, event, text
from sqlalchemy.engine import Connection, Dialect, ExceptionContext
from sqlalchemy.exc import DisconnectionError, IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.types import TypeDecorator
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.uniqueness import unique_violation_from

if TYPE_CHECKING:
    from alembic.config import Config


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
        return utc_instant(value)


def utc_instant(value: Any) -> datetime | None:
    """What a UtcDateTime column makes of a value read from the database: UTC, a naive value
    taken as UTC. For rows read on the raw driver, where no column type applies (asyncpg
    hands PostgreSQL's infinity back as a naive datetime.max)."""
    if value is None:
        return None
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class DatabaseUnavailable(ConnectionError):
    """The database cannot be reached or is going away (a restart, a failover, the network):
    nothing was committed unless the commit itself was cut, and the same request or event
    succeeds once it is back. The API answers 503 with Retry-After; consumers retry."""


# SQLSTATEs that say "not now" rather than "never": connection exceptions (class 08), the
# server shutting down or starting up (57P01-03), no connection slot free (53300).
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})
# Connecting to a server that is down must fail fast, not after asyncpg's default minute.
CONNECT_TIMEOUT_SECONDS = 5.0


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


# A fixed-size pool: `pool_size` connections kept open and no overflow. With overflow, a
# burst above the pool opened connections that were closed again as soon as they were
# returned (4-40 per service in 13 s of bench load): a TCP + TLS + auth handshake and a
# backend start each, for requests that would have waited a moment for a pooled one. On
# the bench (32 client connections, the service on one core) 5, 10 and 20 connections
# without overflow and 10 + 10 overflow were within the run-to-run noise of each other
# (bench/profiles/tax-discount.md); 10 keeps four services x replicas well inside
# PostgreSQL's default 100 connections. A service that waits on its pool can raise it.
DEFAULT_POOL_SIZE = 10
DEFAULT_POOL_MAX_OVERFLOW = 0
# How long a request waits for a pooled connection before it fails (SQLAlchemy's default).
DEFAULT_POOL_TIMEOUT_SECONDS = 30.0


def create_engine(
    url: str,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_POOL_MAX_OVERFLOW,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT_SECONDS,
) -> AsyncEngine:
    """An engine with a fixed pool of `pool_size` connections (PostgreSQL), plus at most
    `max_overflow` opened for a burst and closed on return (0: none; settings
    DATABASE_POOL_SIZE, DATABASE_POOL_MAX_OVERFLOW)."""
    if is_sqlite(url):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection per service: SQLite has a single writer, and queueing transactions
        # in-process is what keeps concurrent requests correct (no lock-upgrade deadlocks).
        engine = create_async_engine(url, pool_size=1, max_overflow=0, connect_args={"timeout": 30})
        _sqlite_pragmas(engine)
        _report_unique_violations(engine)
        return engine
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        json_serializer=json.dumps,
        connect_args={"timeout": CONNECT_TIMEOUT_SECONDS},
    )
    _replace_closed_connections(engine)
    _report_outages(engine)
    _report_unique_violations(engine)
    return engine


def _report_unique_violations(engine: AsyncEngine) -> None:
    """Raise `UniqueViolation` for a write that breaks a unique constraint, from a flush, a
    commit or a Core statement alike: the kernel's one "already taken" signal, the same on
    SQLite and PostgreSQL, so that no use case (or repository) catches a SQLAlchemy type.
    Other integrity errors (not null, foreign key, check) stay `IntegrityError`: they are bugs."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> BaseException | None:
        if not isinstance(context.sqlalchemy_exception, IntegrityError):
            return None
        return unique_violation_from(context.original_exception)


def _report_outages(engine: AsyncEngine) -> None:
    """Turn every sign that PostgreSQL is unreachable into `DatabaseUnavailable`, and mark it a
    disconnect so SQLAlchemy drops the pool's connections (all are dead after a restart)
    instead of handing them out one failure at a time.

    SQLAlchemy only recognises a closed socket as a disconnect. A server shutting down first
    answers "terminating connection due to administrator command" (57P01) or, to new
    connections, "the database system is shutting down/starting up" (57P03); a refused
    connect is a bare OSError, not even wrapped; and asyncpg reports a connection whose
    server vanished mid-exchange as an InternalClientError. Each would be a 500."""

    @event.listens_for(engine.sync_engine, "do_connect")
    def _on_connect(
        dialect: Dialect, _record: Any, cargs: list[Any], cparams: dict[str, Any]
    ) -> Any:
        # SQLAlchemy passes only DBAPI errors from connect to `handle_error`.
        try:
            return dialect.connect(*cargs, **cparams)
        except OSError as exc:
            raise DatabaseUnavailable(f"PostgreSQL is unavailable: {_describe(exc)}") from exc

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> BaseException | None:
        error = context.original_exception
        if not isinstance(error, Exception):
            # A cancelled task counts as a disconnect for SQLAlchemy (it drops the connection,
            # rightly), but replacing the CancelledError would make the task uncancellable.
            return None
        if not (context.is_disconnect or signals_outage(error)):
            return None
        context.is_disconnect = True
        return DatabaseUnavailable(f"PostgreSQL is unavailable: {_describe(error)}")


def signals_outage(error: BaseException) -> bool:
    """Whether `error` (or a cause under it) says PostgreSQL is unreachable or going away
    rather than that the statement is wrong: what `DatabaseUnavailable` (503) stands for. For
    an error raised outside the engine's `handle_error` hook, e.g. by a raw pool checkout."""
    import asyncpg

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError | asyncpg.exceptions.InternalClientError):
            return True  # OSError covers refused, reset, unreachable and timed-out connects
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and (
            sqlstate.startswith("08") or sqlstate in _UNAVAILABLE_SQLSTATES
        ):
            return True
        if isinstance(current, asyncpg.exceptions.InterfaceError) and "connection is closed" in str(
            current
        ):
            return True
        current = current.__cause__  # the driver's error under SQLAlchemy's wrapper
    return False


def _describe(error: BaseException) -> str:
    cause = error.__cause__ or error
    return f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__


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
    # Alembic is imported here, not at the top: importing it loads its DDL implementations and
    # with them SQLAlchemy's MySQL, MSSQL and Oracle dialects (about 12 MB of resident memory),
    # which a service that does not migrate at start never needs.
    from alembic.config import Config

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
        from alembic import command

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


class PostgresDriver:
    """The asyncpg connection under a session's SQLAlchemy connection, for the hot paths.

    A statement sent here skips SQLAlchemy's compile-cache lookup, execution context,
    result wrapping and greenlet bridge (~60 % of a small request's CPU in the profile);
    asyncpg prepares each SQL text once per connection and reuses it. It runs in the
    session's transaction when SQLAlchemy has begun one on this connection (its asyncpg
    dialect sends BEGIN lazily, with the first statement); otherwise it runs on its own
    (autocommit), which is how a single read or a single atomic write saves the BEGIN and
    COMMIT round trips. Outages are reported as `DatabaseUnavailable`, as for statements
    sent through SQLAlchemy, and the connection is dropped from the pool."""

    __slots__ = ("_connection", "_driver")

    def __init__(self, connection: AsyncConnection | PoolProxiedConnection, driver: Any) -> None:
        self._connection = connection  # what to invalidate on an outage
        self._driver = driver

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        try:
            return list(await self._driver.fetch(sql, *args))
        except Exception as exc:
            raise await self._translated(exc) from exc

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        try:
            return await self._driver.fetchrow(sql, *args)
        except Exception as exc:
            raise await self._translated(exc) from exc

    async def fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self._driver.fetchval(sql, *args)
        except Exception as exc:
            raise await self._translated(exc) from exc

    async def execute(self, sql: str, *args: Any) -> str:
        try:
            return str(await self._driver.execute(sql, *args))
        except Exception as exc:
            raise await self._translated(exc) from exc

    def in_transaction(self) -> bool:
        """Whether statements sent here run in the session's open transaction (else each
        commits on its own)."""
        return bool(self._driver.is_in_transaction())

    async def insert_all(self, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """INSERT each (table, column values) row, all in ONE statement (data-modifying
        CTEs), so they commit together even outside a transaction: one round trip."""
        shape = tuple((table, tuple(values)) for table, values in rows)
        sql = _INSERTS_SQL.get(shape)
        if sql is None:
            sql = _INSERTS_SQL.setdefault(shape, _inserts_sql(shape))
        await self.execute(sql, *(value for _, values in rows for value in values.values()))

    async def insert_all_if(
        self,
        rows: Sequence[tuple[str, Mapping[str, Any]]],
        *,
        guard: str,
        guard_args: Sequence[Any],
        expected: Any,
    ) -> Any:
        """The rows of `insert_all`, in ONE statement, written only if the scalar query
        `guard` (a SELECT that never answers NULL, its parameters `$1`.. from `guard_args`)
        answers `expected`; returns what it answered (written iff that equals `expected`).
        The guard and the INSERTs read the statement's one snapshot: a check-then-write in
        one round trip, for an optimistic use of something cached (see the tax rules)."""
        shape = tuple((table, tuple(values)) for table, values in rows)
        key = (guard, len(guard_args), shape)
        sql = _GUARDED_INSERTS_SQL.get(key)
        if sql is None:
            sql = _GUARDED_INSERTS_SQL.setdefault(key, _guarded_inserts_sql(*key))
        args = (*guard_args, expected, *(value for _, values in rows for value in values.values()))
        return await self.fetchval(sql, *args)

    async def _translated(self, error: Exception) -> Exception:
        if not signals_outage(error):
            return error
        with contextlib.suppress(Exception):
            if isinstance(self._connection, AsyncConnection):
                await self._connection.invalidate()
            else:
                self._connection.invalidate()
        return DatabaseUnavailable(f"PostgreSQL is unavailable: {_describe(error)}")


# The SQL of each shape of `insert_all` (tables and their columns, from code, never from
# input); a handful per service.
_INSERTS_SQL: dict[tuple[tuple[str, tuple[str, ...]], ...], str] = {}


def _inserts_sql(shape: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    statements: list[str] = []
    position = 0
    for table, columns in shape:
        params = ", ".join(f"${position + i + 1}" for i in range(len(columns)))
        position += len(columns)
        # Identifiers from the code's table metadata, never from input; values are parameters.
        statements.append(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({params})")  # noqa: S608
    *first, last = statements
    if not first:
        return last
    # PostgreSQL runs every data-modifying CTE to completion, whether or not it is read.
    ctes = ", ".join(f"w{i} AS ({statement})" for i, statement in enumerate(first))
    return f"WITH {ctes} {last}"


_GUARDED_INSERTS_SQL: dict[tuple[str, int, tuple[tuple[str, tuple[str, ...]], ...]], str] = {}


def _guarded_inserts_sql(
    guard: str, guard_params: int, shape: tuple[tuple[str, tuple[str, ...]], ...]
) -> str:
    expected = f"${guard_params + 1}"
    position = guard_params + 1
    ctes = [f"guard AS (SELECT ({guard}) AS value)"]
    for i, (table, columns) in enumerate(shape):
        params = ", ".join(f"${position + j + 1}" for j in range(len(columns)))
        position += len(columns)
        # Identifiers and the guard from the code, never from input; values are parameters.
        insert = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {params}"
        ctes.append(f"w{i} AS ({insert} FROM guard WHERE guard.value = {expected})")
    return f"WITH {', '.join(ctes)} SELECT value FROM guard"  # noqa: S608


async def postgres_driver(session: AsyncSession) -> PostgresDriver | None:
    """The session's connection as a `PostgresDriver`, or None on SQLite (whose hot paths
    stay on SQLAlchemy core)."""
    connection = await session.connection()
    if connection.dialect.name != "postgresql":
        return None
    raw = await connection.get_raw_connection()
    return PostgresDriver(connection, raw.driver_connection)


async def raw_checkout(engine: AsyncEngine) -> PoolProxiedConnection:
    """A connection of `engine`'s pool, checked out raw (no engine connection around it). A
    server shutting down or starting up answers the connect with 57P03, which reaches the
    engine's `handle_error` hook only for connections opened through the engine, never for
    the pool's raw ones: here it is DatabaseUnavailable (a 503), not a 500."""
    try:
        return await engine.raw_connection()
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        if signals_outage(exc):
            raise DatabaseUnavailable(f"PostgreSQL is unavailable: {_describe(exc)}") from exc
        raise


@contextlib.asynccontextmanager
async def pooled_driver(
    engine: AsyncEngine, *, discard_on_error: bool = False
) -> AsyncIterator[PostgresDriver]:
    """A connection of `engine`'s pool as a `PostgresDriver`, outside any session, for the
    block's statements only (each commits on its own): a checkout and a checkin, with none
    of a session's or an engine connection's transaction bookkeeping (about 60 against 280
    microseconds of CPU around one statement). The pool's events still apply (a connection
    PostgreSQL closed is replaced, a refused connect is DatabaseUnavailable, and so is one
    the server answers with an outage SQLSTATE, 57P03 while it shuts down).

    With `discard_on_error`, a block that raises anything closes the connection instead of
    returning it: for a block that leaves session state behind until its end (a session
    advisory lock, the outbox relay's), which closing is the one sure way to clear."""
    pooled = await raw_checkout(engine)
    try:
        yield PostgresDriver(pooled, pooled.driver_connection)
    except BaseException as exc:
        if discard_on_error or not isinstance(exc, Exception):
            # Cancelled mid-statement: the connection's state is unknown, do not reuse it.
            # (Outside a greenlet this closes the socket at once; the server then ends the
            # backend, and with it every session lock it held.)
            pooled.invalidate()
        raise
    finally:
        # Nothing was begun on it, so the pool's rollback-on-return sends nothing.
        pooled.close()
