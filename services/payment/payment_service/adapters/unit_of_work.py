"""The payment service's SQL unit of work: the kernel's (one transaction, outbox, inbox,
UniqueViolation) building this service's repositories; payments are per tenant."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.events import CloudEvent
from billing_common.outbox import OutboxRelay, SqlUnitOfWork, inbox_row
from payment_service.adapters import postgres_invoice_events
from payment_service.adapters.payments_repository import SqlPaymentRepository
from payment_service.adapters.webhooks_repository import SqlWebhookRepository
from payment_service.domain.model import PayableInvoice


class SqlPaymentUnitOfWork(SqlUnitOfWork):
    def _open(self) -> None:
        # Repositories are built on first use, and with them the session: an event that
        # goes out as one statement on the asyncpg connection never builds one.
        self._webhooks: SqlWebhookRepository | None = None
        self._repositories: dict[str, SqlPaymentRepository] = {}

    @property
    def webhooks(self) -> SqlWebhookRepository:
        webhooks = self._webhooks
        if webhooks is None:
            webhooks = self._webhooks = SqlWebhookRepository(self.session)
        return webhooks

    async def claim_new_invoice(
        self, consumer: str, event: CloudEvent, tenant: str, invoice: PayableInvoice
    ) -> bool:
        if not self.postgres_dialect or self._session is not None:
            return False  # SQLite, or a transaction already under way: the general path
        async with self.postgres() as driver:
            return await postgres_invoice_events.claim_new_invoice(
                driver, inbox_row(consumer, event), tenant, invoice
            )

    async def commit(self) -> None:
        emitted = self._emitted
        await super().commit()
        if emitted and self._relay is not None:
            # A payment's event is what settles its invoice: let the relay, just woken, start
            # its pass (up to sending the batch read) before this request goes on to answer,
            # rather than after the answer's serialising and logging. It costs the answer
            # the relay's few statements of CPU; the payment service's loop is not a busy one.
            await asyncio.sleep(0)

    def payments(self, tenant: str) -> SqlPaymentRepository:
        """The tenant's repository: every query it makes is filtered by the tenant."""
        repository = self._repositories.get(tenant)
        if repository is None:
            repository = self._repositories[tenant] = SqlPaymentRepository(self.session, tenant)
        return repository


def uow_factory(
    sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay | None
) -> Callable[[], SqlPaymentUnitOfWork]:
    return SqlPaymentUnitOfWork.factory(sessions, relay)
