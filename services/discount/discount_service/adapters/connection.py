"""A discount unit of work's hot-path connection on PostgreSQL: one pooled asyncpg
connection, checked out raw, with no Session, no SQLAlchemy connection and no greenlet
bridge (together most of a redemption's CPU when it went through them). Reads before the
first write run in autocommit (each its own snapshot, as every statement of a READ
COMMITTED transaction has); the first write sends BEGIN, the unit of work's commit COMMIT.

A unit of work uses either this connection or its session, never both at once: the
repositories ask `reads`/`writes` for a driver and go through the session when they get
None (SQLite, or a session already in use, whose transaction then holds everything)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.db import PostgresDriver, postgres_driver, raw_checkout
from discount_service.adapters.coupon_use_sql import COUNTED_COLUMNS, count_use_ctes


class Drivers(Protocol):
    """Where a repository sends a hot-path statement on PostgreSQL (None: through the
    session, with SQLAlchemy)."""

    async def reads(self) -> PostgresDriver | None:
        """For a read that needs no lock: in the unit of work's transaction if it has one."""

    async def writes(self) -> PostgresDriver | None:
        """For a write or a locking read: in the unit of work's transaction, begun here if
        none is yet."""

    async def insert_unless_taken(
        self, rows: Sequence[tuple[str, Mapping[str, Any]]], unique: Sequence[str]
    ) -> bool | None:
        """The (table, column values) rows as ONE statement in the unit of work's
        transaction, with the outbox rows emitted so far where this connection holds it:
        the first row with ON CONFLICT (`unique`) DO NOTHING, the others only if it was
        written. True if written, False if that key was taken (nothing written, the
        outbox rows taken with it: the unit of work is to be given up), None where writes
        go through the session."""

    async def insert_unless_taken_counting(
        self,
        rows: Sequence[tuple[str, Mapping[str, Any]]],
        unique: Sequence[str],
        use: tuple[str, str, str, int | None],
    ) -> tuple[bool, bool, bool] | None:
        """`insert_unless_taken`, and only if the first row was written, one use of a
        coupon counted in the same statement (HotConnection's)."""


class HotConnection:
    """Implements Drivers for one unit of work (see the module's docstring)."""

    def __init__(
        self,
        engine: AsyncEngine | None,
        session: Callable[[], AsyncSession | None],
        take_outbox: Callable[[], list[tuple[str, Mapping[str, Any]]]],
    ) -> None:
        postgres = engine is not None and engine.dialect.name == "postgresql"
        self._engine = engine if postgres else None  # None: every statement via the session
        self._session = session  # the unit of work's session if it has opened one
        self._take_outbox = take_outbox  # the unit of work's emitted rows, taken once
        self._pooled: PoolProxiedConnection | None = None
        self._driver: PostgresDriver | None = None

    @property
    def held(self) -> bool:
        return self._driver is not None

    @property
    def in_transaction(self) -> bool:
        return self._pooled is not None and _in_transaction(self._pooled)

    async def reads(self) -> PostgresDriver | None:
        if self._engine is None:
            return None
        session = self._session()
        if session is not None:
            return await postgres_driver(session)
        return await self._held()

    async def writes(self) -> PostgresDriver | None:
        if self._engine is None:
            return None
        session = self._session()
        if session is not None:
            # The session's transaction if SQLAlchemy has begun one; else SQLAlchemy begins
            # it (its asyncpg dialect sends BEGIN with its own first statement).
            driver = await postgres_driver(session)
            return driver if driver is not None and driver.in_transaction() else None
        driver = await self._held()
        if not self.in_transaction:
            await driver.execute("BEGIN")
        return driver

    async def _held(self) -> PostgresDriver:
        if self._driver is None:
            assert self._engine is not None
            pooled = self._pooled = await raw_checkout(self._engine)
            self._driver = PostgresDriver(pooled, pooled.driver_connection)
        return self._driver

    async def insert_unless_taken(
        self, rows: Sequence[tuple[str, Mapping[str, Any]]], unique: Sequence[str]
    ) -> bool | None:
        statement = await self._claim(
            rows, unique, _INSERTS_UNLESS_TAKEN_SQL, _inserts_unless_taken_sql
        )
        if statement is None:
            return None
        driver, sql, args = statement
        return bool(await driver.fetchval(sql, *args))

    async def insert_unless_taken_counting(
        self,
        rows: Sequence[tuple[str, Mapping[str, Any]]],
        unique: Sequence[str],
        use: tuple[str, str, str, int | None],
    ) -> tuple[bool, bool, bool] | None:
        """`insert_unless_taken`, and in the same statement, only if the first row was
        written, one use of a coupon counted: `use` is (tenant, coupon id, customer id, the
        customer's limit or None), counted as SqlCouponRepository.try_count_uses counts one
        coupon. (written, counted overall, counted for the customer); None where writes go
        through the session."""
        statement = await self._claim(rows, unique, _COUNTING_SQL, _inserts_counting_sql)
        if statement is None:
            return None
        driver, sql, args = statement
        found = await driver.fetchrow(sql, *args, *use)
        return bool(found[0]), bool(found[1]), bool(found[2])

    async def _claim(
        self,
        rows: Sequence[tuple[str, Mapping[str, Any]]],
        unique: Sequence[str],
        cache: dict[_ClaimKey, str],
        build: Callable[[_ClaimShape, tuple[str, ...]], str],
    ) -> tuple[PostgresDriver, str, list[Any]] | None:
        """The driver, SQL (built once per shape into `cache`) and arguments of a claim of
        `rows`; None where writes go through the session."""
        driver = await self.writes()
        if driver is None:
            return None
        if self.held:
            # The outbox row rides with the change: one round trip less per redemption.
            rows = [*rows, *self._take_outbox()]
        key = (tuple((table, tuple(values)) for table, values in rows), tuple(unique))
        sql = cache.get(key)
        if sql is None:
            sql = cache.setdefault(key, build(*key))
        return driver, sql, [value for _, values in rows for value in values.values()]

    async def commit(self) -> None:
        """Write the outbox rows not yet written, commit, and keep the connection for the
        rest of the unit of work (returned at its end)."""
        outbox = self._take_outbox()
        if outbox:
            # A plain INSERT in the transaction of the change (begun if only reads came first).
            driver = await self.writes()
            assert driver is not None, "committed through the session, not here"
            await driver.insert_all(outbox)
        if self._driver is not None and self.in_transaction:
            await self._driver.execute("COMMIT")

    def let_go(self) -> None:
        """Return the held connection before the session takes one of its own: a unit of
        work never waits for the pool while holding a connection of it. Only reads were
        sent on it (autocommit), so nothing is lost; a begun transaction is a bug."""
        if self._pooled is None:
            return
        if self.in_transaction:
            raise RuntimeError("a unit of work used its session after a hot-path write")
        pooled, self._pooled, self._driver = self._pooled, None, None
        pooled.close()

    async def close(self, exc: BaseException | None) -> None:
        """Roll back what was not committed and return the connection to the pool."""
        pooled, driver = self._pooled, self._driver
        self._pooled = self._driver = None
        if pooled is None or driver is None:
            return
        try:
            if exc is not None and not isinstance(exc, Exception):
                # Cancelled mid-statement: the connection's state is unknown, do not reuse it.
                pooled.invalidate()
            elif _in_transaction(pooled):
                try:
                    await driver.execute("ROLLBACK")
                except Exception:
                    # The database went away (it rolls back by itself): never hand this
                    # connection out again; the work's own error is the one to see.
                    pooled.invalidate()
                    if exc is None:
                        raise
        finally:
            pooled.close()


