"""The tenant-scoped SQL repository of tax rules. It is built for one tenant and never reads
or writes another tenant's rows."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import date
from typing import Any

from sqlalchemy import Table, func, or_
from sqlalchemy import select as core_select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import RowMapping
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.db import PostgresDriver
from billing_common.uniqueness import UniqueViolation
from tax_service.adapters.orm import TaxRuleRow, TaxRulesVersionRow
from tax_service.adapters.rule_cache import RuleCache
from tax_service.domain.errors import DuplicateRuleKey
from tax_service.domain.model import Jurisdiction, Supply, TaxRule
from tax_service.service_layer.ports import RuleQuery

_RULES: Table = TaxRuleRow.__table__  # type: ignore[attr-defined]
_RULES_VERSIONS: Table = TaxRulesVersionRow.__table__  # type: ignore[attr-defined]
_VERSION_SQL = "SELECT version FROM tax_rules_versions WHERE tenant_id = $1"
# The same as a scalar that is never NULL (0: never changed), for a guarded INSERT.
VERSION_GUARD_SQL = f"SELECT coalesce(({_VERSION_SQL}), 0)"


def _rule_from_row(row: TaxRuleRow) -> TaxRule:
    return TaxRule(
        id=row.id,
        key=row.key,
        jurisdiction=Jurisdiction(row.country, row.region),
        category=row.category,
        name=row.name,
        rate=row.rate,
        valid_from=row.valid_from,
        valid_to=row.valid_to,
        zero_rated=row.zero_rated,
        compound=row.compound,
        priority=row.priority,
        supply=Supply(row.supply),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _rule_from_mapping(row: RowMapping) -> TaxRule:
    return TaxRule(
        id=row["id"],
        key=row["key"],
        jurisdiction=Jurisdiction(row["country"], row["region"]),
        category=row["category"],
        name=row["name"],
        rate=row["rate"],
        valid_from=row["valid_from"],
        valid_to=row["valid_to"],
        zero_rated=row["zero_rated"],
        compound=row["compound"],
        priority=row["priority"],
        supply=Supply(row["supply"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _covers(rule: TaxRule, jurisdiction: Jurisdiction, on: date) -> bool:
    """The filter of `SqlRuleRepository.for_jurisdiction`, applied to rules in memory."""
    return (
        rule.jurisdiction.country == jurisdiction.country
        and (rule.jurisdiction.region is None or rule.jurisdiction.region == jurisdiction.region)
        and (rule.valid_from is None or rule.valid_from <= on)
        and (rule.valid_to is None or rule.valid_to > on)
    )


def _write_rule(row: TaxRuleRow, rule: TaxRule) -> None:
    row.key = rule.key
    row.country = rule.jurisdiction.country
    row.region = rule.jurisdiction.region
    row.category = rule.category
    row.name = rule.name
    row.rate = rule.rate
    row.zero_rated = rule.zero_rated
    row.compound = rule.compound
    row.priority = rule.priority
    row.supply = rule.supply.value
    row.valid_from = rule.valid_from
    row.valid_to = rule.valid_to
    if rule.updated_at is not None:
        row.updated_at = rule.updated_at


class SqlRuleRepository:
    def __init__(
        self,
        session: Callable[[], AsyncSession],
        tenant: str,
        cache: RuleCache | None = None,
        *,
        version_checked_on_write: bool = False,
        postgres: Callable[[], AbstractAsyncContextManager[PostgresDriver]] | None = None,
    ) -> None:
        """`session`: the unit of work's, opened when first asked for (a calculation on
        cached rules needs none). `version_checked_on_write`: the unit of work checks
        `assumed_version` when it writes (PostgreSQL), so `for_jurisdiction(confirmed=False)`
        may use the cached copy unread; without it every call reads the version.
        `postgres` (PostgreSQL): the unit of work's asyncpg connection, for the version."""
        self._sessions = session
        self._postgres = postgres
        self._tenant = tenant
        self._cache = cache
        self._version_checked_on_write = version_checked_on_write
        self.assumed_version: int | None = None
        """Set when `for_jurisdiction(confirmed=False)` answered from the cached copy of this
        version without reading the current one: the unit of work's commit checks it."""

    @property
    def _session(self) -> AsyncSession:
        return self._sessions()

    async def _bump_version(self) -> None:
        """Move the tenant's rules version on, in the transaction of the change (every
        write to the rules goes through here), so cached copies everywhere go out of date
        exactly when the change commits."""
        dialect = self._session.get_bind().dialect.name
        upsert = postgresql_insert if dialect == "postgresql" else sqlite_insert
        statement = upsert(_RULES_VERSIONS).values(tenant_id=self._tenant, version=1)
        await (await self._session.connection()).execute(
            statement.on_conflict_do_update(
                index_elements=[_RULES_VERSIONS.c.tenant_id],
                set_={"version": _RULES_VERSIONS.c.version + 1},
            )
        )

    async def version(self) -> int:
        """The tenant's rules version (0: its rules were never changed).

        On PostgreSQL one prepared SELECT on the asyncpg connection: before any write it
        runs on its own (no BEGIN), and it sees every change committed before it, as it
        would as the transaction's first statement."""
        if self._postgres is not None:
            async with self._postgres() as driver:
                row = await driver.fetchrow(_VERSION_SQL, self._tenant)
            return int(row[0]) if row is not None else 0
        found = await (await self._session.connection()).execute(
            core_select(_RULES_VERSIONS.c.version).where(
                _RULES_VERSIONS.c.tenant_id == self._tenant
            )
        )
        return int(found.scalar_one_or_none() or 0)

    async def _row(self, rule_id: str) -> TaxRuleRow | None:
        row = await self._session.get(TaxRuleRow, rule_id)
        return row if row is not None and row.tenant_id == self._tenant else None

    async def _row_by_key(self, key: str) -> TaxRuleRow | None:
        result = await self._session.exec(
            select(TaxRuleRow).where(TaxRuleRow.tenant_id == self._tenant, TaxRuleRow.key == key)
        )
        return result.first()

    async def get(self, rule_id: str) -> TaxRule | None:
        row = await self._row(rule_id)
        return _rule_from_row(row) if row is not None else None

    async def get_by_key(self, key: str) -> TaxRule | None:
        row = await self._row_by_key(key)
        return _rule_from_row(row) if row is not None else None

    async def add(self, rule: TaxRule) -> None:
        """Insert a new rule (its created_at/updated_at must be set). Raises
        DuplicateRuleKey if its key is taken, even by a concurrent transaction."""
        if rule.created_at is None or rule.updated_at is None:
            raise ValueError("a stored rule needs created_at and updated_at")
        row = TaxRuleRow(
            id=rule.id,
            tenant_id=self._tenant,
            created_at=rule.created_at,
            updated_at=rule.updated_at,
            country=rule.jurisdiction.country,
            category=rule.category,
            name=rule.name,
            rate=rule.rate,
        )
        _write_rule(row, rule)
        self._session.add(row)
        await self._flush(rule.key)
        await self._bump_version()

    async def update(self, rule: TaxRule) -> bool:
        """Overwrite the stored rule with this id; False if there is none for the tenant."""
        row = await self._row(rule.id)
        if row is None:
            return False
        _write_rule(row, rule)
        self._session.add(row)
        await self._flush(rule.key)
        await self._bump_version()
        return True

    async def _flush(self, key: str | None) -> None:
        try:
            await self._session.flush()
        except UniqueViolation as exc:
            # The only unique constraint besides the primary key (a fresh uuid) is the key.
            raise DuplicateRuleKey(key or "") from exc

    async def delete(self, rule_id: str) -> bool:
        return await self._delete(await self._row(rule_id))

    async def delete_by_key(self, key: str) -> bool:
        return await self._delete(await self._row_by_key(key))

    async def _delete(self, row: TaxRuleRow | None) -> bool:
        if row is None:
            return False
        await self._session.delete(row)
        await self._session.flush()
        await self._bump_version()
        return True

    def _filtered(self, query: RuleQuery) -> list[Any]:
        conditions: list[Any] = [col(TaxRuleRow.tenant_id) == self._tenant]
        if query.country is not None:
            conditions.append(col(TaxRuleRow.country) == query.country)
        if query.region is not None:
            conditions.append(col(TaxRuleRow.region) == query.region)
        if query.category is not None:
            conditions.append(col(TaxRuleRow.category) == query.category)
        if query.key is not None:
            conditions.append(col(TaxRuleRow.key) == query.key)
        if query.valid_on is not None:
            conditions.append(
                or_(
                    col(TaxRuleRow.valid_from).is_(None),
                    col(TaxRuleRow.valid_from) <= query.valid_on,
                )
            )
            conditions.append(
                or_(
                    col(TaxRuleRow.valid_to).is_(None),
                    col(TaxRuleRow.valid_to) > query.valid_on,
                )
            )
        return conditions

    async def search(
        self, query: RuleQuery, *, limit: int, offset: int
    ) -> tuple[list[TaxRule], int]:
        """One page of rules in a stable order, and how many match in all."""
        conditions = self._filtered(query)
        total = (
            await self._session.exec(
                select(func.count()).select_from(TaxRuleRow).where(*conditions)
            )
        ).one()
        rows = (
            await self._session.exec(
                select(TaxRuleRow)
                .where(*conditions)
                .order_by(
                    col(TaxRuleRow.country),
                    col(TaxRuleRow.region).is_not(None),
                    col(TaxRuleRow.region),
                    col(TaxRuleRow.category),
                    col(TaxRuleRow.priority),
                    # NULL (always valid) first on both databases, which sort NULLs differently
                    col(TaxRuleRow.valid_from).is_not(None),
                    col(TaxRuleRow.valid_from),
                    col(TaxRuleRow.id),
                )
                .offset(offset)
                .limit(limit)
            )
        ).all()
        return [_rule_from_row(row) for row in rows], int(total)

    async def for_jurisdiction(
        self, jurisdiction: Jurisdiction, on: date, *, confirmed: bool = True
    ) -> list[TaxRule]:
        """Every rule that covers `jurisdiction` on `on` (country-wide and regional).

        With a cache, the tenant's whole rule set comes from memory while the version read
        in this transaction says it is current, and is loaded (and cached) otherwise. With
        `confirmed=False` and a copy in the cache, the copy is used without reading the
        version (`assumed_version` says which): the caller's write must check it."""
        if self._cache is None:
            regions: list[Any] = [_RULES.c.region.is_(None)]
            if jurisdiction.region is not None:
                regions.append(_RULES.c.region == jurisdiction.region)
            conditions = self._filtered(RuleQuery(country=jurisdiction.country, valid_on=on))
            found = await (await self._session.connection()).execute(
                core_select(_RULES).where(*conditions, or_(*regions))
            )
            return [_rule_from_mapping(row) for row in found.mappings()]
        unread = not confirmed and self._version_checked_on_write
        latest = self._cache.latest(self._tenant) if unread else None
        if latest is not None:
            self.assumed_version, rules = latest
        else:
            self.assumed_version = None
            version = await self.version()
            cached = self._cache.get(self._tenant, version)
            if cached is None:
                found = await (await self._session.connection()).execute(
                    core_select(_RULES).where(_RULES.c.tenant_id == self._tenant)
                )
                cached = tuple(_rule_from_mapping(row) for row in found.mappings())
                self._cache.put(self._tenant, version, cached)
            rules = cached
        return [rule for rule in rules if _covers(rule, jurisdiction, on)]

    def forget_assumed(self) -> None:
        """The assumed version was not the current one: drop that copy from the cache."""
        if self._cache is not None and self.assumed_version is not None:
            self._cache.forget(self._tenant, self.assumed_version)
