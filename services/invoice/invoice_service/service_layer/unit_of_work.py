"""The invoice service's unit of work: one transaction, one tenant, its repositories, and
the outbox (events emitted inside commit atomically with the change)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.outbox import OutboxRelay, SqlUnitOfWork
from invoice_service.adapters.pending import SqlPendingCreations
from invoice_service.adapters.repository import (
    SqlInvoiceRepository,
    SqlNumberSeries,
    SqlReceivedEventLog,
)
from invoice_service.service_layer.ports import (
    InvoiceRepository,
    NumberSeries,
    PendingCreations,
    ReceivedEventLog,
)


class InvoiceUnitOfWork(SqlUnitOfWork):
    invoices: InvoiceRepository
    numbers: NumberSeries
    received: ReceivedEventLog
    pending: PendingCreations

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay | None,
        tenant: str,
    ) -> None:
        super().__init__(sessions, relay)
        self.tenant = tenant

    def _open(self) -> None:
        self.invoices = SqlInvoiceRepository(self.session, self.tenant)
        self.numbers = SqlNumberSeries(self.session, self.tenant)
        self.received = SqlReceivedEventLog(self.session, self.tenant)
        self.pending = SqlPendingCreations(self.session, self.tenant)


UnitOfWorkFactory = Callable[[str], InvoiceUnitOfWork]
"""Builds a unit of work for one tenant."""


def uow_factory(
    sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay | None
) -> UnitOfWorkFactory:
    def build(tenant: str) -> InvoiceUnitOfWork:
        return InvoiceUnitOfWork(sessions, relay, tenant)

    return build
