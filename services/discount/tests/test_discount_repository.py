"""Repositories and use cases on SQLite and on the real PostgreSQL (`database_url`)."""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, text

from billing_common.event_schemas import DISCOUNT_APPLIED
from billing_common.money import Money
from discount_service.adapters.config_cache import ConfigCache
from discount_service.adapters.unit_of_work import DiscountUnitOfWork, uow_factory
from discount_service.domain.errors import (
    CouponNotApplicable,
    CouponNotFound,
    DuplicateCouponCode,
    IdempotencyKeyReused,
    PolicyNotFound,
)
from discount_service.domain.model import (
    AmountOff,
    Coupon,
    DiscountPolicy,
    DiscountRequest,
    PercentOff,
    StackingSettings,
    ThresholdRule,
    ThresholdTier,
    UserTypeRule,
)
from discount_service.service_layer import coupons, policies, redemptions
from discount_service.service_layer.dependencies import Dependencies
from discount_service.service_layer.ports import CouponQuery, IdempotencyKeyTaken, RedemptionQuery
from discount_service.service_layer.samples import ensure_samples

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def make_coupon(code: str = "WELCOME10", **kw) -> Coupon:
    fields = {
        "id": str(uuid.uuid4()),
        "name": f"{code} coupon",
        "benefit": PercentOff(Decimal("0.10")),
        "starts_at": datetime(2026, 1, 1, tzinfo=UTC),
        **kw,
    }
    return Coupon(code=code, **fields)


def make_request(*codes: str, amount: str = "200.00", customer: str = "c-1") -> DiscountRequest:
    return DiscountRequest(
        customer_id=customer,
        amount=Money.of(amount, "EUR"),
        customer_type="premium",
        coupon_codes=codes,
        reference="inv_1",
    )


async def test_coupon_round_trip_keeps_every_field_exactly(db) -> None:
    coupon = make_coupon(
        "SAVE5EUR",
        benefit=AmountOff(Money.of("5.00", "EUR")),
        ends_at=datetime(2027, 1, 1, 9, 30, tzinfo=UTC),
        max_redemptions=7,
        max_redemptions_per_customer=2,
        minimum=Money.of("20.00", "EUR"),
        priority=-3,
        exclusive=True,
        active=False,
    )
    await coupons.create_coupon("acme", coupon, db.deps())
    stored = await coupons.get_coupon("acme", "save5eur", db.deps())
    assert stored == coupon
    assert stored.starts_at.tzinfo is not None


async def test_coupon_codes_are_unique_per_tenant_case_insensitively(db) -> None:
    await coupons.create_coupon("acme", make_coupon("WELCOME10"), db.deps())
    with pytest.raises(DuplicateCouponCode):
        await coupons.create_coupon("acme", make_coupon("welcome10", id="other-id"), db.deps())
    # Another tenant may use the same code.
    await coupons.create_coupon("globex", make_coupon("Welcome10", id="globex-id"), db.deps())
    assert (await coupons.get_coupon("globex", "WELCOME10", db.deps())).id == "globex-id"


async def test_coupons_are_tenant_scoped(db) -> None:
    await coupons.create_coupon("acme", make_coupon("ACME1"), db.deps())
    with pytest.raises(CouponNotFound):
        await coupons.get_coupon("globex", "ACME1", db.deps())
    assert await coupons.list_coupons("globex", CouponQuery(10), db.deps()) == []
    with pytest.raises(CouponNotFound):
        await coupons.delete_coupon("globex", "ACME1", db.deps())


async def test_coupon_list_pages_by_code(db) -> None:
    for code in ["C", "a", "B", "d"]:
        await coupons.create_coupon("acme", make_coupon(code), db.deps())
    first = await coupons.list_coupons("acme", CouponQuery(2), db.deps())
    second = await coupons.list_coupons("acme", CouponQuery(2, after=first[-1].key), db.deps())
    assert [c.code for c in first + second] == ["a", "B", "C", "d"]


