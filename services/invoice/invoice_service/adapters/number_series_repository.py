"""Gapless invoice numbers per (tenant, series), in SQL."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel.ext.asyncio.session import AsyncSession

from invoice_service.adapters.orm import InvoiceNumberSeriesRow


class SqlNumberSeries:
    """Gapless numbers: one counter row per (tenant, series), taken with a single atomic
    upsert (`INSERT … ON CONFLICT DO UPDATE SET last_number = last_number + 1 RETURNING`) in
    the finalizing transaction. On PostgreSQL the upsert row-locks the counter until commit,
    so concurrent finalizations queue and get consecutive numbers; a rollback undoes the
    increment, so a failed finalization leaves no gap."""

    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self._session = session
        self._tenant = tenant

    async def next_sequence(self, series: str) -> int:
        dialect = self._session.bind.dialect.name  # type: ignore[union-attr]
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        table = InvoiceNumberSeriesRow.__table__  # type: ignore[attr-defined]
        statement = (
            insert(table)
            .values(tenant_id=self._tenant, series=series, last_number=1)
            .on_conflict_do_update(
                index_elements=[table.c.tenant_id, table.c.series],
                set_={"last_number": table.c.last_number + 1},
            )
            .returning(table.c.last_number)
        )
        result = await self._session.exec(statement)
        return int(result.scalar_one())
