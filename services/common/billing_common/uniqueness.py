"""The one signal that a write lost to a unique constraint: "already taken".

A unit of work raises `UniqueViolation` when a flush or commit breaks a unique constraint or
primary key (an idempotency key used concurrently, a duplicate rule key or coupon code, an
inbox record claimed twice), on SQLite and PostgreSQL alike. Use cases catch this exception,
never a SQLAlchemy or driver type. Pure Python: the service layer may import it.
"""

from __future__ import annotations

import re

# PostgreSQL's SQLSTATE for unique_violation (primary keys report it too).
UNIQUE_VIOLATION_SQLSTATE = "23505"
# sqlite3's extended result codes for a unique index or a primary key.
_SQLITE_UNIQUE_CODES = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})
_SQLITE_MESSAGE = re.compile(r"^UNIQUE constraint failed: (?P<columns>.+)$")
# asyncpg's detail: "Key (tenant_id, code)=(acme, SAVE10) already exists."
_POSTGRES_DETAIL = re.compile(r"^Key \((?P<columns>.+?)\)=\(")


class UniqueViolation(Exception):
    """The write collided with a row that holds the same unique value; the transaction is
    rolled back. `table` and `columns` name the constraint on both databases; `constraint` is
    its name where the database reports one (PostgreSQL), else None."""

    def __init__(
        self,
        table: str | None = None,
        columns: tuple[str, ...] = (),
        constraint: str | None = None,
    ) -> None:
        self.table = table
        self.columns = columns
        self.constraint = constraint
        what = constraint or f"{table or '?'}({', '.join(columns)})"
        super().__init__(f"unique constraint {what} violated")


def unique_violation_from(error: BaseException) -> UniqueViolation | None:
    """The violation a database driver's error reports, or None if it reports another one.

    Reads the error (and its causes: SQLAlchemy and asyncpg wrap one another) by attribute,
    so that this module imports no driver."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _from_sqlite(current) or _from_postgres(current)
        if found is not None:
            return found
        current = current.__cause__ or getattr(current, "orig", None)
    return None


def _from_sqlite(error: BaseException) -> UniqueViolation | None:
    code = getattr(error, "sqlite_errorname", None)
    if not isinstance(code, str):
        return None
    if code not in _SQLITE_UNIQUE_CODES:
        return None
    match = _SQLITE_MESSAGE.match(str(error))
    if match is None:
        return UniqueViolation()
    # "UNIQUE constraint failed: invoices.tenant_id, invoices.idempotency_key"
    qualified = [part.strip() for part in match["columns"].split(",")]
    table = qualified[0].split(".", 1)[0] if "." in qualified[0] else None
    return UniqueViolation(
        table=table, columns=tuple(part.rsplit(".", 1)[-1] for part in qualified)
    )


def _from_postgres(error: BaseException) -> UniqueViolation | None:
    if getattr(error, "sqlstate", None) != UNIQUE_VIOLATION_SQLSTATE:
        return None
    # SQLAlchemy's adapter keeps the SQLSTATE and detail; asyncpg's own error, its cause,
    # also has the constraint and table: take what the most specific one offers.
    driver = error.__cause__ if error.__cause__ is not None else error
    detail = getattr(error, "detail", None) or getattr(driver, "detail", None)
    match = _POSTGRES_DETAIL.match(detail) if isinstance(detail, str) else None
    columns = tuple(part.strip() for part in match["columns"].split(",")) if match else ()
    table = getattr(driver, "table_name", None)
    constraint = getattr(driver, "constraint_name", None)
    return UniqueViolation(
        table=table if isinstance(table, str) else None,
        columns=columns,
        constraint=constraint if isinstance(constraint, str) else None,
    )
