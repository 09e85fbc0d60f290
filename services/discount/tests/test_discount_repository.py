"""Repositories and use cases on SQLite and on the real PostgreSQL (`database_url`)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from billing_common.event_schemas import DISCOUNT_APPLIED
from billing_common.money import Money
from discount_service.adapters.repository import IdempotencyKeyTaken
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
from discount_service.service_layer import services

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
    await services.create_coupon(db.uow(), coupon)
    stored = await services.get_coupon(db.uow(), "save5eur")
    assert stored == coupon
    assert stored.starts_at.tzinfo is not None


async def test_coupon_codes_are_unique_per_tenant_case_insensitively(db) -> None:
    await services.create_coupon(db.uow("acme"), make_coupon("WELCOME10"))
    with pytest.raises(DuplicateCouponCode):
        await services.create_coupon(db.uow("acme"), make_coupon("welcome10", id="other-id"))
    # Another tenant may use the same code.
    await services.create_coupon(db.uow("globex"), make_coupon("Welcome10", id="globex-id"))
    assert (await services.get_coupon(db.uow("globex"), "WELCOME10")).id == "globex-id"


async def test_coupons_are_tenant_scoped(db) -> None:
    await services.create_coupon(db.uow("acme"), make_coupon("ACME1"))
    with pytest.raises(CouponNotFound):
        await services.get_coupon(db.uow("globex"), "ACME1")
    assert await services.list_coupons(db.uow("globex"), limit=10, after=None) == []
    with pytest.raises(CouponNotFound):
        await services.delete_coupon(db.uow("globex"), "ACME1")


async def test_coupon_list_pages_by_code(db) -> None:
    for code in ["C", "a", "B", "d"]:
        await services.create_coupon(db.uow(), make_coupon(code))
    first = await services.list_coupons(db.uow(), limit=2, after=None)
    second = await services.list_coupons(db.uow(), limit=2, after=first[-1].key)
    assert [c.code for c in first + second] == ["a", "B", "C", "d"]


async def test_replace_keeps_the_counter_and_delete_removes(db) -> None:
    await services.create_coupon(db.uow(), make_coupon("LIMITED", max_redemptions=3))
    async with db.uow() as uow:
        coupon = await uow.coupons.get("LIMITED")
        assert await uow.coupons.try_count_redemption(coupon.id)
        await uow.commit()
    replaced = await services.replace_coupon(
        db.uow(), make_coupon("LIMITED", name="Renamed", max_redemptions=5)
    )
    assert replaced.name == "Renamed"
    assert replaced.redeemed_count == 1
    await services.delete_coupon(db.uow(), "limited")
    with pytest.raises(CouponNotFound):
        await services.get_coupon(db.uow(), "LIMITED")


async def test_conditional_counter_stops_at_the_limit(db) -> None:
    await services.create_coupon(db.uow(), make_coupon("TWO", max_redemptions=2))
    results = []
    for _ in range(3):
        async with db.uow() as uow:
            coupon = await uow.coupons.get("TWO")
            results.append(await uow.coupons.try_count_redemption(coupon.id))
            await uow.commit()
    assert results == [True, True, False]
    assert (await services.get_coupon(db.uow(), "TWO")).redeemed_count == 2


async def test_unlimited_coupon_counts_without_limit(db) -> None:
    await services.create_coupon(db.uow(), make_coupon("FREE"))
    async with db.uow() as uow:
        coupon = await uow.coupons.get("FREE")
        assert all([await uow.coupons.try_count_redemption(coupon.id) for _ in range(5)])
        await uow.commit()
    assert (await services.get_coupon(db.uow(), "FREE")).redeemed_count == 5


async def test_per_customer_counter_is_created_and_limited(db) -> None:
    await services.create_coupon(db.uow(), make_coupon("ONCE"))
    coupon = await services.get_coupon(db.uow(), "ONCE")
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


async def test_policy_upsert_is_idempotent_and_replaces(db) -> None:
    policy = DiscountPolicy(
        key="premium-customers",
        name="Premium 5%",
        rule=UserTypeRule("premium", PercentOff(Decimal("0.05"))),
        starts_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert await services.put_policy(db.uow_factory(), policy) is True
    assert await services.put_policy(db.uow_factory(), policy) is False
    assert await services.list_policies(db.uow()) == [policy]
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
    assert await services.put_policy(db.uow_factory(), threshold) is False
    assert await services.get_policy(db.uow(), "premium-customers") == threshold
    with pytest.raises(PolicyNotFound):
        await services.get_policy(db.uow("globex"), "premium-customers")
    await services.delete_policy(db.uow(), "premium-customers")
    with pytest.raises(PolicyNotFound):
        await services.delete_policy(db.uow(), "premium-customers")


async def test_stacking_settings_default_and_round_trip(db) -> None:
    assert await services.get_stacking_settings(db.uow()) == StackingSettings()
    settings = StackingSettings(
        max_fraction=Decimal("0.5"),
        max_amounts=(Money.of("100.00", "EUR"), Money.of("12000", "JPY")),
    )
    await services.put_stacking_settings(db.uow(), settings)
    stored = await services.get_stacking_settings(db.uow())
    assert stored.max_fraction == Decimal("0.5")
    assert set(stored.max_amounts) == set(settings.max_amounts)
    assert await services.get_stacking_settings(db.uow("globex")) == StackingSettings()


async def test_redemption_is_stored_with_lines_event_and_counters(db) -> None:
    await services.create_coupon(db.uow(), make_coupon("WELCOME10", max_redemptions=5))
    await services.put_policy(
        db.uow_factory(),
        DiscountPolicy(
            key="premium",
            name="Premium 5%",
            rule=UserTypeRule("premium", PercentOff(Decimal("0.05"))),
        ),
    )
    outcome = await services.redeem(
        db.uow_factory(), make_request("welcome10"), idempotency_key="k-1", now=NOW
    )
    assert not outcome.replayed
    stored = await services.get_redemption(db.uow(), outcome.redemption.id)
    assert stored == outcome.redemption
    assert [(line.code, str(line.amount.amount)) for line in stored.result.applied] == [
        ("WELCOME10", "20.00"),
        (None, "9.00"),
    ]
    assert (await services.get_coupon(db.uow(), "WELCOME10")).redeemed_count == 1
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
    await services.create_coupon(db.uow(), make_coupon("WELCOME10"))
    first = await services.redeem(
        db.uow_factory(), make_request("WELCOME10"), idempotency_key="k", now=NOW
    )
    again = await services.redeem(
        db.uow_factory(), make_request("welcome10"), idempotency_key="k", now=NOW
    )
    assert again.replayed
    assert again.redemption == first.redemption
    with pytest.raises(IdempotencyKeyReused):
        await services.redeem(
            db.uow_factory(),
            make_request("WELCOME10", amount="201.00"),
            idempotency_key="k",
            now=NOW,
        )
    assert (await services.get_coupon(db.uow(), "WELCOME10")).redeemed_count == 1
    # Keys are per tenant: another tenant's "k" is a new redemption.
    other = await services.redeem(
        db.uow_factory("globex"), make_request(), idempotency_key="k", now=NOW
    )
    assert not other.replayed


async def test_idempotency_key_is_unique_in_the_database(db) -> None:
    outcome = await services.redeem(db.uow_factory(), make_request(), idempotency_key="k", now=NOW)
    duplicate = replace(outcome.redemption, id=str(uuid.uuid4()))
    async with db.uow() as uow:
        with pytest.raises(IdempotencyKeyTaken):
            await uow.redemptions.add(duplicate)


async def test_inapplicable_coupon_fails_the_redemption_and_writes_nothing(db) -> None:
    await services.create_coupon(
        db.uow(), make_coupon("OLD", ends_at=datetime(2026, 2, 1, tzinfo=UTC))
    )
    with pytest.raises(CouponNotApplicable) as caught:
        await services.redeem(db.uow_factory(), make_request("OLD"), idempotency_key="k", now=NOW)
    assert caught.value.problem_extensions == {"code": "OLD", "reason": "expired"}
    assert await services.list_redemptions(db.uow(), limit=10, before=None, customer_id=None) == []
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar() == 0


async def test_history_is_newest_first_paginated_and_tenant_scoped(db) -> None:
    ids = []
    for i in range(5):
        outcome = await services.redeem(
            db.uow_factory(),
            make_request(customer=f"c-{i % 2}"),
            idempotency_key=f"k-{i}",
            now=NOW + timedelta(minutes=i),
        )
        ids.append(outcome.redemption.id)
    page1 = await services.list_redemptions(db.uow(), limit=2, before=None, customer_id=None)
    last = page1[-1]
    page2 = await services.list_redemptions(
        db.uow(), limit=2, before=(last.created_at, last.id), customer_id=None
    )
    last = page2[-1]
    page3 = await services.list_redemptions(
        db.uow(), limit=2, before=(last.created_at, last.id), customer_id=None
    )
    assert [r.id for r in page1 + page2 + page3] == ids[::-1]
    only_c1 = await services.list_redemptions(db.uow(), limit=10, before=None, customer_id="c-1")
    assert [r.id for r in only_c1] == [ids[3], ids[1]]
    assert (
        await services.list_redemptions(db.uow("globex"), limit=10, before=None, customer_id=None)
        == []
    )


async def test_samples_load_once(db) -> None:
    from discount_service import samples

    factory = db.uow_factory(samples.SAMPLE_TENANT)
    kwargs = {
        "coupons": samples.SAMPLE_COUPONS,
        "policies": samples.SAMPLE_POLICIES,
        "settings": samples.SAMPLE_STACKING,
    }
    assert await services.ensure_samples(factory, **kwargs) == 9
    assert await services.ensure_samples(factory, **kwargs) == 0
    codes = [c.code for c in await services.list_coupons(factory(), limit=50, after=None)]
    assert codes == ["LAUNCH3", "SAVE5EUR", "SUMMER2020", "VIP25", "WELCOME10"]
