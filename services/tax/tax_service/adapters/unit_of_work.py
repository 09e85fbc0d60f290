"""The tax service's SQL unit of work: the kernel's (one transaction, outbox, inbox,
UniqueViolation) building this service's tenant-scoped repositories."""

from __future__ import annotations

from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.db import postgres_driver
from billing_common.events import CloudEvent
from billing_common.outbox import OutboxRelay, TenantUnitOfWork, outbox_row
from tax_service.adapters.calculations_repository import SqlCalculationRepository
from tax_service.adapters.rule_cache import RuleCache
from tax_service.adapters.rules_repository import SqlRuleRepository
from tax_service.service_layer.ports import (
    CalculationRepository,
    RuleRepository,
    UnitOfWorkFactory,
)


class SqlTaxUnitOfWork(TenantUnitOfWork):
    """On PostgreSQL a calculation and its outbox row are written at commit as ONE
    statement on the asyncpg connection: with the rules from the cache (the version read
    is a single autocommit SELECT), a calculation costs two round trips instead of five
    (BEGIN, version, INSERT, outbox INSERT, COMMIT). On SQLite every write goes through
    SQLAlchemy in the session's transaction, as before."""

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
        self._outbox_rows: list[tuple[str, dict[str, Any]]] = []

    def _open(self) -> None:
        self._postgres = self.session.get_bind().dialect.name == "postgresql"
        self._outbox_rows = []
        self.rules = SqlRuleRepository(self.session, self.tenant, self._rule_cache)
        self._calculations = SqlCalculationRepository(
            self.session, self.tenant, defer_inserts=self._postgres
        )
        self.calculations = self._calculations

    def emit(self, event: CloudEvent, *, aggregate: str) -> None:
        if not self._postgres:
            super().emit(event, aggregate=aggregate)
            return
        self._outbox_rows.append(("outbox", outbox_row(event, aggregate=aggregate)))
        self._emitted = True  # the kernel's commit wakes the relay

    async def commit(self) -> None:
        rows = [*self._calculations.take_pending(), *self._outbox_rows]
        self._outbox_rows = []
        if rows:
            driver = await postgres_driver(self.session)
            assert driver is not None, "rows are deferred on PostgreSQL only"
            # Inside the session's transaction if a statement through SQLAlchemy began one
            # (a rules cache miss); then the commit below commits both.
            await driver.insert_all(rows)
        await super().commit()


def uow_factory(
    sessions: async_sessionmaker[AsyncSession],
    relay: OutboxRelay | None,
    rule_cache: RuleCache | None = None,
) -> UnitOfWorkFactory:
    """Units of work per tenant, sharing `rule_cache` (None: no cache)."""
    return partial(SqlTaxUnitOfWork, sessions, relay, rule_cache=rule_cache)
