"""Gapless document numbers in SQL: per (tenant, series) for invoices without a seller, per
(tenant, seller, document type, series) for a seller's documents."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel.ext.asyncio.session import AsyncSession

from invoice_service.adapters.orm import InvoiceDocumentCounterRow, InvoiceNumberSeriesRow
from invoice_service.domain.sellers import DocumentType

_TENANT_SERIES: Table = InvoiceNumberSeriesRow.__table__  # type: ignore[attr-defined]
_SELLER_SERIES: Table = InvoiceDocumentCounterRow.__table__  # type: ignore[attr-defined]


class SqlNumberSeries:
    """Gapless numbers: one counter row per key, taken with a single atomic upsert
    (`INSERT … ON CONFLICT DO UPDATE SET last_number = last_number + 1 RETURNING`) in the
    finalizing transaction. On PostgreSQL the upsert row-locks the counter until commit, so
    concurrent finalizations queue and get consecutive numbers; a rollback undoes the
    increment, so a failed finalization leaves no gap."""

    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self._session = session
        self._tenant = tenant

    async def next_sequence(
        self,
        series: str,
        *,
        seller_id: str | None = None,
        document_type: DocumentType = DocumentType.INVOICE,
    ) -> int:
        key: dict[str, Any] = {"tenant_id": self._tenant, "series": series}
        table = _TENANT_SERIES
        if seller_id is not None:
            table = _SELLER_SERIES
            key |= {"seller_id": seller_id, "document_type": document_type.value}
        elif document_type is not DocumentType.INVOICE:
            raise ValueError("only invoices are numbered without a seller")
        dialect = self._session.bind.dialect.name  # type: ignore[union-attr]
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        statement = (
            insert(table)
            .values(**key, last_number=1)
            .on_conflict_do_update(
                index_elements=[table.c[name] for name in key],
                set_={"last_number": table.c.last_number + 1},
            )
            .returning(table.c.last_number)
        )
        result = await self._session.exec(statement)
        return int(result.scalar_one())