def _in_transaction(pooled: PoolProxiedConnection) -> bool:
    connection: Any = pooled.driver_connection  # asyncpg's
    return bool(connection.is_in_transaction())


# The SQL of each shape of `insert_unless_taken` (tables and columns from code, never from
# input); a handful per process.
_ClaimShape = tuple[tuple[str, tuple[str, ...]], ...]  # (table, columns) of each row
_ClaimKey = tuple[_ClaimShape, tuple[str, ...]]  # and the unique columns
_INSERTS_UNLESS_TAKEN_SQL: dict[_ClaimKey, str] = {}
_COUNTING_SQL: dict[_ClaimKey, str] = {}


def _inserts_unless_taken_sql(shape: _ClaimShape, unique: tuple[str, ...]) -> str:
    ctes, _ = _claim_ctes(shape, unique)
    # PostgreSQL runs every data-modifying CTE to completion, whether or not it is read.
    return f"WITH {', '.join(ctes)} SELECT count(*) FROM claimed"  # noqa: S608


def _inserts_counting_sql(shape: _ClaimShape, unique: tuple[str, ...]) -> str:
    """The claim's CTEs, then the coupon's counters (SqlCouponRepository's one-coupon
    count) moved only if the claim wrote its row: reading `claimed` orders them after it,
    so the redemption row takes its key before any counter row is locked, as before."""
    ctes, last = _claim_ctes(shape, unique)
    tenant, coupon, customer, limit = (f"${last + i}" for i in range(1, 5))
    ctes += count_use_ctes(tenant, coupon, customer, limit, only_if="EXISTS (SELECT FROM claimed)")
    return f"WITH {', '.join(ctes)} SELECT (SELECT count(*) FROM claimed), {COUNTED_COLUMNS}"  # noqa: S608


def _claim_ctes(
    shape: tuple[tuple[str, tuple[str, ...]], ...], unique: tuple[str, ...]
) -> tuple[list[str], int]:
    """The CTEs of the claim and of the rows written with it; the last parameter number."""
    position = 0

    def params(count: int) -> str:
        nonlocal position
        position += count
        return ", ".join(f"${i}" for i in range(position - count + 1, position + 1))

    (table, columns), *others = shape
    # Identifiers from the code's table metadata, never from input; values are parameters.
    claim = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({params(len(columns))})"  # noqa: S608
    ctes = [f"claimed AS ({claim} ON CONFLICT ({', '.join(unique)}) DO NOTHING RETURNING 1)"]
    for i, (other, other_columns) in enumerate(others):
        insert = f"INSERT INTO {other} ({', '.join(other_columns)})"
        ctes.append(f"w{i} AS ({insert} SELECT {params(len(other_columns))} FROM claimed)")  # noqa: S608
    return ctes, position
