"""The payment service's SQL unit of work: one transaction, its repositories, outbox and inbox."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.outbox import OutboxRelay, SqlUnitOfWork
from payment_service.adapters.payments_repository import SqlPaymentRepository
from payment_service.adapters.webhooks_repository import SqlWebhookRepository
from payment_service.service_layer.ports import ConcurrentWrite


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

    async def commit(self) -> None:
        try:
            await super().commit()
        except IntegrityError as exc:
            await self.session.rollback()
            raise ConcurrentWrite(str(exc.orig)) from exc


def uow_factory(
    sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay | None
) -> Callable[[], SqlPaymentUnitOfWork]:
    def build() -> SqlPaymentUnitOfWork:
        return SqlPaymentUnitOfWork(sessions, relay)

    return build
