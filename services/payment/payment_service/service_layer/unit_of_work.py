"""The payment service's unit of work: one transaction, its repositories, outbox and inbox."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from billing_common.outbox import SqlUnitOfWork
from payment_service.adapters.repository import PaymentRepository, WebhookRepository


class ConcurrentWrite(Exception):
    """The commit lost a race on a unique key (idempotency key, webhook event id, inbox):
    someone else did the same thing first. The transaction was rolled back."""


class PaymentUnitOfWork(SqlUnitOfWork):
    webhooks: WebhookRepository

    def _open(self) -> None:
        self.webhooks = WebhookRepository(self.session)
        self._repositories: dict[str, PaymentRepository] = {}

    def payments(self, tenant: str) -> PaymentRepository:
        """The tenant's repository: every query it makes is filtered by the tenant."""
        repository = self._repositories.get(tenant)
        if repository is None:
            repository = self._repositories[tenant] = PaymentRepository(self.session, tenant)
        return repository

    async def commit(self) -> None:
        try:
            await super().commit()
        except IntegrityError as exc:
            await self.session.rollback()
            raise ConcurrentWrite(str(exc.orig)) from exc
