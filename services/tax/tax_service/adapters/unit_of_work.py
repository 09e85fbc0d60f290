"""The tax service's SQL unit of work: the kernel's (one transaction, outbox, inbox,
UniqueViolation) building this service's tenant-scoped repositories."""

from __future__ import annotations

from functools import partial

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.outbox import OutboxRelay, TenantUnitOfWork
from tax_service.adapters.calculations_repository import SqlCalculationRepository
from tax_service.adapters.rule_cache import RuleCache
from tax_service.adapters.rules_repository import SqlRuleRepository
from tax_service.service_layer.ports import (
    CalculationRepository,
    RuleRepository,
    UnitOfWorkFactory,
)


class SqlTaxUnitOfWork(TenantUnitOfWork):
    rules: RuleRepository
    calculations: CalculationRepository

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay | None,
        tenant: str,
        rule_cache: RuleCache | None = None,
    ) -> None:
        super().__init__(sessions, relay, tenant)
        self._rule_cache = rule_cache  # this process's, shared by its units of work

    def _open(self) -> None:
        self.rules = SqlRuleRepository(self.session, self.tenant, self._rule_cache)
        self.calculations = SqlCalculationRepository(self.session, self.tenant)


def uow_factory(
    sessions: async_sessionmaker[AsyncSession],
    relay: OutboxRelay | None,
    rule_cache: RuleCache | None = None,
) -> UnitOfWorkFactory:
    """Units of work per tenant, sharing `rule_cache` (None: no cache)."""
    return partial(SqlTaxUnitOfWork, sessions, relay, rule_cache=rule_cache)
