"""Repository and use-case tests against real databases: every test runs on SQLite and on
the local PostgreSQL (the kernel's `database_url` fixture)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlmodel import select

from billing_common.adapters.sql_state import SqlKeyValueStore
from billing_common.event_schemas import TAX_CALCULATED
from billing_common.money import Money
from billing_common.outbox import OutboxMessage
from tax_service.adapters.orm import TaxCalculationRow
from tax_service.domain.errors import DuplicateRuleKey, UnknownCategory
from tax_service.domain.model import (
    CalculationRequest,
    Customer,
    Jurisdiction,
    LineInput,
    PriceMode,
    TaxRounding,
    TaxStatus,
)
from tax_service.samples import SAMPLE_RULES, SAMPLE_TENANT
from tax_service.service_layer import calculations, rules
from tax_service.service_layer.ports import CalculationQuery, RuleQuery

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def stamped(made: Any, when: datetime = NOW) -> Any:
    return replace(made, created_at=when, updated_at=when)


def calc_request(
    *, country: str = "DE", region: str | None = None, reference: str | None = "inv_1", **kw: Any
) -> CalculationRequest:
    currency = kw.pop("currency", "EUR")
    return CalculationRequest(
        currency=currency,
        jurisdiction=Jurisdiction(country, region),
        customer=kw.pop("customer", Customer("c-1")),
        price_mode=kw.pop("price_mode", PriceMode.EXCLUSIVE),
        date=kw.pop("on", date(2026, 11, 24)),
        reference=reference,
        lines=kw.pop(
            "lines",
            (
                LineInput("1", Money.of("100.00", currency), Decimal(2), "standard", "Widget"),
                LineInput("2", Money.of("9.99", currency), Decimal("1.5"), "food"),
            ),
        ),
    )


# --- rules ------------------------------------------------------------------------------


async def test_rule_round_trip_and_tenant_scope(db: Any, make_rule: Any) -> None:
    made = stamped(make_rule(rule_id="r-1", key="de-std", rate="0.09975", region="BY"))
    async with db.uow("acme") as uow:
        await uow.rules.add(made)
        await uow.commit()
    async with db.uow("acme") as uow:
        stored = await uow.rules.get("r-1")
        assert stored == made
        assert stored.rate == Decimal("0.09975")
        assert stored.created_at == NOW
        assert await uow.rules.get_by_key("de-std") == made
    async with db.uow("other") as uow:
        assert await uow.rules.get("r-1") is None
        assert await uow.rules.get_by_key("de-std") is None
        assert not await uow.rules.update(replace(made, name="hijacked"))
        assert not await uow.rules.delete("r-1")
        assert not await uow.rules.delete_by_key("de-std")
        await uow.commit()
    async with db.uow("acme") as uow:
        assert (await uow.rules.get("r-1")).name == made.name


async def test_keys_are_unique_per_tenant_only(db: Any, make_rule: Any) -> None:
    async with db.uow("acme") as uow:
        await uow.rules.add(stamped(make_rule(rule_id="a", key="k")))
        await uow.rules.add(stamped(make_rule(rule_id="b")))  # no key: never collides
        await uow.rules.add(stamped(make_rule(rule_id="c")))
        await uow.commit()
    async with db.uow("acme") as uow:
        with pytest.raises(DuplicateRuleKey):
            await uow.rules.add(stamped(make_rule(rule_id="d", key="k")))
    async with db.uow("globex") as uow:
        await uow.rules.add(stamped(make_rule(rule_id="e", key="k")))
        await uow.commit()


async def test_update_and_delete(db: Any, make_rule: Any) -> None:
    made = stamped(make_rule(rule_id="r", key="k"))
    async with db.uow() as uow:
        await uow.rules.add(made)
        await uow.commit()
    later = NOW + timedelta(hours=1)
    changed = replace(made, rate=Decimal("0.2"), valid_to=date(2030, 1, 1), updated_at=later)
    async with db.uow() as uow:
        assert await uow.rules.update(changed)
        await uow.commit()
    async with db.uow() as uow:
        stored = await uow.rules.get("r")
        assert (stored.rate, stored.valid_to, stored.updated_at, stored.created_at) == (
            Decimal("0.2"),
            date(2030, 1, 1),
            later,
            NOW,
        )
        assert await uow.rules.delete_by_key("k")
        await uow.commit()
    async with db.uow() as uow:
        assert await uow.rules.get("r") is None


async def test_search_filters_orders_and_pages(db: Any, make_rule: Any) -> None:
    made_rules = [
        make_rule("DE", "standard", rule_id="1"),
        make_rule("DE", "food", "0.07", rule_id="2"),
        make_rule("DE", "standard", region="BY", rule_id="3", valid_to=date(2021, 1, 1)),
        make_rule("FR", "food", "0.055", rule_id="5", valid_from=None, valid_to=date(2026, 1, 1)),
        make_rule("FR", "standard", "0.2", rule_id="4"),
    ]
    async with db.uow() as uow:
        for made in made_rules:
            await uow.rules.add(stamped(made))
        await uow.commit()
    async with db.uow() as uow:
        items, total = await uow.rules.search(RuleQuery(country="DE"), limit=2, offset=0)
        assert total == 3
        # country-wide first, then by category
        assert [r.id for r in items] == ["2", "1"]
        items, _ = await uow.rules.search(RuleQuery(country="DE"), limit=2, offset=2)
        assert [r.id for r in items] == ["3"]
        items, total = await uow.rules.search(
            RuleQuery(valid_on=date(2026, 1, 1), category="standard"), limit=10, offset=0
        )
        assert ({r.id for r in items}, total) == ({"1", "4"}, 2)
        items, _ = await uow.rules.search(RuleQuery(valid_on=date(1999, 1, 1)), limit=10, offset=0)
        assert [r.id for r in items] == ["5"]  # no valid_from: valid always, until 2026
        items, _ = await uow.rules.search(RuleQuery(valid_on=date(2026, 1, 1)), limit=10, offset=0)
        assert "5" not in {r.id for r in items}  # valid_to is exclusive
        items, _ = await uow.rules.search(RuleQuery(region="BY"), limit=10, offset=0)
        assert [r.id for r in items] == ["3"]
    async with db.uow("other") as uow:
        assert await uow.rules.search(RuleQuery(), limit=10, offset=0) == ([], 0)


async def test_for_jurisdiction_loads_country_wide_and_own_region_rules(
    db: Any, make_rule: Any
) -> None:
    async with db.uow() as uow:
        for made in [
            make_rule("CA", rule_id="gst"),
            make_rule("CA", region="QC", rule_id="qst"),
            make_rule("CA", region="ON", rule_id="hst"),
            make_rule("CA", rule_id="old", valid_from=date(2000, 1, 1), valid_to=date(2008, 1, 1)),
            make_rule("US", region="QC", rule_id="other-country"),
        ]:
            await uow.rules.add(stamped(made))
        await uow.commit()
    async with db.uow() as uow:
        found = await uow.rules.for_jurisdiction(Jurisdiction("CA", "QC"), date(2026, 1, 1))
        assert {r.id for r in found} == {"gst", "qst"}
        found = await uow.rules.for_jurisdiction(Jurisdiction("CA"), date(2007, 12, 31))
        assert {r.id for r in found} == {"old"}  # gst starts in 2020
    async with db.uow("other") as uow:
        assert await uow.rules.for_jurisdiction(Jurisdiction("CA", "QC"), date(2026, 1, 1)) == []


async def test_concurrent_upserts_of_one_new_key_create_one_rule(db: Any, make_rule: Any) -> None:
    definitions = [
        make_rule(rule_id=f"id-{n}", rate=rate) for n, rate in enumerate(["0.19", "0.2"])
    ]
    results = await asyncio.gather(
        *(
            rules.upsert_rule_by_key("acme", "shared", definition, db.deps(NOW))
            for definition in definitions
        )
    )
    assert sorted(r.created for r in results) == [False, True]
    async with db.uow() as uow:
        items, total = await uow.rules.search(RuleQuery(key="shared"), limit=10, offset=0)
    assert total == 1
    assert items[0].id in {"id-0", "id-1"}


async def test_upsert_is_idempotent(db: Any, make_rule: Any) -> None:
    first = await rules.upsert_rule_by_key("acme", "k", make_rule(rule_id="a"), db.deps(NOW))
    later = NOW + timedelta(minutes=5)
    again = await rules.upsert_rule_by_key("acme", "k", make_rule(rule_id="b"), db.deps(later))
    assert (first.created, again.created, again.changed) == (True, False, False)
    assert again.rule == first.rule
    assert again.rule.updated_at == NOW
    changed = await rules.upsert_rule_by_key(
        "acme", "k", make_rule(rule_id="c", rate="0.2"), db.deps(later)
    )
    assert (changed.created, changed.changed) == (False, True)
    assert (changed.rule.id, changed.rule.rate, changed.rule.updated_at) == (
        "a",
        Decimal("0.2"),
        later,
    )
    assert changed.rule.created_at == NOW


# --- calculations -----------------------------------------------------------------------


async def _seed_de(db: Any, make_rule: Any, tenant: str = "acme") -> None:
    async with db.uow(tenant) as uow:
        await uow.rules.add(stamped(make_rule(rule_id=f"{tenant}-std")))
        await uow.rules.add(
            stamped(make_rule(category="food", rate="0.07", rule_id=f"{tenant}-food"))
        )
        await uow.commit()


async def test_calculation_is_stored_with_its_event_in_one_transaction(
    db: Any, make_rule: Any
) -> None:
    await _seed_de(db, make_rule)
    calc = await calculations.calculate("acme", calc_request(), db.deps(NOW))
    assert (calc.total_net.amount, calc.total_tax.amount, calc.total_gross.amount) == (
        Decimal("214.99"),
        Decimal("39.05"),  # 38.00 + 14.99 x 7 % = 1.0493 -> 1.05
        Decimal("254.04"),
    )
    async with db.uow() as uow:
        assert await uow.calculations.get(calc.id) == calc
        [message] = (await uow.session.exec(select(OutboxMessage))).all()
        assert (message.event_type, message.aggregate) == (
            TAX_CALCULATED,
            f"calculation:{calc.id}",
        )
        event = json.loads(message.payload)
    assert (event["subject"], event["tenant"], event["source"]) == (calc.id, "acme", "/billing/tax")
    assert event["data"] == {
        "calculation_id": calc.id,
        "currency": "EUR",
        "price_mode": "exclusive",
        "total_net": "214.99",
        "total_tax": "39.05",
        "total_gross": "254.04",
        "line_count": 2,
        "customer_id": "c-1",
        "reference": "inv_1",
    }


async def test_failed_calculation_leaves_no_record_and_no_event(db: Any, make_rule: Any) -> None:
    await _seed_de(db, make_rule)
    bad = calc_request(lines=(LineInput("1", Money.of("1", "EUR"), Decimal(1), "not-a-category"),))
    with pytest.raises(UnknownCategory):
        await calculations.calculate("acme", bad, db.deps(NOW))
    async with db.uow() as uow:
        assert (await uow.session.exec(select(TaxCalculationRow))).all() == []
        assert (await uow.session.exec(select(OutboxMessage))).all() == []


async def test_calculation_round_trip_keeps_every_detail(db: Any, make_rule: Any) -> None:
    async with db.uow() as uow:
        await uow.rules.add(stamped(make_rule("CA", rate="0.05", rule_id="gst", priority=2)))
        await uow.rules.add(
            stamped(
                make_rule("CA", region="QC", rate="0.095", rule_id="qst", compound=True, priority=1)
            )
        )
        await uow.commit()
    request = calc_request(
        country="CA",
        region="QC",
        currency="CAD",
        price_mode=PriceMode.INCLUSIVE,
        customer=Customer("c-9", TaxStatus.STANDARD, "QC-1"),
        reference=None,
        lines=(LineInput("x", Money.of("114.98", "CAD"), Decimal("1.000"), "standard", "Gadget"),),
    )
    calc = await calculations.calculate("acme", request, db.deps(NOW))
    async with db.uow() as uow:
        stored = await uow.calculations.get(calc.id)
    assert stored == calc
    [result] = stored.lines
    assert [(t.rule_id, str(t.amount.amount), t.compound) for t in result.taxes] == [
        ("gst", "5.00", False),
        ("qst", "9.98", True),
    ]
    assert str(result.line.quantity) == "1.000"
    # A rule edited later does not change the history.
    async with db.uow() as uow:
        await uow.rules.update(stamped(make_rule("CA", rate="0.5", rule_id="gst", name="changed")))
        await uow.commit()
    async with db.uow() as uow:
        assert await uow.calculations.get(calc.id) == calc
    async with db.uow("other") as uow:
        assert await uow.calculations.get(calc.id) is None


async def test_the_rounding_is_kept_and_older_calculations_read_back_per_line(
    db: Any, make_rule: Any
) -> None:
    await _seed_de(db, make_rule)
    per_line = await calculations.calculate(
        "acme", replace(calc_request(), rounding=TaxRounding.PER_LINE), db.deps(NOW)
    )
    default = await calculations.calculate("acme", calc_request(), db.deps(NOW))
    async with db.uow() as uow:
        assert (await uow.calculations.get(per_line.id)) == per_line
        stored = await uow.calculations.get(default.id)
        assert stored is not None and stored.request.rounding is TaxRounding.PER_BREAKDOWN
        # A row written before migration 0004 has no rounding: it was rounded per line.
        row = await uow.session.get(TaxCalculationRow, default.id)
        assert row is not None and row.rounding == "per_breakdown"
        row.rounding = None
        uow.session.add(row)
        await uow.commit()
    async with db.uow() as uow:
        older = await uow.calculations.get(default.id)
        assert older is not None and older.request.rounding is TaxRounding.PER_LINE


async def test_history_is_newest_first_with_keyset_pages_and_filters(
    db: Any, make_rule: Any
) -> None:
    await _seed_de(db, make_rule)
    await _seed_de(db, make_rule, tenant="other")
    made = []
    for n in range(5):
        reference = "even" if n % 2 == 0 else "odd"
        made.append(
            await calculations.calculate(
                "acme", calc_request(reference=reference), db.deps(NOW + timedelta(seconds=n))
            )
        )
    # Two at the very same instant: the id breaks the tie, and no page loses either.
    twins = [
        await calculations.calculate(
            "acme", calc_request(reference="twin"), db.deps(NOW + timedelta(seconds=9))
        )
        for _ in range(2)
    ]
    await calculations.calculate("other", calc_request(), db.deps(NOW))
    expected = sorted(twins, key=lambda c: c.id, reverse=True) + made[::-1]

    seen, after = [], None
    while True:
        page = await calculations.list_calculations("acme", db.deps(NOW), limit=3, after=after)
        seen.extend(page)
        if len(page) < 3:
            break
        after = (page[-1].created_at, page[-1].id)
    assert [c.id for c in seen] == [c.id for c in expected]

    evens = await calculations.list_calculations(
        "acme", db.deps(NOW), limit=10, query=CalculationQuery(reference="even")
    )
    assert [c.id for c in evens] == [made[4].id, made[2].id, made[0].id]
    by_customer = await calculations.list_calculations(
        "acme", db.deps(NOW), limit=10, query=CalculationQuery(customer_id="nobody")
    )
    assert by_customer == []


# --- sample data ------------------------------------------------------------------------


async def test_sample_loading_is_safe_from_two_replicas_and_runs_once(db: Any) -> None:
    state = SqlKeyValueStore(db.engine)

    async def load() -> int:
        return await rules.ensure_samples(
            SAMPLE_TENANT, SAMPLE_RULES, db.deps(NOW), state=state, marker="samples"
        )

    assert sum(await asyncio.gather(load(), load())) == len(SAMPLE_RULES)
    async with db.uow(SAMPLE_TENANT) as uow:
        _, total = await uow.rules.search(RuleQuery(), limit=1, offset=0)
        assert total == len(SAMPLE_RULES)
        await uow.rules.delete_by_key(SAMPLE_RULES[0].key)
        await uow.commit()
    assert await load() == 0  # the marker is set: a deleted sample stays deleted
