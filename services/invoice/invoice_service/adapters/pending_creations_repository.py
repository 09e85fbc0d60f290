"""SQL record of invoice creations in progress that redeemed a discount."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from invoice_service.adapters import postgres_writes
from invoice_service.adapters.orm import PendingCreationRow
from invoice_service.service_layer.ports import PendingCreation

_PENDING: Table = PendingCreationRow.__table__  # type: ignore[attr-defined]


def pending_row(tenant: str, pending: PendingCreation) -> dict[str, Any]:
    """The columns `begin` writes (but `releasing`), for its upsert."""
    return {
        "tenant_id": tenant,
        "invoice_id": pending.invoice_id,
        "redemption_key": pending.redemption_key,
        "started_at": pending.started_at,
    }


def _pending(row: PendingCreationRow) -> PendingCreation:
    return PendingCreation(
        tenant_id=row.tenant_id,
        invoice_id=row.invoice_id,
        redemption_key=row.redemption_key,
        started_at=row.started_at,
        releasing=row.releasing,
    )


@functools.cache
def _sqlite_begin_statement() -> Any:
    """The upsert of `begin` on SQLite, built once (building `excluded` is costly); on
    PostgreSQL it is postgres_writes.begin_pending, prepared on the asyncpg connection."""
    statement = sqlite_insert(_PENDING)
    return statement.on_conflict_do_update(
        index_elements=[_PENDING.c.tenant_id, _PENDING.c.invoice_id],
        set_={
            "redemption_key": statement.excluded.redemption_key,
            "started_at": statement.excluded.started_at,
            "releasing": False,
        },
        where=_PENDING.c.releasing.is_(False),
    ).returning(_PENDING.c.invoice_id)


class SqlPendingCreations:
    def __init__(
        self,
        session: AsyncSession,
        tenant: str,
        drivers: postgres_writes.Drivers | None = None,
        *,
        dialect: Dialect | None = None,
    ) -> None:
        self._session = session
        self._drivers = drivers or postgres_writes.session_drivers(session)
        self._tenant = tenant
        # The session's dialect, if known without opening the session (the unit of work's).
        self._dialect = dialect

    async def get(self, invoice_id: str, *, for_update: bool = False) -> PendingCreation | None:
        query = select(PendingCreationRow).where(
            PendingCreationRow.tenant_id == self._tenant,
            PendingCreationRow.invoice_id == invoice_id,
        )
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        row = (await self._session.exec(query)).first()
        return _pending(row) if row is not None else None

    async def begin(self, pending: PendingCreation) -> bool:
        """One upsert: the record is written (a retry after a crash takes an earlier one
        over) unless an earlier attempt's record is being released; then False and nothing
        changes. On PostgreSQL the conflict row-locks the record until commit, as the
        `get(for_update=True)` before a `put` did."""
        row = pending_row(self._tenant, pending)
        async with self._drivers() as driver:
            if driver is not None:  # the same upsert, prepared, on the asyncpg connection
                dialect = self._dialect or self._session.bind.dialect  # type: ignore[union-attr]
                return await postgres_writes.begin_pending(driver, dialect, row)
        result = await (await self._session.connection()).execute(
            _sqlite_begin_statement(), {**row, "releasing": False}
        )
        return result.first() is not None

    async def put(self, pending: PendingCreation) -> None:
        row = await self._session.get(PendingCreationRow, (self._tenant, pending.invoice_id))
        if row is None:
            row = PendingCreationRow(
                tenant_id=self._tenant,
                invoice_id=pending.invoice_id,
                redemption_key=pending.redemption_key,
                started_at=pending.started_at,
            )
        row.redemption_key = pending.redemption_key
        row.started_at = pending.started_at
        row.releasing = pending.releasing
        self._session.add(row)
        await self._session.flush()

    async def remove(self, invoice_id: str, *, unless_releasing: bool = False) -> bool:
        statement = delete(PendingCreationRow).where(
            col(PendingCreationRow.tenant_id) == self._tenant,
            col(PendingCreationRow.invoice_id) == invoice_id,
        )
        if unless_releasing:
            statement = statement.where(col(PendingCreationRow.releasing).is_(False))
        result = await self._session.exec(statement)
        return bool(result.rowcount == 1)


class SqlAbandonedCreations:
    """Across tenants: the sweeper looks at every tenant's creations left behind."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def older_than(self, moment: datetime, limit: int) -> list[PendingCreation]:
        async with self._sessions() as session:
            rows = (
                await session.exec(
                    select(PendingCreationRow)
                    .where(col(PendingCreationRow.started_at) < moment)
                    .order_by(col(PendingCreationRow.started_at))
                    .limit(limit)
                )
            ).all()
        return [_pending(row) for row in rows]