async def test_replace_keeps_the_counter_and_delete_removes(db) -> None:
    await coupons.create_coupon("acme", make_coupon("LIMITED", max_redemptions=3), db.deps())
    async with db.uow() as uow:
        coupon = await uow.coupons.get("LIMITED")
        assert await uow.coupons.try_count_redemption(coupon.id)
        await uow.commit()
    replaced = await coupons.replace_coupon(
        "acme", make_coupon("LIMITED", name="Renamed", max_redemptions=5), db.deps()
    )
    assert replaced.name == "Renamed"
    assert replaced.redeemed_count == 1
    await coupons.delete_coupon("acme", "limited", db.deps())
    with pytest.raises(CouponNotFound):
        await coupons.get_coupon("acme", "LIMITED", db.deps())


async def test_conditional_counter_stops_at_the_limit(db) -> None:
    await coupons.create_coupon("acme", make_coupon("TWO", max_redemptions=2), db.deps())
    results = []
    for _ in range(3):
        async with db.uow() as uow:
            coupon = await uow.coupons.get("TWO")
            results.append(await uow.coupons.try_count_redemption(coupon.id))
            await uow.commit()
    assert results == [True, True, False]
    assert (await coupons.get_coupon("acme", "TWO", db.deps())).redeemed_count == 2


async def test_unlimited_coupon_counts_without_limit(db) -> None:
    await coupons.create_coupon("acme", make_coupon("FREE"), db.deps())
    async with db.uow() as uow:
        coupon = await uow.coupons.get("FREE")
        assert all([await uow.coupons.try_count_redemption(coupon.id) for _ in range(5)])
        await uow.commit()
    assert (await coupons.get_coupon("acme", "FREE", db.deps())).redeemed_count == 5


async def test_per_customer_counter_is_created_and_limited(db) -> None:
    await coupons.create_coupon("acme", make_coupon("ONCE"), db.deps())
    coupon = await coupons.get_coupon("acme", "ONCE", db.deps())
    async with db.uow() as uow:
        assert await uow.coupons.try_count_customer_redemption(coupon.id, "c-1", 1)
        assert not await uow.coupons.try_count_customer_redemption(coupon.id, "c-1", 1)
        assert await uow.coupons.try_count_customer_redemption(coupon.id, "c-2", 1)
        assert await uow.coupons.try_count_customer_redemption(coupon.id, "c-2", None)
        await uow.commit()
    async with db.uow() as uow:
        assert await uow.coupons.customer_usage([coupon.id], "c-1") == {coupon.id: 1}
        assert await uow.coupons.customer_usage([coupon.id], "c-2") == {coupon.id: 2}
    async with db.uow("globex") as uow:
        assert await uow.coupons.customer_usage([coupon.id], "c-1") == {}


async def test_coupons_for_a_customer_come_with_that_customers_usage(db) -> None:
    await coupons.create_coupon("acme", make_coupon("ONCE"), db.deps())
    await coupons.create_coupon("acme", make_coupon("FREE"), db.deps())
    await coupons.create_coupon("globex", make_coupon("ONCE"), db.deps())
    once = await coupons.get_coupon("acme", "ONCE", db.deps())
    async with db.uow() as uow:
        assert await uow.coupons.try_count_redemption(once.id)
        assert await uow.coupons.try_count_customer_redemption(once.id, "c-1", None)
        assert await uow.coupons.try_count_customer_redemption(once.id, "c-1", None)
        await uow.commit()
    cache = ConfigCache()
    for _ in range(2):  # cold, then from the configuration cache: the same answer
        async with DiscountUnitOfWork(db.sessions, None, "acme", cache) as uow:
            found = await uow.coupons.for_customer(["once", "FREE", "NOPE", "once"], "c-1")
        assert sorted(found.coupons) == ["FREE", "ONCE"]
        assert found.coupons["ONCE"].id == once.id
        assert found.coupons["ONCE"].redeemed_count == 1  # the live counter
        assert found.usage == {once.id: 2}  # FREE never redeemed by c-1: absent
    async with db.uow() as uow:
        assert (await uow.coupons.for_customer(["ONCE"], "c-2")).usage == {}
        assert (await uow.coupons.for_customer([], "c-1")).coupons == {}
    async with db.uow("globex") as uow:
        found = await uow.coupons.for_customer(["ONCE"], "c-1")
        assert found.coupons["ONCE"].id != once.id
        assert found.usage == {}


