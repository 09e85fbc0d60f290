"""The invoice service's hottest statements on PostgreSQL, sent on the session's asyncpg
connection (billing_common.db.PostgresDriver) as prepared statements. The two writes every
invoice makes are ONE statement each, sent on their own, so they commit atomically without
BEGIN and COMMIT round trips:

- a new invoice: the end of its pending-creation record (DELETE … RETURNING) and, only if
  that record was there and not being released, every row of the invoice and its outbox row
  (data-modifying CTEs reading the DELETE's row): one round trip where SQLAlchemy took nine;
- a peer event kept with its invoice: the inbox claim (INSERT … ON CONFLICT DO NOTHING
  RETURNING) and, only if it claimed, the received-event row: one round trip where it took
  four.

Values go through each column's own SQLAlchemy bind processing (UtcDateTime refuses naive
datetimes, ExactDecimal takes ints and strings), exactly as the core INSERTs did; the SQL is
built from the tables' metadata, once per shape, never from input."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from functools import cache
from typing import Any

import asyncpg
from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.db import PostgresDriver, postgres_driver
from billing_common.outbox import InboxRecord
from billing_common.uniqueness import unique_violation_from
from invoice_service.adapters.orm import PendingCreationRow, ReceivedEventRow

_PENDING: Table = PendingCreationRow.__table__  # type: ignore[attr-defined]
_RECEIVED: Table = ReceivedEventRow.__table__  # type: ignore[attr-defined]
_INBOX: Table = InboxRecord.__table__  # type: ignore[attr-defined]

Row = tuple[Table, Mapping[str, Any]]
_Processor = Callable[[Any], Any] | None
# Where a repository sends its hot-path statements: a block holding the asyncpg connection,
# or None (SQLite: the statements go through SQLAlchemy).
Drivers = Callable[[], AbstractAsyncContextManager[PostgresDriver | None]]


def session_drivers(session: AsyncSession) -> Drivers:
    """The session's own connection (checked out, and its transaction bookkeeping begun, by
    the first use): for a repository used without a unit of work's `drivers`."""

    @contextlib.asynccontextmanager
    async def on_session() -> AsyncIterator[PostgresDriver | None]:
        yield await postgres_driver(session)

    return on_session


@cache
def _processors(
    shape: tuple[tuple[Table, tuple[str, ...]], ...], dialect: Dialect
) -> tuple[_Processor, ...]:
    """Each value's bind processor, in order, once per shape (not one lookup per value)."""
    return tuple(
        table.c[column].type._cached_bind_processor(dialect)
        for table, columns in shape
        for column in columns
    )


def bound_values(rows: Sequence[Row], dialect: Dialect) -> list[Any]:
    """The rows' values in order, each through its column's bind processor: what asyncpg
    gets for the `$n` parameters of a statement built from these rows."""
    processors = _processors(tuple((table, tuple(row)) for table, row in rows), dialect)
    values = [value for _, row in rows for value in row.values()]
    return [
        value if process is None or value is None else process(value)
        for process, value in zip(processors, values, strict=True)
    ]


