"""Property-based tests (hypothesis): for any coupons, policies, cap and amount, the total
discount is within 0..amount (and the cap), amount_after == amount - total, every line is on
the minor-unit grid, evaluation is deterministic and independent of input order, and a
redemption applies exactly what the quote said."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from billing_common.db import create_engine, migrate, session_factory
from billing_common.money import Money, quantum
from discount_service.adapters.unit_of_work import uow_factory
from discount_service.bootstrap import MIGRATIONS_DIR
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
from discount_service.domain.stacking import evaluate
from discount_service.service_layer import coupons as use_coupons
from discount_service.service_layer import policies as use_policies
from discount_service.service_layer import quotes, redemptions
from discount_service.service_layer.dependencies import Dependencies

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CURRENCIES = ["EUR", "USD", "JPY", "KWD"]


def money_in(currency: str, max_minor: int = 2_000_000) -> st.SearchStrategy[Money]:
    step = quantum(currency)
    return st.integers(0, max_minor).map(lambda n: Money(Decimal(n) * step, currency))


rates = st.integers(1, 1_000_000).map(lambda n: PercentOff(Decimal(n).scaleb(-6)))


def benefits(currency: str) -> st.SearchStrategy[PercentOff | AmountOff]:
    fixed = money_in(currency, 500_000).filter(lambda m: m.amount > 0).map(AmountOff)
    return st.one_of(rates, fixed)


@st.composite
def scenarios(draw: st.DrawFn):
    currency = draw(st.sampled_from(CURRENCIES))
    amount = draw(money_in(currency))
    coupons = []
    for i in range(draw(st.integers(0, 5))):
        # Mostly the request's currency; sometimes another, to exercise currency_mismatch.
        other = draw(st.sampled_from([currency, currency, currency, *CURRENCIES]))
        starts_at = NOW - timedelta(days=draw(st.integers(-2, 30)))
        lasts = draw(st.none() | st.integers(1, 40))
        coupons.append(
            Coupon(
                id=f"00000000-0000-4000-8000-{i:012d}",
                code=f"C{i}",
                name=f"Coupon {i}",
                benefit=draw(benefits(other)),
                starts_at=starts_at,
                ends_at=None if lasts is None else starts_at + timedelta(days=lasts),
                max_redemptions=draw(st.none() | st.integers(1, 3)),
                max_redemptions_per_customer=draw(st.none() | st.integers(1, 2)),
                minimum=draw(st.none() | money_in(other, 100_000)),
                active=draw(st.booleans()),
                priority=draw(st.integers(-3, 3)),
                exclusive=draw(st.booleans()),
            )
        )
    policies = []
    if draw(st.booleans()):
        policies.append(
            DiscountPolicy(
                key="usertype",
                name="User type",
                rule=UserTypeRule("premium", draw(benefits(currency))),
                priority=draw(st.integers(-3, 3)),
                exclusive=draw(st.booleans()),
            )
        )
    if draw(st.booleans()):
        minimums = draw(
            st.lists(
                money_in(currency, 1_000_000).filter(lambda m: m.amount > 0),
                min_size=1,
                max_size=3,
                unique_by=lambda m: m.amount,
            )
        )
        policies.append(
            DiscountPolicy(
                key="threshold",
                name="Threshold",
                rule=ThresholdRule(
                    currency, tuple(ThresholdTier(m, draw(benefits(currency))) for m in minimums)
                ),
                priority=draw(st.integers(-3, 3)),
                exclusive=draw(st.booleans()),
            )
        )
    fraction = Decimal(draw(st.integers(1, 100))) / 100
    caps = draw(st.lists(money_in(currency, 1_000_000), max_size=1))
    stacking = StackingSettings(max_fraction=fraction, max_amounts=tuple(caps))
    codes = draw(st.lists(st.sampled_from([*(c.code for c in coupons), "UNKNOWN"]), max_size=6))
    request = DiscountRequest(
        customer_id="c-1",
        amount=amount,
        customer_type=draw(st.sampled_from([None, "premium", "vip"])),
        coupon_codes=tuple(codes),
    )
    return request, coupons, policies, stacking


def run(request, coupons, policies, stacking):
    return evaluate(
        request,
        coupons={c.key: c for c in coupons},
        customer_usage={},
        policies=policies,
        settings=stacking,
        now=NOW,
    )


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_totals_stay_within_the_amount_and_the_cap(scenario) -> None:
    request, coupons, policies, stacking = scenario
    result = run(request, coupons, policies, stacking)
    amount = request.amount
    assert not result.total_discount.is_negative
    assert result.total_discount <= amount
    assert result.total_discount <= stacking.cap_for(amount)
    assert result.amount_after == amount - result.total_discount
    assert not result.amount_after.is_negative
    step = quantum(amount.currency)
    for line in result.applied:
        assert line.amount.amount > 0
        assert line.amount.amount == line.amount.amount.quantize(step)
        assert line.amount.currency == amount.currency
    assert sum((line.amount.amount for line in result.applied), Decimal(0)) == (
        result.total_discount.amount
    )
    # Every named code is either applied or rejected, once.
    applied_codes = {line.code for line in result.applied if line.code}
    rejected_codes = [r.code for r in result.rejected]
    assert len(rejected_codes) == len(set(rejected_codes))
    assert {c.upper() for c in request.coupon_codes} == {
        *(c.upper() for c in applied_codes),
        *(c.upper() for c in rejected_codes),
    }


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_evaluation_is_deterministic_and_independent_of_input_order(scenario, rnd) -> None:
    request, coupons, policies, stacking = scenario
    first = run(request, coupons, policies, stacking)
    assert run(request, coupons, policies, stacking) == first
    shuffled_policies = list(policies)
    rnd.shuffle(shuffled_policies)
    shuffled_coupons = list(coupons)
    rnd.shuffle(shuffled_coupons)
    again = run(request, shuffled_coupons, shuffled_policies, stacking)
    assert again.applied == first.applied
    assert again.total_discount == first.total_discount


@pytest.fixture(scope="module")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("discount-props") / "props.db"
    url = f"sqlite+aiosqlite:///{path}"

    async def setup() -> None:
        engine = create_engine(url)
        await migrate(engine, MIGRATIONS_DIR, "alembic_version_discount")
        await engine.dispose()

    asyncio.run(setup())
    return url


async def _quote_then_redeem(url: str, scenario):
    request, coupons, policies, stacking = scenario
    engine = create_engine(url)
    sessions = session_factory(engine)
    tenant = f"t{uuid.uuid4().hex[:12]}"  # each example in its own tenant

    deps = Dependencies(uow_factory(sessions, None), clock=lambda: NOW)

    try:
        for coupon in coupons:
            # Ids are primary keys across tenants: fresh ones for every example.
            await use_coupons.create_coupon(tenant, replace(coupon, id=str(uuid.uuid4())), deps)
        for policy in policies:
            await use_policies.put_policy(tenant, policy, deps)
        await use_policies.put_stacking_settings(tenant, stacking, deps)
        quoted = await quotes.quote(tenant, request, deps)
        blocked = [r for r in quoted.rejected if r.reason.blocks_redemption]
        if blocked:
            return quoted, None
        redeemed = await redemptions.redeem(tenant, request, "k", deps)
        stored = await redemptions.get_redemption(tenant, redeemed.redemption.id, deps)
        return quoted, stored.result
    finally:
        await engine.dispose()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenarios())
def test_a_redemption_applies_exactly_what_the_quote_said(migrated_sqlite: str, scenario) -> None:
    request, coupons, policies, stacking = scenario
    # Known codes only, so that most examples redeem rather than fail on "unknown".
    known = tuple(code for code in request.coupon_codes if code != "UNKNOWN")
    scenario = (
        DiscountRequest(
            customer_id=request.customer_id,
            amount=request.amount,
            customer_type=request.customer_type,
            coupon_codes=known,
        ),
        coupons,
        policies,
        stacking,
    )
    quoted, redeemed = asyncio.run(_quote_then_redeem(migrated_sqlite, scenario))
    assert quoted == run(*scenario)  # the stored definitions evaluate like the originals
    event("redeemed" if redeemed is not None else "a coupon blocked the redemption")
    if redeemed is not None:
        assert redeemed == quoted
