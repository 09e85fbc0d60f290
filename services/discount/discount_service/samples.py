"""The documented sample set (services/discount/README.md), loaded for tenant "demo" on first
start of the embedded runtime. Ids are fixed so the set is the same on every machine."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from billing_common.money import Money
from discount_service.domain.model import (
    AmountOff,
    Coupon,
    DiscountPolicy,
    PercentOff,
    StackingSettings,
    ThresholdRule,
    ThresholdTier,
    UserTypeRule,
)

SAMPLE_TENANT = "demo"
_SINCE = datetime(2024, 1, 1, tzinfo=UTC)

SAMPLE_COUPONS: list[Coupon] = [
    Coupon(
        id="6f1c2b7e-0000-4000-8000-000000000001",
        code="WELCOME10",
        name="Welcome 10%",
        benefit=PercentOff(Decimal("0.10")),
        starts_at=_SINCE,
        priority=100,
    ),
    Coupon(
        id="6f1c2b7e-0000-4000-8000-000000000002",
        code="SAVE5EUR",
        name="5 EUR off from 20 EUR",
        benefit=AmountOff(Money.of("5.00", "EUR")),
        starts_at=_SINCE,
        minimum=Money.of("20.00", "EUR"),
        priority=100,
    ),
    Coupon(
        id="6f1c2b7e-0000-4000-8000-000000000003",
        code="SUMMER2020",
        name="Summer sale 2020 (expired)",
        benefit=PercentOff(Decimal("0.20")),
        starts_at=datetime(2020, 6, 1, tzinfo=UTC),
        ends_at=datetime(2020, 9, 1, tzinfo=UTC),
        priority=100,
    ),
    Coupon(
        id="6f1c2b7e-0000-4000-8000-000000000004",
        code="LAUNCH3",
        name="Launch offer 15% (first 3 redemptions, once per customer)",
        benefit=PercentOff(Decimal("0.15")),
        starts_at=_SINCE,
        max_redemptions=3,
        max_redemptions_per_customer=1,
        priority=100,
    ),
    Coupon(
        id="6f1c2b7e-0000-4000-8000-000000000005",
        code="VIP25",
        name="VIP 25% (exclusive)",
        benefit=PercentOff(Decimal("0.25")),
        starts_at=_SINCE,
        exclusive=True,
        priority=100,
    ),
]


def _volume_tiers(currency: str) -> ThresholdRule:
    return ThresholdRule(
        currency,
        (
            ThresholdTier(Money.of("500.00", currency), PercentOff(Decimal("0.05"))),
            ThresholdTier(Money.of("1000.00", currency), PercentOff(Decimal("0.10"))),
        ),
    )


SAMPLE_POLICIES: list[DiscountPolicy] = [
    DiscountPolicy(
        key="premium-customers",
        name="Premium customers 5%",
        rule=UserTypeRule("premium", PercentOff(Decimal("0.05"))),
        priority=50,
    ),
    DiscountPolicy(
        key="volume-eur",
        name="Volume discount EUR",
        rule=_volume_tiers("EUR"),
        priority=10,
    ),
    DiscountPolicy(
        key="volume-usd",
        name="Volume discount USD",
        rule=_volume_tiers("USD"),
        priority=10,
    ),
]

SAMPLE_STACKING = StackingSettings(max_fraction=Decimal("0.50"))
