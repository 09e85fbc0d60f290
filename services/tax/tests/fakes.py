"""In-memory implementations of the tax service's ports (service_layer/ports.py), for use-case
tests that need no database: cosmicpython's FakeRepository and FakeUnitOfWork.

They keep the guarantees the use cases rely on from the SQL unit of work: nothing a unit of
work wrote is visible to another before `commit`, leaving without `commit` discards it, and a
commit that would give a rule a key another transaction committed first raises
DuplicateRuleKey and stores nothing. `TaxStore.before_commit` runs a rival transaction at the
exact moment a commit happens, which is how a lost race on a key is staged. The domain values
are frozen, so the fakes hand them out without copying.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from types import TracebackType
from typing import Self

from billing_common.events import CloudEvent
from tax_service.domain.errors import DuplicateRuleKey
from tax_service.domain.model import Jurisdiction, TaxCalculation, TaxRule
from tax_service.service_layer.ports import CalculationPosition, CalculationQuery, RuleQuery


@dataclass
class TaxStore:
    """What the committed transactions left behind, shared by every unit of work."""

    rules: dict[str, dict[str, TaxRule]] = field(default_factory=dict)  # tenant -> id -> rule
    versions: dict[str, int] = field(default_factory=dict)
    calculations: dict[str, dict[str, TaxCalculation]] = field(default_factory=dict)
    outbox: list[tuple[CloudEvent, str]] = field(default_factory=list)
    commits: int = 0
    # Called once, just before the next commit is checked and applied (then cleared).
    before_commit: Callable[[], Awaitable[None]] | None = None

    def uow(self, tenant: str) -> FakeUnitOfWork:
        """The `UnitOfWorkFactory` of the use cases' dependencies."""
        return FakeUnitOfWork(self, tenant)


def _search_order(rule: TaxRule) -> tuple[object, ...]:
    """SqlRuleRepository.search's order: country, country-wide first, region, category,
    priority, always-valid first, valid_from, id."""
    region = rule.jurisdiction.region
    return (
        rule.jurisdiction.country,
        region is not None,
        region or "",
        rule.category,
        rule.priority,
        rule.valid_from is not None,
        rule.valid_from or date.min,
        rule.id,
    )


def _matches(rule: TaxRule, query: RuleQuery) -> bool:
    return (
        (query.country is None or rule.jurisdiction.country == query.country)
        and (query.region is None or rule.jurisdiction.region == query.region)
        and (query.category is None or rule.category == query.category)
        and (query.key is None or rule.key == query.key)
        and (query.valid_on is None or rule.is_valid_on(query.valid_on))
    )


class FakeRuleRepository:
    def __init__(self, rules: dict[str, TaxRule], version: int) -> None:
        self._rules = rules  # this transaction's view of the tenant's rules
        self._version = version
        self.writes = 0

    def _by_key(self, key: str) -> TaxRule | None:
        return next((r for r in self._rules.values() if r.key == key), None)

    def _wrote(self) -> None:
        self.writes += 1
        self._version += 1

    async def get(self, rule_id: str) -> TaxRule | None:
        return self._rules.get(rule_id)

    async def get_by_key(self, key: str) -> TaxRule | None:
        return self._by_key(key)

    async def add(self, rule: TaxRule) -> None:
        if rule.key is not None and self._by_key(rule.key) is not None:
            raise DuplicateRuleKey(rule.key)
        self._rules[rule.id] = rule
        self._wrote()

    async def update(self, rule: TaxRule) -> bool:
        if rule.id not in self._rules:
            return False
        holder = self._by_key(rule.key) if rule.key is not None else None
        if holder is not None and holder.id != rule.id and rule.key is not None:
            raise DuplicateRuleKey(rule.key)
        self._rules[rule.id] = rule
        self._wrote()
        return True

    async def delete(self, rule_id: str) -> bool:
        if self._rules.pop(rule_id, None) is None:
            return False
        self._wrote()
        return True

    async def delete_by_key(self, key: str) -> bool:
        rule = self._by_key(key)
        return rule is not None and await self.delete(rule.id)

    async def search(
        self, query: RuleQuery, *, limit: int, offset: int
    ) -> tuple[list[TaxRule], int]:
        found = sorted((r for r in self._rules.values() if _matches(r, query)), key=_search_order)
        return found[offset : offset + limit], len(found)

    async def for_jurisdiction(
        self, jurisdiction: Jurisdiction, on: date, *, confirmed: bool = True
    ) -> list[TaxRule]:
        # This transaction's view is always the current one: confirmed or not.
        return [rule for rule in self._rules.values() if rule.applies(jurisdiction, on)]

    async def version(self) -> int:
        return self._version


