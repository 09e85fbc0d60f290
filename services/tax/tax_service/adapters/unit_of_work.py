"""The tax service's SQL unit of work: one transaction, tenant-scoped repositories, and the
outbox (events emitted inside it are committed atomically with the change)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.outbox import OutboxRelay, SqlUnitOfWork
from tax_service.adapters.calculations_repository import SqlCalculationRepository
from tax_service.adapters.rule_cache import RuleCache
from tax_service.adapters.rules_repository import SqlRuleRepository
from tax_service.service_layer.ports import (
    CalculationRepository,
    RuleRepository,
    UnitOfWorkFactory,
)


class SqlTaxUnitOfWork(SqlUnitOfWork):
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
        self.rules = SqlRuleRepository(self.session, self.tenant, self._rule_cache)
        self.calculations = SqlCalculationRepository(self.session, self.tenant)


def uow_factory(
    sessions: async_sessionmaker[AsyncSession],
    relay: OutboxRelay | None,
    rule_cache: RuleCache | None = None,
) -> UnitOfWorkFactory:
    """Units of work per tenant, sharing this process's rule cache (None: no cache)."""

    def build(tenant: str) -> SqlTaxUnitOfWork:
        return SqlTaxUnitOfWork(sessions, relay, tenant, rule_cache)

    return build
