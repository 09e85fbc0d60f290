"""An event applied to one invoice once (a payment received or failed), on PostgreSQL, in two
statements sent on their own on the session's asyncpg connection (billing_common.db
.PostgresDriver), where the unit of work's transaction took thirteen round trips (BEGIN, the
claim, the header FOR UPDATE, five child tables, the UPDATE, two INSERTs, the outbox, COMMIT):

- the read: whether the inbox holds the event already, the invoice's header and its child
  rows, all at one snapshot (each child table as an array of its row type);
- the write: the header's UPDATE guarded by the version that was read, and, only if it
  updated, the appended history and payment rows, the inbox claim and the outbox rows, all
  in one statement, so they commit (durably) together or not at all.

Nothing is locked between the two: a change committed in between makes the guarded UPDATE
match no row and nothing is written (the caller reads again and decides again), and a
delivery of the same event that claimed it in between makes the claim's INSERT fail on the
inbox's key, the whole statement with it. Values go through each column's bind processing,
as SQLAlchemy's statements did; the SQL is built from the tables' metadata, never from
input."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import asyncpg
from sqlalchemy import Table
from sqlalchemy.engine import Dialect

from billing_common.db import PostgresDriver
from billing_common.outbox import InboxRecord, OutboxMessage
from billing_common.uniqueness import unique_violation_from
from invoice_service.adapters import invoice_rows as rows
from invoice_service.adapters.postgres_writes import bound_values

_INBOX: Table = InboxRecord.__table__  # type: ignore[attr-defined]
_OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]


def _children_sql(name: str, table: Table, *order: str) -> str:
    return (
        f"ARRAY(SELECT c FROM {table.name} c WHERE c.tenant_id = $3 AND c.invoice_id = $4"  # noqa: S608
        f" ORDER BY {', '.join(f'c.{column}' for column in order)}) AS {name}"
    )


# $1 consumer, $2 event id, $3 tenant, $4 invoice id.
_READ_SQL = ", ".join(
    (
        f"SELECT EXISTS (SELECT 1 FROM {_INBOX.name} WHERE consumer = $1 AND event_id = $2)"  # noqa: S608
        " AS seen",
        f"(SELECT h FROM {rows.INVOICES.name} h WHERE h.tenant_id = $3 AND h.id = $4)"  # noqa: S608
        " AS header",
        _children_sql("lines", rows.LINES, "position"),
        _children_sql("taxes", rows.LINE_TAXES, "position", "seq"),
        _children_sql("discounts", rows.DISCOUNTS, "seq"),
        _children_sql("history", rows.HISTORY, "seq"),
        _children_sql("payments", rows.PAYMENTS, "seq"),
    )
)


class _Columns:
    """A row whose columns read as attributes (what the repository's loader reads)."""

    __slots__ = ("_record",)

    def __init__(self, record: Any) -> None:
        self._record = record

    def __getattr__(self, name: str) -> Any:
        return self._record[name]


@dataclass(frozen=True, slots=True)
class EventRead:
    """What the read found: `seen` (claimed before), else the invoice's rows (header None:
    no such invoice)."""

    seen: bool
    header: Any = None
    lines: Sequence[Any] = ()
    taxes: Sequence[Any] = ()
    discounts: Sequence[Any] = ()
    history: Sequence[Any] = ()
    payments: Sequence[Any] = ()


async def read(
    driver: PostgresDriver, *, consumer: str, event_id: str, tenant: str, invoice_id: str
) -> EventRead:
    found = await driver.fetchrow(_READ_SQL, consumer, event_id, tenant, invoice_id)
    if found["seen"]:
        return EventRead(seen=True)
    if found["header"] is None:
        return EventRead(seen=False)

    def columns(records: Sequence[Any] | None) -> list[_Columns]:
        return [_Columns(record) for record in records or ()]

    return EventRead(
        seen=False,
        header=_Columns(found["header"]),
        lines=columns(found["lines"]),
        taxes=columns(found["taxes"]),
        discounts=columns(found["discounts"]),
        history=columns(found["history"]),
        payments=columns(found["payments"]),
    )


@cache
def _cast(table: Table, column: str, dialect: Dialect) -> str:
    return str(table.c[column].type.compile(dialect=dialect))


def _insert_sql(
    table: Table, columns: tuple[str, ...], count: int, first: int, dialect: Dialect
) -> str:
    """One INSERT of `count` rows from `$first` on, written only if `source` has its row.
    The rows go in from a VALUES list, in its order (the outbox's ids keep the order the
    events were emitted in); each parameter is cast to its column's type, which a VALUES
    list in a subquery does not take from the columns it goes into."""
    casts = [_cast(table, column, dialect) for column in columns]
    values = ", ".join(
        "("
        + ", ".join(f"${first + n * len(columns) + j}::{cast}" for j, cast in enumerate(casts))
        + ")"
        for n in range(count)
    )
    return (
        f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT * FROM (VALUES {values})"  # noqa: S608
        " AS v WHERE EXISTS (SELECT 1 FROM source)"
    )


@cache
def _write_sql(
    header: tuple[str, ...] | None,
    inserts: tuple[tuple[Table, tuple[str, ...], int], ...],
    dialect: Dialect,
) -> str:
    """With `header`: the guarded UPDATE ($1 tenant, $2 invoice id, $3 the version read,
    then the header's values) and the `inserts` (table, columns, rows) from its row; the
    count of rows updated. Without: the `inserts` from a one-row source; 1."""
    ctes: list[str] = []
    position = 1
    if header is not None:
        assignments = ", ".join(f"{column} = ${i + 4}" for i, column in enumerate(header))
        ctes.append(
            f"source AS (UPDATE {rows.INVOICES.name} SET {assignments}"  # noqa: S608
            " WHERE tenant_id = $1 AND id = $2 AND version = $3 RETURNING 1)"
        )
        position = len(header) + 4
    else:
        ctes.append("source AS (SELECT 1)")
    for i, (table, columns, count) in enumerate(inserts):
        ctes.append(f"w{i} AS ({_insert_sql(table, columns, count, position, dialect)})")
        position += len(columns) * count
    return f"WITH {', '.join(ctes)} SELECT count(*) FROM source"  # noqa: S608


class ClaimedMeanwhile(Exception):
    """Another delivery of the event claimed it between the read and the write."""


async def write(
    driver: PostgresDriver,
    dialect: Dialect,
    *,
    tenant: str,
    invoice_id: str,
    loaded_version: int | None,
    header: Mapping[str, Any] | None,
    inserts: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]],
) -> bool:
    """Write `inserts` (each table's rows; the inbox claim among them) and, with `header`,
    the header's UPDATE if the invoice is still at `loaded_version`, in one statement;
    False, writing nothing, if it was not. ClaimedMeanwhile if the claim's key was taken in
    between."""
    args: list[Any] = []
    if header is not None:
        args = [
            tenant,
            invoice_id,
            loaded_version,
            *bound_values([(rows.INVOICES, header)], dialect),
        ]
    shape: list[tuple[Table, tuple[str, ...], int]] = []
    for table, table_rows in inserts:
        if table_rows:
            shape.append((table, tuple(table_rows[0]), len(table_rows)))
            args += bound_values([(table, row) for row in table_rows], dialect)
    sql = _write_sql(tuple(header) if header is not None else None, tuple(shape), dialect)
    try:
        updated = await driver.fetchval(sql, *args)
    except asyncpg.UniqueViolationError as exc:
        if exc.table_name == _INBOX.name:
            raise ClaimedMeanwhile from exc
        raise unique_violation_from(exc) or exc from exc
    return bool(updated)


INBOX = _INBOX
OUTBOX = _OUTBOX
