"""The payment service's SQL unit of work: the kernel's (one transaction, outbox, inbox,
UniqueViolation) building this service's repositories; payments are per tenant."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.outbox import OutboxRelay, SqlUnitOfWork
from payment_service.adapters.payments_repository import SqlPaymentRepository
from payment_service.adapters.webhooks_repository import SqlWebhookRepository


class SqlPaymentUnitOfWork(SqlUnitOfWork):
    webhooks: SqlWebhookRepository

    def _open(self) -> None:
        self.webhooks = SqlWebhookRepository(self.session)
        self._repositories: dict[str, SqlPaymentRepository] = {}

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
