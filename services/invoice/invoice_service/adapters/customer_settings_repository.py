"""Per-customer settings (the default e-invoice format) in SQL, tenant-scoped."""

from __future__ import annotations

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from invoice_service.adapters.orm import CustomerSettingsRow
from invoice_service.domain.einvoicing import CustomerEInvoiceSettings, DefaultEInvoiceFormat


class SqlCustomerSettings:
    """Implements service_layer.ports.CustomerSettingsRepository."""

    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self._session = session
        self._tenant = tenant

    async def _row(self, customer_id: str) -> CustomerSettingsRow | None:
        statement = select(CustomerSettingsRow).where(
            CustomerSettingsRow.tenant_id == self._tenant,
            CustomerSettingsRow.customer_id == customer_id,
        )
        return (await self._session.exec(statement)).first()

    async def get(self, customer_id: str) -> CustomerEInvoiceSettings | None:
        row = await self._row(customer_id)
        if row is None:
            return None
        return CustomerEInvoiceSettings(
            customer_id=row.customer_id,
            default_format=DefaultEInvoiceFormat(row.einvoice_format),
            updated_at=row.updated_at,
            updated_by=row.updated_by,
        )

    async def put(self, settings: CustomerEInvoiceSettings) -> None:
        """One upsert statement: two concurrent first settings of a customer both succeed
        (the later wins) instead of one failing on the primary key."""
        table = CustomerSettingsRow.__table__  # type: ignore[attr-defined]
        values = {
            "einvoice_format": settings.default_format.value,
            "updated_at": settings.updated_at,
            "updated_by": settings.updated_by,
        }
        dialect = self._session.bind.dialect.name  # type: ignore[union-attr]
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        await self._session.exec(
            insert(table)
            .values(tenant_id=self._tenant, customer_id=settings.customer_id, **values)
            .on_conflict_do_update(
                index_elements=[table.c.tenant_id, table.c.customer_id], set_=values
            )
        )
