"""The invoice service's SQL unit of work: the kernel's (one transaction, outbox, inbox,
UniqueViolation) building this service's tenant-scoped repositories."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.outbox import OutboxRelay, TenantUnitOfWork
from invoice_service.adapters.credit_notes_repository import (
    SqlCreditNoteRepository,
    SqlCustomerBalance,
)
from invoice_service.adapters.customer_settings_repository import SqlCustomerSettings
from invoice_service.adapters.invoices_repository import SqlInvoiceRepository
from invoice_service.adapters.number_series_repository import SqlNumberSeries
from invoice_service.adapters.pending_creations_repository import SqlPendingCreations
from invoice_service.adapters.received_events_repository import SqlReceivedEventLog
from invoice_service.adapters.sellers_repository import SqlSellerRepository
from invoice_service.service_layer.ports import (
    CreditNoteRepository,
    CustomerBalance,
    CustomerSettingsRepository,
    InvoiceRepository,
    NumberSeries,
    PendingCreations,
    ReceivedEventLog,
    SellerRepository,
    UnitOfWorkFactory,
)


class SqlInvoiceUnitOfWork(TenantUnitOfWork):
    """Implements service_layer.ports.UnitOfWork."""

    invoices: InvoiceRepository
    numbers: NumberSeries
    received: ReceivedEventLog
    pending: PendingCreations
    sellers: SellerRepository
    credit_notes: CreditNoteRepository
    balances: CustomerBalance
    customer_settings: CustomerSettingsRepository

    def _open(self) -> None:
        self.invoices = SqlInvoiceRepository(self.session, self.tenant)
        self.numbers = SqlNumberSeries(self.session, self.tenant)
        self.received = SqlReceivedEventLog(self.session, self.tenant)
        self.pending = SqlPendingCreations(self.session, self.tenant)
        self.sellers = SqlSellerRepository(self.session, self.tenant)
        self.credit_notes = SqlCreditNoteRepository(self.session, self.tenant)
        self.balances = SqlCustomerBalance(self.session, self.tenant)
        self.customer_settings = SqlCustomerSettings(self.session, self.tenant)


def uow_factory(
    sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay | None
) -> UnitOfWorkFactory:
    return SqlInvoiceUnitOfWork.per_tenant(sessions, relay)