async def test_coupons_for_a_customer_are_one_statement_on_postgresql(db) -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("counts the statements asyncpg sends")
    await coupons.create_coupon("acme", make_coupon("ONCE"), db.deps())
    cache = ConfigCache()
    for _ in range(2):  # cold and warm configuration cache alike
        sent: list[str] = []

        def log(record: Any, sent: list[str] = sent) -> None:
            sent.append(record.query)

        async with DiscountUnitOfWork(db.sessions, None, "acme", cache) as uow:
            raw = (await (await uow.session.connection()).get_raw_connection()).driver_connection
            raw.add_query_logger(log)
            try:
                found = await uow.coupons.for_customer(["ONCE"], "c-1")
            finally:
                raw.remove_query_logger(log)
        await asyncio.sleep(0)  # asyncpg calls its query loggers soon, not at once
        # (asyncpg's own type introspection, once per connection, is not ours)
        assert len([sql for sql in sent if "discount_" in sql]) == 1
        assert "ONCE" in found.coupons


async def test_a_redemption_is_four_statements_on_one_raw_connection(db) -> None:
    """PostgreSQL, warm configuration cache: the coupons read (with the version and the
    customer's usage), BEGIN, the redemption with its lines and outbox row (the key's claim)
    and both counters of its coupon, COMMIT; no session, no SQLAlchemy statement."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("counts the statements asyncpg sends")
    await coupons.create_coupon("acme", make_coupon("ONCE"), db.deps())
    deps = Dependencies(uow_factory(db.sessions, None, ConfigCache()))
    request = DiscountRequest("c-1", Money.of("100.00", "EUR"), coupon_codes=("ONCE",))
    await redemptions.redeem("acme", request, "warm-up", deps)
    sent: list[str] = []

    def log(record: Any) -> None:
        sent.append(record.query)

    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(log)

    event.listen(db.engine.sync_engine, "checkout", on_checkout)
    try:
        outcome = await redemptions.redeem("acme", request, "measured", deps)
        await asyncio.sleep(0.05)  # asyncpg calls its query loggers soon, not at once
    finally:
        event.remove(db.engine.sync_engine, "checkout", on_checkout)
    assert outcome.replayed is False
    # (asyncpg's own type introspection, once per connection, is not ours)
    ours = [sql for sql in sent if "pg_catalog" not in sql]
    assert [sql.split()[0] for sql in ours] == ["SELECT", "BEGIN", "WITH", "COMMIT"]
    assert "discount_coupons" in ours[0] and "INTO outbox" in ours[2]
    assert "UPDATE discount_coupons" in ours[2] and "discount_coupon_usage" in ours[2]


async def test_a_unit_of_work_holds_one_connection_hot_or_session(db) -> None:
    """The hot connection goes back to the pool before the session takes one (never two
    at once); after a hot write (its transaction begun) the session is refused."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the hot connection is PostgreSQL's")
    await coupons.create_coupon("acme", make_coupon("ONCE"), db.deps())
    async with db.uow() as uow:
        await uow.coupons.for_customer(["ONCE"], "c-1")  # a hot read, in autocommit
        assert db.engine.pool.checkedout() == 1
        assert await uow.coupons.get("ONCE") is not None  # through the session
        assert db.engine.pool.checkedout() == 1
    async with db.uow() as uow:
        coupon = (await uow.coupons.for_customer(["ONCE"], "c-1")).coupons["ONCE"]
        assert await uow.coupons.try_count_redemption(coupon.id)  # BEGIN, then the UPDATE
        with pytest.raises(RuntimeError):
            uow.session  # noqa: B018 - opening it is what is refused
    assert db.engine.pool.checkedout() == 0
    assert (await coupons.get_coupon("acme", "ONCE", db.deps())).redeemed_count == 0


