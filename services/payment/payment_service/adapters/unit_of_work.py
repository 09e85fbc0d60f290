"""The payment service's SQL unit of work: the kernel's (one transaction, outbox, inbox,
UniqueViolation) building this service's repositories; payments are per tenant."""

from __future__ import annotations

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
