"""The fast tier: the tax use cases on in-memory fakes of their ports (tests/fakes.py), no
database and no app. Keys stay unique also against a rival committing first, an unchanged
definition writes nothing, a calculation and its event commit together, and the history pages
newest first."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from billing_common.event_schemas import TAX_CALCULATED
from billing_common.money import Money
from billing_common.ports import StateItem
from services.tax.tests.conftest import rule
from services.tax.tests.fakes import TaxStore
from tax_service.domain.errors import DuplicateRuleKey, RuleNotFound, UnknownJurisdiction
from tax_service.domain.model import (
    CalculationRequest,
    Customer,
    Jurisdiction,
    LineInput,
    PriceMode,
)
from tax_service.service_layer import calculations, rules
from tax_service.service_layer.dependencies import Dependencies
from tax_service.service_layer.ports import CalculationQuery, RuleQuery

pytestmark = pytest.mark.unit

TENANT = "acme"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class MemoryState:
    """A KeyValueStore in a dict (the marker of the sample loading)."""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}

    async def get(self, key: str) -> StateItem | None:
        return StateItem(key, self.items[key], "1") if key in self.items else None

    async def set(
        self, key: str, value: Any, *, etag: str | None = None, ttl_seconds: int | None = None
    ) -> str:
        self.items[key] = value
        return "1"

    async def delete(self, key: str, *, etag: str | None = None) -> None:
        self.items.pop(key, None)


@pytest.fixture
def store() -> TaxStore:
    return TaxStore()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def deps(store: TaxStore, clock: Clock) -> Dependencies:
    return Dependencies(uow=store.uow, clock=clock)


def request(reference: str | None = None, customer: str = "c-1") -> CalculationRequest:
    return CalculationRequest(
        currency="EUR",
        jurisdiction=Jurisdiction("DE"),
        customer=Customer(customer),
        price_mode=PriceMode.EXCLUSIVE,
        date=date(2026, 3, 1),
        lines=(LineInput("1", Money.of("100.00", "EUR"), Decimal(2), "standard"),),
        reference=reference,
    )


# -- rules ------------------------------------------------------------------------------------


async def test_create_rule_stamps_it_and_refuses_a_taken_key(
    deps: Dependencies, store: TaxStore
) -> None:
    created = await rules.create_rule(TENANT, rule(key="de-standard"), deps)
    assert created.created_at == created.updated_at == NOW
    assert store.rules[TENANT][created.id] == created
    with pytest.raises(DuplicateRuleKey):
        await rules.create_rule(TENANT, rule(key="de-standard", rule_id="other"), deps)
    assert list(store.rules[TENANT]) == [created.id]
    # Keys are per tenant.
    await rules.create_rule("globex", rule(key="de-standard", rule_id="other"), deps)


async def test_create_rule_loses_the_race_for_its_key_and_stores_nothing(
    deps: Dependencies, store: TaxStore
) -> None:
    async def rival() -> None:
        await rules.create_rule(TENANT, rule(key="de-standard", rule_id="rival"), deps)

    store.before_commit = rival
    with pytest.raises(DuplicateRuleKey):
        await rules.create_rule(TENANT, rule(key="de-standard", rule_id="mine"), deps)
    assert list(store.rules[TENANT]) == ["rival"]


async def test_replace_rule_with_the_same_definition_writes_nothing(
    deps: Dependencies, store: TaxStore, clock: Clock
) -> None:
    created = await rules.create_rule(TENANT, rule(rule_id="r1"), deps)
    commits, version = store.commits, store.versions[TENANT]
    clock.now += timedelta(hours=1)
    assert await rules.replace_rule(TENANT, rule(rule_id="r1"), deps) == created
    assert (store.commits, store.versions[TENANT]) == (commits, version)

    changed = await rules.replace_rule(TENANT, rule(rate="0.07", rule_id="r1"), deps)
    assert changed.rate == Decimal("0.07")
    assert (changed.created_at, changed.updated_at) == (NOW, clock.now)
    assert store.versions[TENANT] == version + 1
    with pytest.raises(RuleNotFound):
        await rules.replace_rule(TENANT, rule(rule_id="missing"), deps)


async def test_upsert_by_key_creates_leaves_alone_and_changes(
    deps: Dependencies, store: TaxStore
) -> None:
    first = await rules.upsert_rule_by_key(TENANT, "de-std", rule(rule_id="r1"), deps)
    assert (first.created, first.changed) == (True, True)
    again = await rules.upsert_rule_by_key(TENANT, "de-std", rule(rule_id="r2"), deps)
    assert (again.created, again.changed, again.rule) == (False, False, first.rule)
    changed = await rules.upsert_rule_by_key(TENANT, "de-std", rule(rate="0.07"), deps)
    assert (changed.created, changed.changed) == (False, True)
    assert changed.rule.id == "r1"  # the existing rule keeps its id
    assert list(store.rules[TENANT].values()) == [changed.rule]


async def test_upsert_that_loses_the_insert_race_runs_again_as_an_update(
    deps: Dependencies, store: TaxStore
) -> None:
    async def rival() -> None:
        await rules.create_rule(TENANT, rule(key="de-std", rule_id="rival"), deps)

    store.before_commit = rival
    result = await rules.upsert_rule_by_key(TENANT, "de-std", rule(rate="0.07"), deps)
    assert (result.created, result.changed) == (False, True)
    assert result.rule.id == "rival"
    assert [r.rate for r in store.rules[TENANT].values()] == [Decimal("0.07")]


async def test_delete_by_id_and_by_key(deps: Dependencies, store: TaxStore) -> None:
    await rules.create_rule(TENANT, rule(rule_id="r1"), deps)
    await rules.create_rule(TENANT, rule(category="reduced", key="k", rule_id="r2"), deps)
    await rules.delete_rule(TENANT, "r1", deps)
    with pytest.raises(RuleNotFound):
        await rules.delete_rule(TENANT, "r1", deps)
    assert await rules.delete_rule_by_key(TENANT, "k", deps) is True
    assert await rules.delete_rule_by_key(TENANT, "k", deps) is False  # idempotent
    assert store.rules[TENANT] == {}


async def test_list_rules_filters_and_pages_in_a_stable_order(deps: Dependencies) -> None:
    for category, region in [("standard", "BY"), ("reduced", None), ("standard", None)]:
        await rules.create_rule(
            TENANT, rule(category=category, region=region, rule_id=f"{category}-{region}"), deps
        )
    await rules.create_rule(TENANT, rule(country="FR", rate="0.20", rule_id="fr"), deps)
    page = await rules.list_rules(TENANT, RuleQuery(country="DE"), deps, limit=2, offset=0)
    assert page.total == 3
    assert [r.id for r in page.items] == ["reduced-None", "standard-None"]
    rest = await rules.list_rules(TENANT, RuleQuery(country="DE"), deps, limit=2, offset=2)
    assert [r.id for r in rest.items] == ["standard-BY"]


async def test_samples_load_once_per_marker_and_survive_a_rival_loader(
    deps: Dependencies, store: TaxStore
) -> None:
    samples = [rule(key="de-std", rule_id="s1"), rule(category="reduced", key="de-red")]
    state = MemoryState()

    async def rival() -> None:
        # Another replica starting at the same moment loads the first sample first.
        await rules.create_rule(TENANT, replace(samples[0], id="rival"), deps)

    store.before_commit = rival
    assert await rules.ensure_samples(TENANT, samples, deps, state=state, marker="m") == 1
    assert sorted(r.key or "" for r in store.rules[TENANT].values()) == ["de-red", "de-std"]
    await rules.delete_rule_by_key(TENANT, "de-red", deps)
    # Once marked, a deleted sample stays deleted.
    assert await rules.ensure_samples(TENANT, samples, deps, state=state, marker="m") == 0
    assert [r.key for r in store.rules[TENANT].values()] == ["de-std"]


# -- calculations -----------------------------------------------------------------------------


async def test_calculate_stores_the_calculation_and_its_event_together(
    deps: Dependencies, store: TaxStore
) -> None:
    await rules.create_rule(TENANT, rule(), deps)
    calculation = await calculations.calculate(TENANT, request(reference="inv-1"), deps)
    assert calculation.total_tax == Money.of("38.00", "EUR")
    assert store.calculations[TENANT] == {calculation.id: calculation}
    [(event, aggregate)] = store.outbox
    assert (event.type, event.subject, aggregate) == (
        TAX_CALCULATED,
        calculation.id,
        f"calculation:{calculation.id}",
    )
    assert event.tenant == TENANT
    assert event.data["total_gross"] == "238.00"
    assert await calculations.get_calculation(TENANT, calculation.id, deps) == calculation


async def test_a_calculation_that_fails_stores_nothing(deps: Dependencies, store: TaxStore) -> None:
    with pytest.raises(UnknownJurisdiction):  # no rule covers DE: never a guessed 0 %
        await calculations.calculate(TENANT, request(), deps)
    assert store.calculations.get(TENANT, {}) == {}
    assert store.outbox == []


async def test_history_pages_newest_first_and_discard_removes_a_reference(
    deps: Dependencies, clock: Clock
) -> None:
    await rules.create_rule(TENANT, rule(), deps)
    made = []
    for n in range(5):
        clock.now = NOW + timedelta(minutes=n // 2)  # pairs share an instant: id decides
        made.append(await calculations.calculate(TENANT, request(reference=f"inv-{n % 2}"), deps))
    newest_first = sorted(made, key=lambda c: (c.created_at, c.id), reverse=True)
    first = await calculations.list_calculations(TENANT, deps, limit=3)
    last = first[-1]
    second = await calculations.list_calculations(
        TENANT, deps, limit=3, after=(last.created_at, last.id)
    )
    assert [*first, *second] == newest_first
    only = await calculations.list_calculations(
        TENANT, deps, limit=10, query=CalculationQuery(reference="inv-1")
    )
    assert {c.request.reference for c in only} == {"inv-1"} and len(only) == 2

    assert await calculations.discard_calculations(TENANT, "inv-1", deps) == 2
    assert await calculations.discard_calculations(TENANT, "inv-1", deps) == 0
    left = await calculations.list_calculations(TENANT, deps, limit=10)
    assert {c.request.reference for c in left} == {"inv-0"}
    assert await calculations.list_calculations("globex", deps, limit=10) == []
    assert uuid.UUID(left[0].id)