async def test_policy_upsert_is_idempotent_and_replaces(db) -> None:
    policy = DiscountPolicy(
        key="premium-customers",
        name="Premium 5%",
        rule=UserTypeRule("premium", PercentOff(Decimal("0.05"))),
        starts_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert await policies.put_policy("acme", policy, db.deps()) is True
    assert await policies.put_policy("acme", policy, db.deps()) is False
    assert await policies.list_policies("acme", db.deps()) == [policy]
    threshold = DiscountPolicy(
        key="premium-customers",
        name="Volume",
        rule=ThresholdRule(
            "EUR",
            (
                ThresholdTier(Money.of("500.00", "EUR"), PercentOff(Decimal("0.05"))),
                ThresholdTier(Money.of("1000.00", "EUR"), AmountOff(Money.of("80.00", "EUR"))),
            ),
        ),
        exclusive=True,
        priority=7,
    )
    assert await policies.put_policy("acme", threshold, db.deps()) is False
    assert await policies.get_policy("acme", "premium-customers", db.deps()) == threshold
    with pytest.raises(PolicyNotFound):
        await policies.get_policy("globex", "premium-customers", db.deps())
    await policies.delete_policy("acme", "premium-customers", db.deps())
    with pytest.raises(PolicyNotFound):
        await policies.delete_policy("acme", "premium-customers", db.deps())


async def test_stacking_settings_default_and_round_trip(db) -> None:
    assert await policies.get_stacking_settings("acme", db.deps()) == StackingSettings()
    settings = StackingSettings(
        max_fraction=Decimal("0.5"),
        max_amounts=(Money.of("100.00", "EUR"), Money.of("12000", "JPY")),
    )
    await policies.put_stacking_settings("acme", settings, db.deps())
    stored = await policies.get_stacking_settings("acme", db.deps())
    assert stored.max_fraction == Decimal("0.5")
    assert set(stored.max_amounts) == set(settings.max_amounts)
    assert await policies.get_stacking_settings("globex", db.deps()) == StackingSettings()


async def test_redemption_is_stored_with_lines_event_and_counters(db) -> None:
    await coupons.create_coupon("acme", make_coupon("WELCOME10", max_redemptions=5), db.deps())
    await policies.put_policy(
        "acme",
        DiscountPolicy(
            key="premium",
            name="Premium 5%",
            rule=UserTypeRule("premium", PercentOff(Decimal("0.05"))),
        ),
        db.deps(),
    )
    outcome = await redemptions.redeem("acme", make_request("welcome10"), "k-1", db.deps(NOW))
    assert not outcome.replayed
    stored = await redemptions.get_redemption("acme", outcome.redemption.id, db.deps())
    assert stored == outcome.redemption
    assert [(line.code, str(line.amount.amount)) for line in stored.result.applied] == [
        ("WELCOME10", "20.00"),
        (None, "9.00"),
    ]
    assert (await coupons.get_coupon("acme", "WELCOME10", db.deps())).redeemed_count == 1
    async with db.engine.connect() as conn:
        rows = (await conn.execute(text("SELECT event_type, aggregate, payload FROM outbox"))).all()
    assert [(r[0], r[1]) for r in rows] == [
        (DISCOUNT_APPLIED, f"redemption:{outcome.redemption.id}")
    ]
    payload = json.loads(rows[0][2])
    assert payload["tenant"] == "acme"
    assert payload["data"]["total_discount"] == "29.00"
    assert payload["data"]["applied"][0]["code"] == "WELCOME10"


async def test_same_key_replays_and_a_different_request_conflicts(db) -> None:
    await coupons.create_coupon("acme", make_coupon("WELCOME10"), db.deps())
    first = await redemptions.redeem("acme", make_request("WELCOME10"), "k", db.deps(NOW))
    again = await redemptions.redeem("acme", make_request("welcome10"), "k", db.deps(NOW))
    assert again.replayed
    assert again.redemption == first.redemption
    with pytest.raises(IdempotencyKeyReused):
        await redemptions.redeem(
            "acme", make_request("WELCOME10", amount="201.00"), "k", db.deps(NOW)
        )
    assert (await coupons.get_coupon("acme", "WELCOME10", db.deps())).redeemed_count == 1
    # Keys are per tenant: another tenant's "k" is a new redemption.
    other = await redemptions.redeem("globex", make_request(), "k", db.deps(NOW))
    assert not other.replayed


async def test_idempotency_key_is_unique_in_the_database(db) -> None:
    outcome = await redemptions.redeem("acme", make_request(), "k", db.deps(NOW))
    duplicate = replace(outcome.redemption, id=str(uuid.uuid4()))
    async with db.uow() as uow:
        with pytest.raises(IdempotencyKeyTaken):
            await uow.redemptions.add(duplicate)


async def test_inapplicable_coupon_fails_the_redemption_and_writes_nothing(db) -> None:
    await coupons.create_coupon(
        "acme", make_coupon("OLD", ends_at=datetime(2026, 2, 1, tzinfo=UTC)), db.deps()
    )
    with pytest.raises(CouponNotApplicable) as caught:
        await redemptions.redeem("acme", make_request("OLD"), "k", db.deps(NOW))
    assert caught.value.problem_extensions == {"code": "OLD", "reason": "expired"}
    assert await redemptions.list_redemptions("acme", RedemptionQuery(10), db.deps()) == []
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar() == 0


async def test_history_is_newest_first_paginated_and_tenant_scoped(db) -> None:
    ids = []
    for i in range(5):
        outcome = await redemptions.redeem(
            "acme",
            make_request(customer=f"c-{i % 2}"),
            f"k-{i}",
            db.deps(NOW + timedelta(minutes=i)),
        )
        ids.append(outcome.redemption.id)
    page1 = await redemptions.list_redemptions("acme", RedemptionQuery(2), db.deps())
    last = page1[-1]
    page2 = await redemptions.list_redemptions(
        "acme", RedemptionQuery(2, before=(last.created_at, last.id)), db.deps()
    )
    last = page2[-1]
    page3 = await redemptions.list_redemptions(
        "acme", RedemptionQuery(2, before=(last.created_at, last.id)), db.deps()
    )
    assert [r.id for r in page1 + page2 + page3] == ids[::-1]
    only_c1 = await redemptions.list_redemptions(
        "acme", RedemptionQuery(10, customer_id="c-1"), db.deps()
    )
    assert [r.id for r in only_c1] == [ids[3], ids[1]]
    assert await redemptions.list_redemptions("globex", RedemptionQuery(10), db.deps()) == []


async def test_samples_load_once(db) -> None:
    from discount_service import samples

    tenant = samples.SAMPLE_TENANT
    kwargs = {
        "coupons": samples.SAMPLE_COUPONS,
        "policies": samples.SAMPLE_POLICIES,
        "settings": samples.SAMPLE_STACKING,
    }
    assert await ensure_samples(tenant, db.deps(), **kwargs) == 9
    assert await ensure_samples(tenant, db.deps(), **kwargs) == 0
    codes = [c.code for c in await coupons.list_coupons(tenant, CouponQuery(50), db.deps())]
    assert codes == ["LAUNCH3", "SAVE5EUR", "SUMMER2020", "VIP25", "WELCOME10"]
