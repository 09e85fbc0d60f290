"""The tax service's SQL unit of work: the kernel's (one transaction, outbox, inbox,
UniqueViolation) building this service's tenant-scoped repositories."""

from __future__ import annotations

from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.events import CloudEvent
from billing_common.outbox import OutboxRelay, TenantUnitOfWork, outbox_row
from tax_service.adapters.calculations_repository import SqlCalculationRepository
from tax_service.adapters.held_connections import HeldConnections
from tax_service.adapters.rule_cache import RuleCache
from tax_service.adapters.rules_repository import VERSION_GUARD_SQL, SqlRuleRepository
from tax_service.service_layer.ports import (
    CalculationRepository,
    RuleRepository,
    StaleRules,
    UnitOfWorkFactory,
)


class SqlTaxUnitOfWork(TenantUnitOfWork):
    """On PostgreSQL a calculation and its outbox row are written at commit as ONE
    statement on the asyncpg connection. With rules the repository took from the cache
    unconfirmed (`for_jurisdiction(confirmed=False)`), that statement also checks the
    tenant's rules version and writes only if it is still the copy's: a calculation is
    ONE round trip (five before the cache: BEGIN, version, INSERT, outbox INSERT, COMMIT);
    when the version moved, nothing is written and `commit` raises StaleRules. With
    confirmed rules (the version read first) it is two. On SQLite every write goes through
    SQLAlchemy in the session's transaction, and the version is always read."""

    rules: RuleRepository
    calculations: CalculationRepository

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay | None,
        tenant: str,
        rule_cache: RuleCache | None = None,
        held: HeldConnections | None = None,
    ) -> None:
        super().__init__(sessions, relay, tenant)
        self._rule_cache = rule_cache  # this process's, shared by its units of work
        self._held = held  # this process's connections for the one-statement commit
        self._outbox_rows: list[tuple[str, dict[str, Any]]] = []

    def _open(self) -> None:
        self._postgres = self.postgres_dialect
        self._outbox_rows = []
        self._rules = SqlRuleRepository(
            self._session_on_demand,
            self.tenant,
            self._rule_cache,
            version_checked_on_write=self._postgres,
            postgres=self.postgres if self._postgres else None,
        )
        self.rules = self._rules
        self._calculations = SqlCalculationRepository(
            self._session_on_demand, self.tenant, defer_inserts=self._postgres
        )
        self.calculations = self._calculations

    def _session_on_demand(self) -> AsyncSession:
        return self.session

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
            assumed = self._rules.assumed_version
            # In the session's transaction if a statement through SQLAlchemy began one (a
            # rules cache miss), and the commit below commits both; else on a held (or
            # pooled) connection, with no session at all (a calculation on cached rules).
            session = self._session
            in_session = session is not None and session.in_transaction()
            connection = self._held.driver() if self._held is not None and not in_session else None
            async with connection or self.postgres() as driver:
                if assumed is None:
                    await driver.insert_all(rows)
                    current = assumed
                else:
                    current = await driver.insert_all_if(
                        rows, guard=VERSION_GUARD_SQL, guard_args=(self.tenant,), expected=assumed
                    )
            if current != assumed:
                self._rules.forget_assumed()
                self._emitted = False
                raise StaleRules(f"rules version {assumed} is now {current}")
        await super().commit()


def uow_factory(
    sessions: async_sessionmaker[AsyncSession],
    relay: OutboxRelay | None,
    rule_cache: RuleCache | None = None,
    held: HeldConnections | None = None,
) -> UnitOfWorkFactory:
    """Units of work per tenant, sharing `rule_cache` (None: no cache) and `held` (None: a
    pooled connection per commit)."""
    return partial(SqlTaxUnitOfWork, sessions, relay, rule_cache=rule_cache, held=held)
