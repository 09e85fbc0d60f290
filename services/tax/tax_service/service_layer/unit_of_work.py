"""The tax service's unit of work: one transaction, tenant-scoped repositories, and the
outbox (events emitted inside it are committed atomically with the change)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.outbox import OutboxRelay, SqlUnitOfWork
from tax_service.adapters.repository import CalculationRepository, RuleCache, RuleRepository


class TaxUnitOfWork(SqlUnitOfWork):
    rules: RuleRepository
    calculations: CalculationRepository

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay | None,
        tenant: str,
        rule_cache: RuleCache | None = None,
    ) -> None:
        super().__init__(sessions, relay)
        self.tenant = tenant
        self._rule_cache = rule_cache

    def _open(self) -> None:
        self.rules = RuleRepository(self.session, self.tenant, self._rule_cache)
        self.calculations = CalculationRepository(self.session, self.tenant)