def _shape(rows: Sequence[Row]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((table.name, tuple(row)) for table, row in rows)


def _selects(shape: tuple[tuple[str, tuple[str, ...]], ...], first: int, source: str) -> list[str]:
    """One `INSERT … SELECT $n, … FROM source` per row: written only if `source` has its
    (single) row. PostgreSQL types the parameters from the columns they go into."""
    statements: list[str] = []
    position = first
    for table, columns in shape:
        params = ", ".join(f"${position + i}" for i in range(len(columns)))
        position += len(columns)
        # Identifiers from the code's table metadata, never from input; values are parameters.
        statements.append(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {params} FROM {source}"  # noqa: S608
        )
    return statements


@cache
def _finish_creation_sql(shape: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    gone = (
        f"DELETE FROM {_PENDING.name} WHERE tenant_id = $1 AND invoice_id = $2"  # noqa: S608
        " AND releasing IS FALSE RETURNING invoice_id"
    )
    writes = ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(_selects(shape, 3, "gone")))
    return f"WITH gone AS ({gone}), {writes} SELECT count(*) FROM gone"  # noqa: S608


async def finish_creation(
    driver: PostgresDriver, dialect: Dialect, *, tenant: str, invoice_id: str, rows: Sequence[Row]
) -> bool:
    """End the pending creation of `invoice_id` and write `rows`, all in one statement;
    False, writing nothing, if the record is gone or being released. A unique key already
    taken (the invoice's Idempotency-Key) raises UniqueViolation, nothing written."""
    sql = _finish_creation_sql(_shape(rows))
    try:
        found = await driver.fetchrow(sql, tenant, invoice_id, *bound_values(rows, dialect))
    except asyncpg.PostgresError as exc:
        raise unique_violation_from(exc) or exc from exc
    return bool(found[0])


@cache
def _keep_event_sql(inbox: tuple[str, ...], received: tuple[str, ...]) -> str:
    claim = (
        f"INSERT INTO {_INBOX.name} ({', '.join(inbox)})"  # noqa: S608
        f" VALUES ({', '.join(f'${i + 1}' for i in range(len(inbox)))})"
        " ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id"
    )
    (keep,) = _selects(((_RECEIVED.name, received),), len(inbox) + 1, "claimed")
    return f"WITH claimed AS ({claim}) {keep} RETURNING event_id"


async def keep_event(
    driver: PostgresDriver,
    dialect: Dialect,
    *,
    claim: Mapping[str, Any],
    received: Mapping[str, Any],
) -> bool:
    """Claim an event in the inbox and, only if this delivery claimed it, keep its row, in
    one statement; False, writing nothing, if it was claimed before. Two deliveries at once:
    the second waits for the first, then finds it claimed."""
    sql = _keep_event_sql(tuple(claim), tuple(received))
    values = bound_values(((_INBOX, claim), (_RECEIVED, received)), dialect)
    try:
        found = await driver.fetchrow(sql, *values)
    except asyncpg.PostgresError as exc:
        raise unique_violation_from(exc) or exc from exc
    return found is not None


# Always one row: the invoice's columns NULL when there is none. The tenant's seller version
# rides along, for the seller lookup every creation makes next (SqlSellerRepository).
_IDEMPOTENCY_SQL = (
    "SELECT i.id, i.request_hash,"
    " (SELECT version FROM invoice_seller_versions WHERE tenant_id = $1)"
    " FROM (SELECT 1) AS one LEFT JOIN invoice_invoices AS i"
    " ON i.tenant_id = $1 AND i.idempotency_key = $2"
)


async def find_by_idempotency_key(driver: PostgresDriver, tenant: str, key: str) -> Any:
    """(id, request_hash, seller version) for the tenant's invoice created with `key`: id
    and request_hash None if there is none, the version None if the tenant has none."""
    return await driver.fetchrow(_IDEMPOTENCY_SQL, tenant, key)


_BEGIN_PENDING_SQL = (
    f"INSERT INTO {_PENDING.name} (tenant_id, invoice_id, redemption_key, started_at, releasing)"  # noqa: S608
    " VALUES ($1, $2, $3, $4, FALSE) ON CONFLICT (tenant_id, invoice_id) DO UPDATE"
    " SET redemption_key = excluded.redemption_key, started_at = excluded.started_at,"
    f" releasing = FALSE WHERE {_PENDING.name}.releasing IS FALSE RETURNING invoice_id"
)


async def begin_pending(driver: PostgresDriver, dialect: Dialect, row: Mapping[str, Any]) -> bool:
    """The upsert of PendingCreations.begin (see there); True if the record is this one."""
    tenant, invoice_id, key, started_at = bound_values(((_PENDING, row),), dialect)
    found = await driver.fetchrow(_BEGIN_PENDING_SQL, tenant, invoice_id, key, started_at)
    return found is not None


# The idempotency lookup and, only when it finds no invoice, the upsert of begin_pending: one
# snapshot, one round trip. Always one row: the invoice's columns NULL when there is none,
# the tenant's seller version, and whether the pending record is this creation's.
# The table's name from its metadata, never from input; values are parameters.
_LOOKUP_AND_BEGIN_SQL = (
    "WITH found AS (SELECT id, request_hash FROM invoice_invoices"  # noqa: S608
    " WHERE tenant_id = $1 AND idempotency_key = $5),"
    f" begun AS (INSERT INTO {_PENDING.name}"
    " (tenant_id, invoice_id, redemption_key, started_at, releasing)"
    " SELECT $1, $2, $3, $4, FALSE WHERE NOT EXISTS (SELECT 1 FROM found)"
    " ON CONFLICT (tenant_id, invoice_id) DO UPDATE"
    " SET redemption_key = excluded.redemption_key, started_at = excluded.started_at,"
    f" releasing = FALSE WHERE {_PENDING.name}.releasing IS FALSE RETURNING invoice_id)"
    " SELECT (SELECT id FROM found), (SELECT request_hash FROM found),"
    " (SELECT version FROM invoice_seller_versions WHERE tenant_id = $1),"
    " EXISTS (SELECT 1 FROM begun) AS begun"
)


async def lookup_and_begin(
    driver: PostgresDriver, dialect: Dialect, key: str, row: Mapping[str, Any]
) -> tuple[Any, bool]:
    """find_by_idempotency_key's row (id, request_hash, seller version) and begin_pending's
    answer (False, writing nothing, when an invoice has `key`), in one statement."""
    tenant, invoice_id, redemption_key, started_at = bound_values(((_PENDING, row),), dialect)
    found = await driver.fetchrow(
        _LOOKUP_AND_BEGIN_SQL, tenant, invoice_id, redemption_key, started_at, key
    )
    return found, bool(found["begun"])