class FakeCalculationRepository:
    def __init__(self, calculations: dict[str, TaxCalculation]) -> None:
        self._calculations = calculations

    async def add(self, calculation: TaxCalculation) -> None:
        self._calculations[calculation.id] = calculation

    async def get(self, calculation_id: str) -> TaxCalculation | None:
        return self._calculations.get(calculation_id)

    async def discard_for_reference(self, reference: str) -> int:
        doomed = [c.id for c in self._calculations.values() if c.request.reference == reference]
        for calculation_id in doomed:
            del self._calculations[calculation_id]
        return len(doomed)

    async def history(
        self,
        *,
        limit: int,
        after: CalculationPosition | None = None,
        calculation_query: CalculationQuery | None = None,
    ) -> Sequence[TaxCalculation]:
        query = calculation_query or CalculationQuery()
        found = [
            c
            for c in self._calculations.values()
            if (query.reference is None or c.request.reference == query.reference)
            and (query.customer_id is None or c.request.customer.id == query.customer_id)
            and (after is None or (c.created_at, c.id) < after)
        ]
        found.sort(key=lambda c: (c.created_at, c.id), reverse=True)
        return found[:limit]


class FakeUnitOfWork:
    """One tenant's transaction on a `TaxStore`: works on copies, applies them on commit."""

    def __init__(self, store: TaxStore, tenant: str) -> None:
        self._store = store
        self.tenant = tenant
        self.committed = False

    async def __aenter__(self) -> Self:
        store, tenant = self._store, self.tenant
        self._base_rules = dict(store.rules.get(tenant, {}))
        self.rules = FakeRuleRepository(dict(self._base_rules), store.versions.get(tenant, 0))
        self._base_calculations = dict(store.calculations.get(tenant, {}))
        self.calculations = FakeCalculationRepository(dict(self._base_calculations))
        self._outbox: list[tuple[CloudEvent, str]] = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._outbox = []  # what was not committed is gone, as on a rollback

    def emit(self, event: CloudEvent, *, aggregate: str) -> None:
        self._outbox.append((event, aggregate))

    async def commit(self) -> None:
        store, tenant = self._store, self.tenant
        hook, store.before_commit = store.before_commit, None
        if hook is not None:
            await hook()
        mine = self.rules._rules
        committed = dict(store.rules.get(tenant, {}))
        # The rules this transaction added, changed or removed, applied onto what others
        # committed meanwhile; a key someone else took first is the unique violation.
        changed = {i: r for i, r in mine.items() if self._base_rules.get(i) != r}
        removed = set(self._base_rules) - set(mine)
        for rule_id in removed:
            committed.pop(rule_id, None)
        for rule_id, rule in changed.items():
            holder = next(
                (r for r in committed.values() if rule.key is not None and r.key == rule.key),
                None,
            )
            if holder is not None and holder.id != rule_id:
                raise DuplicateRuleKey(str(rule.key))
            committed[rule_id] = rule
        store.rules[tenant] = committed
        if self.rules.writes:
            store.versions[tenant] = store.versions.get(tenant, 0) + self.rules.writes
        calculations = store.calculations.setdefault(tenant, {})
        kept = self.calculations._calculations
        for calculation_id in set(self._base_calculations) - set(kept):
            calculations.pop(calculation_id, None)
        calculations.update({i: c for i, c in kept.items() if i not in self._base_calculations})
        store.outbox.extend(self._outbox)
        store.commits += 1
        self._outbox = []
        self.committed = True
