"""Domain rules: each coupon rule, policies, stacking order, exclusivity, the cap, rounding."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing_common.money import Money
from discount_service.domain.errors import (
    InvalidAmount,
    InvalidCoupon,
    InvalidDiscount,
    InvalidPolicy,
    InvalidStackingSettings,
)
from discount_service.domain.model import (
    AmountOff,
    Coupon,
    DiscountKind,
    DiscountPolicy,
    DiscountRequest,
    PercentOff,
    RejectReason,
    StackingSettings,
    ThresholdRule,
    ThresholdTier,
    UserTypeRule,
)
from discount_service.domain.stacking import evaluate

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SINCE = datetime(2026, 1, 1, tzinfo=UTC)


def eur(amount: str) -> Money:
    return Money.of(amount, "EUR")


def coupon(code: str = "WELCOME10", benefit: PercentOff | AmountOff | None = None, **kw) -> Coupon:
    fields = {"id": f"id-{code}", "starts_at": SINCE, "name": f"{code} coupon", **kw}
    return Coupon(code=code, benefit=benefit or PercentOff(Decimal("0.10")), **fields)


def request(amount: Money, *codes: str, customer_type: str | None = None) -> DiscountRequest:
    return DiscountRequest(
        customer_id="c-1", amount=amount, customer_type=customer_type, coupon_codes=codes
    )


def run(
    req: DiscountRequest,
    coupons: list[Coupon] = (),  # type: ignore[assignment]
    policies: list[DiscountPolicy] = (),  # type: ignore[assignment]
    settings: StackingSettings | None = None,
    usage: dict[str, int] | None = None,
    now: datetime = NOW,
):
    return evaluate(
        req,
        coupons={c.key: c for c in coupons},
        customer_usage=usage or {},
        policies=policies,
        settings=settings or StackingSettings(),
        now=now,
    )


def amounts(result) -> list[str]:
    return [str(line.amount.amount) for line in result.applied]


# --- coupon rules -----------------------------------------------------------------------


def test_percent_coupon_applies_and_totals_add_up() -> None:
    result = run(request(eur("200.00"), "WELCOME10"), [coupon()])
    assert amounts(result) == ["20.00"]
    assert result.total_discount == eur("20.00")
    assert result.amount_after == eur("180.00")
    assert result.rejected == ()
    assert result.applied[0].kind is DiscountKind.COUPON
    assert result.applied[0].code == "WELCOME10"


def test_codes_are_case_insensitive_and_counted_once() -> None:
    result = run(request(eur("100.00"), "welcome10", "WELCOME10", " Welcome10 "), [coupon()])
    assert amounts(result) == ["10.00"]


def test_unknown_coupon_is_rejected() -> None:
    result = run(request(eur("100.00"), "NOPE"), [coupon()])
    assert result.applied == ()
    assert [(r.code, r.reason) for r in result.rejected] == [("NOPE", RejectReason.UNKNOWN)]


@pytest.mark.parametrize(
    ("changes", "usage", "reason"),
    [
        ({"active": False}, 0, RejectReason.INACTIVE),
        ({"starts_at": NOW + timedelta(seconds=1)}, 0, RejectReason.NOT_STARTED),
        ({"ends_at": NOW}, 0, RejectReason.EXPIRED),  # the end is exclusive
        ({"max_redemptions": 3, "redeemed_count": 3}, 0, RejectReason.EXHAUSTED),
        ({"max_redemptions_per_customer": 1}, 1, RejectReason.CUSTOMER_LIMIT_REACHED),
        ({"minimum": eur("20.01")}, 0, RejectReason.BELOW_MINIMUM),
        ({"minimum": Money.of("1.00", "USD")}, 0, RejectReason.CURRENCY_MISMATCH),
    ],
)
def test_each_coupon_rule_rejects_with_its_reason(
    changes: dict, usage: int, reason: RejectReason
) -> None:
    c = coupon(**changes)
    result = run(request(eur("20.00"), "WELCOME10"), [c], usage={c.id: usage})
    assert result.applied == ()
    assert [r.reason for r in result.rejected] == [reason]


@pytest.mark.parametrize(
    ("changes", "usage"),
    [
        ({"starts_at": NOW}, 0),  # the start is inclusive
        ({"ends_at": NOW + timedelta(microseconds=1)}, 0),
        ({"max_redemptions": 3, "redeemed_count": 2}, 0),
        ({"max_redemptions_per_customer": 2}, 1),
        ({"minimum": eur("20.00")}, 0),  # the minimum is inclusive
    ],
)
def test_coupon_rules_at_their_boundaries_still_apply(changes: dict, usage: int) -> None:
    c = coupon(**changes)
    result = run(request(eur("20.00"), "WELCOME10"), [c], usage={c.id: usage})
    assert amounts(result) == ["2.00"]


def test_fixed_coupon_applies_only_in_its_currency() -> None:
    c = coupon("SAVE5EUR", AmountOff(eur("5.00")), minimum=eur("20.00"))
    assert amounts(run(request(eur("20.00"), "SAVE5EUR"), [c])) == ["5.00"]
    in_usd = run(request(Money.of("100.00", "USD"), "SAVE5EUR"), [c])
    assert [r.reason for r in in_usd.rejected] == [RejectReason.CURRENCY_MISMATCH]
    below = run(request(eur("19.99"), "SAVE5EUR"), [c])
    assert [r.reason for r in below.rejected] == [RejectReason.BELOW_MINIMUM]


def test_fixed_coupon_never_exceeds_the_amount() -> None:
    c = coupon("BIG", AmountOff(eur("50.00")))
    result = run(request(eur("30.00"), "BIG"), [c])
    assert result.total_discount == eur("30.00")
    assert result.amount_after == eur("0.00")


def test_the_first_failing_rule_is_the_reason() -> None:
    c = coupon(active=False, ends_at=SINCE + timedelta(days=1))
    assert run(request(eur("1.00"), "WELCOME10"), [c]).rejected[0].reason is RejectReason.INACTIVE


def test_rejections_keep_the_order_of_the_request() -> None:
    expired = coupon("OLD", ends_at=SINCE + timedelta(days=1))
    result = run(request(eur("10.00"), "ZZZ", "OLD", "AAA"), [expired])
    assert [r.code for r in result.rejected] == ["ZZZ", "OLD", "AAA"]


# --- policies ---------------------------------------------------------------------------


def premium(rate: str = "0.05", **kw) -> DiscountPolicy:
    fields = {"key": "premium", "name": "Premium customers 5%", **kw}
    return DiscountPolicy(rule=UserTypeRule("premium", PercentOff(Decimal(rate))), **fields)


def volume(currency: str = "EUR", **kw) -> DiscountPolicy:
    return DiscountPolicy(
        key=f"volume-{currency.lower()}",
        name=f"Volume {currency}",
        rule=ThresholdRule(
            currency,
            (
                ThresholdTier(Money.of("500.00", currency), PercentOff(Decimal("0.05"))),
                ThresholdTier(Money.of("1000.00", currency), PercentOff(Decimal("0.10"))),
            ),
        ),
        **kw,
    )


def test_user_type_policy_applies_to_its_type_only() -> None:
    assert amounts(run(request(eur("200.00"), customer_type="premium"), policies=[premium()])) == [
        "10.00"
    ]
    assert amounts(run(request(eur("200.00"), customer_type="PREMIUM"), policies=[premium()])) == [
        "10.00"
    ]
    assert run(request(eur("200.00"), customer_type="vip"), policies=[premium()]).applied == ()
    assert run(request(eur("200.00")), policies=[premium()]).applied == ()


@pytest.mark.parametrize(
    ("amount", "expected"),
    [("499.99", []), ("500.00", ["25.00"]), ("999.99", ["50.00"]), ("1000.00", ["100.00"])],
)
def test_only_the_highest_threshold_tier_met_applies(amount: str, expected: list[str]) -> None:
    result = run(request(eur(amount)), policies=[volume("EUR"), volume("USD")])
    assert amounts(result) == expected
    if expected:
        assert result.applied[0].kind is DiscountKind.THRESHOLD


def test_threshold_policy_ignores_other_currencies() -> None:
    assert run(request(Money.of("5000.00", "USD")), policies=[volume("EUR")]).applied == ()


def test_inactive_or_out_of_window_policies_do_not_apply() -> None:
    req = request(eur("100.00"), customer_type="premium")
    assert run(req, policies=[premium(active=False)]).applied == ()
    assert run(req, policies=[premium(starts_at=NOW + timedelta(days=1))]).applied == ()
    assert run(req, policies=[premium(ends_at=NOW)]).applied == ()


def test_fixed_user_type_discount_in_another_currency_does_not_apply() -> None:
    policy = DiscountPolicy(
        key="vip", name="VIP 10 USD", rule=UserTypeRule("vip", AmountOff(Money.of("10", "USD")))
    )
    assert run(request(eur("100.00"), customer_type="vip"), policies=[policy]).applied == ()


# --- stacking ---------------------------------------------------------------------------


def test_discounts_apply_sequentially_on_the_remaining_amount() -> None:
    result = run(
        request(eur("200.00"), "WELCOME10", customer_type="premium"),
        [coupon(priority=100)],
        [premium(priority=50)],
    )
    # 10 % of 200.00, then 5 % of the remaining 180.00.
    assert amounts(result) == ["20.00", "9.00"]
    assert result.total_discount == eur("29.00")
    assert result.amount_after == eur("171.00")


def test_higher_priority_applies_first() -> None:
    fixed = coupon("FIVE", AmountOff(eur("5.00")), priority=1)
    percent = coupon("TEN", priority=2)
    result = run(request(eur("100.00"), "FIVE", "TEN"), [fixed, percent])
    assert [(line.code, str(line.amount.amount)) for line in result.applied] == [
        ("TEN", "10.00"),
        ("FIVE", "5.00"),
    ]
    result = run(request(eur("100.00"), "FIVE", "TEN"), [replace(fixed, priority=3), percent])
    assert [(line.code, str(line.amount.amount)) for line in result.applied] == [
        ("FIVE", "5.00"),
        ("TEN", "9.50"),
    ]


def test_equal_priority_orders_coupons_before_policies_then_by_code() -> None:
    result = run(
        request(eur("100.00"), "BBB", "AAA", customer_type="premium"),
        [coupon("BBB"), coupon("AAA")],
        [premium()],
    )
    assert [line.code for line in result.applied] == ["AAA", "BBB", None]


def test_an_exclusive_discount_giving_more_applies_alone() -> None:
    vip = coupon("VIP25", PercentOff(Decimal("0.25")), exclusive=True)
    result = run(
        request(eur("200.00"), "WELCOME10", "VIP25", customer_type="premium"),
        [coupon(), vip],
        [premium()],
    )
    assert [line.code for line in result.applied] == ["VIP25"]
    assert result.total_discount == eur("50.00")
    assert [(r.code, r.reason) for r in result.rejected] == [
        ("WELCOME10", RejectReason.NOT_COMBINABLE)
    ]


def test_the_stack_wins_when_it_gives_more_than_the_exclusive() -> None:
    small = coupon("SMALL", PercentOff(Decimal("0.05")), exclusive=True)
    result = run(
        request(eur("200.00"), "WELCOME10", "SMALL", customer_type="premium"),
        [coupon(), small],
        [premium()],
    )
    assert result.total_discount == eur("29.00")
    assert [(r.code, r.reason) for r in result.rejected] == [("SMALL", RejectReason.NOT_COMBINABLE)]


def test_on_a_tie_the_stack_wins_then_the_first_exclusive() -> None:
    tie = coupon("TIE", exclusive=True)
    result = run(request(eur("100.00"), "WELCOME10", "TIE"), [coupon(), tie])
    assert [line.code for line in result.applied] == ["WELCOME10"]
    one = coupon("ONE", exclusive=True, priority=2)
    two = coupon("TWO", exclusive=True, priority=1)
    result = run(request(eur("100.00"), "TWO", "ONE"), [one, two])
    assert [line.code for line in result.applied] == ["ONE"]


def test_the_best_of_several_exclusive_policies_and_coupons_wins() -> None:
    exclusive_policy = premium(rate="0.30", exclusive=True)
    vip = coupon("VIP25", PercentOff(Decimal("0.25")), exclusive=True)
    result = run(
        request(eur("100.00"), "VIP25", customer_type="premium"), [vip], [exclusive_policy]
    )
    assert [line.kind for line in result.applied] == [DiscountKind.USER_TYPE]
    assert result.total_discount == eur("30.00")


def test_the_cap_limits_the_total_as_a_fraction_of_the_amount() -> None:
    forty = coupon("FORTY", PercentOff(Decimal("0.40")), priority=2)
    thirty = coupon("THIRTY", PercentOff(Decimal("0.30")), priority=1)
    settings = StackingSettings(max_fraction=Decimal("0.5"))
    result = run(request(eur("100.00"), "FORTY", "THIRTY"), [forty, thirty], settings=settings)
    # Uncapped: 40.00 + 18.00; the cap of 50.00 clips the second line.
    assert amounts(result) == ["40.00", "10.00"]
    assert result.total_discount == eur("50.00")


def test_the_fraction_cap_rounds_down_so_it_is_never_exceeded() -> None:
    settings = StackingSettings(max_fraction=Decimal("0.5"))
    result = run(
        request(eur("0.03"), "ALL"), [coupon("ALL", PercentOff(Decimal(1)))], settings=settings
    )
    assert result.total_discount == eur("0.01")


def test_the_absolute_cap_applies_in_its_currency_only() -> None:
    settings = StackingSettings(max_amounts=(eur("15.00"),))
    twenty = coupon("TWENTY", PercentOff(Decimal("0.20")))
    assert run(request(eur("100.00"), "TWENTY"), [twenty], settings=settings).total_discount == eur(
        "15.00"
    )
    usd = run(request(Money.of("100.00", "USD"), "TWENTY"), [twenty], settings=settings)
    assert usd.total_discount == Money.of("20.00", "USD")


def test_lines_that_take_nothing_are_dropped_and_their_coupons_reported() -> None:
    everything = coupon("ALL", PercentOff(Decimal(1)), priority=2)
    result = run(request(eur("10.00"), "ALL", "WELCOME10"), [everything, coupon()])
    assert [line.code for line in result.applied] == ["ALL"]
    assert [(r.code, r.reason) for r in result.rejected] == [("WELCOME10", RejectReason.NO_EFFECT)]


def test_nothing_to_discount_means_no_effect_even_for_exclusives() -> None:
    vip = coupon("VIP25", PercentOff(Decimal("0.25")), exclusive=True)
    result = run(request(eur("0.00"), "WELCOME10", "VIP25"), [coupon(), vip])
    assert result.applied == ()
    assert format(result.total_discount.amount, "f") == "0.00"
    assert format(result.amount_after.amount, "f") == "0.00"
    assert {r.reason for r in result.rejected} == {RejectReason.NO_EFFECT}


# --- rounding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "rate", "expected"),
    [
        ("0.10", "EUR", "0.15", "0.02"),  # 0.015 -> 0.02 (half up)
        ("0.10", "EUR", "0.14", "0.01"),  # 0.014 -> 0.01
        ("0.05", "EUR", "0.10", "0.01"),  # 0.005 -> 0.01
        ("1005", "JPY", "0.10", "101"),  # 100.5 -> 101 (no minor unit)
        ("1.005", "KWD", "0.10", "0.101"),  # 0.1005 -> 0.101 (three decimals)
        ("33.33", "EUR", "0.333333", "11.11"),
    ],
)
def test_each_discount_is_rounded_half_up_to_the_minor_unit(
    amount: str, currency: str, rate: str, expected: str
) -> None:
    c = coupon("R", PercentOff(Decimal(rate)))
    result = run(request(Money.of(amount, currency), "R"), [c])
    assert [format(line.amount.amount, "f") for line in result.applied] == [expected]
    assert result.amount_after.amount == Money.of(amount, currency).amount - Decimal(expected)


def test_rounding_happens_per_discount_not_on_the_total() -> None:
    a = coupon("A", PercentOff(Decimal("0.005")), priority=2)
    b = coupon("B", PercentOff(Decimal("0.005")), priority=1)
    # 0.5 % of 1.00 = 0.005 -> 0.01; then 0.5 % of 0.99 = 0.00495 -> 0.00 (dropped).
    result = run(request(eur("1.00"), "A", "B"), [a, b])
    assert amounts(result) == ["0.01"]


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize("rate", ["0", "-0.1", "1.01", "0.1234567"])
def test_invalid_percent_rates_are_refused(rate: str) -> None:
    with pytest.raises(InvalidDiscount):
        PercentOff(Decimal(rate))


def test_full_percent_is_allowed() -> None:
    assert PercentOff(Decimal("1")).rate == 1


@pytest.mark.parametrize("amount", ["0", "-1.00"])
def test_fixed_discounts_must_be_positive(amount: str) -> None:
    with pytest.raises(InvalidDiscount):
        AmountOff(eur(amount))


def test_fixed_discounts_must_fit_the_minor_unit() -> None:
    with pytest.raises(InvalidAmount):
        AmountOff(eur("5.001"))


@pytest.mark.parametrize(
    "changes",
    [
        {"code": "has space"},
        {"code": ""},
        {"name": "  "},
        {"ends_at": SINCE},
        {"starts_at": datetime(2026, 1, 1)},
        {"max_redemptions": 0},
        {"max_redemptions_per_customer": 0},
        {"minimum": eur("-1.00")},
        {"benefit": AmountOff(eur("5.00")), "minimum": Money.of("20.00", "USD")},
    ],
)
def test_invalid_coupons_are_refused(changes: dict) -> None:
    with pytest.raises((InvalidCoupon, InvalidAmount)):
        coupon(**changes)


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(InvalidPolicy):
        premium(key="Not A Key")
    with pytest.raises(InvalidPolicy):
        premium(name=" ")
    with pytest.raises(InvalidPolicy):
        UserTypeRule("Premium Customers", PercentOff(Decimal("0.1")))
    with pytest.raises(InvalidPolicy):
        ThresholdRule("EUR", ())
    with pytest.raises(InvalidPolicy):
        ThresholdRule(
            "EUR",
            (
                ThresholdTier(eur("500.00"), PercentOff(Decimal("0.05"))),
                ThresholdTier(eur("500.00"), PercentOff(Decimal("0.10"))),
            ),
        )
    with pytest.raises(InvalidPolicy):
        ThresholdRule("EUR", (ThresholdTier(eur("500.00"), AmountOff(Money.of("5", "USD"))),))


@pytest.mark.parametrize("fraction", ["0", "1.5", "-0.5"])
def test_invalid_caps_are_refused(fraction: str) -> None:
    with pytest.raises(InvalidStackingSettings):
        StackingSettings(max_fraction=Decimal(fraction))


def test_one_absolute_cap_per_currency() -> None:
    with pytest.raises(InvalidStackingSettings):
        StackingSettings(max_amounts=(eur("1.00"), eur("2.00")))


@pytest.mark.parametrize("amount", ["-0.01", "10.001"])
def test_request_amounts_must_be_non_negative_and_on_the_grid(amount: str) -> None:
    with pytest.raises(InvalidAmount):
        request(eur(amount))


def test_fingerprint_identifies_equal_requests() -> None:
    base = DiscountRequest(
        customer_id="c-1",
        amount=eur("200.0"),
        customer_type="Premium",
        coupon_codes=("welcome10",),
        reference="inv_1",
    )
    same = DiscountRequest(
        customer_id="c-1",
        amount=eur("200.00"),
        customer_type="premium",
        coupon_codes=("WELCOME10", "Welcome10"),
        reference="inv_1",
    )
    assert base.fingerprint() == same.fingerprint()
    assert base.fingerprint() != replace(same, amount=eur("200.01")).fingerprint()
    assert base.fingerprint() != replace(same, reference="inv_2").fingerprint()
    assert base.fingerprint() != replace(same, customer_id="c-2").fingerprint()


def test_a_coupon_with_another_counter_keeps_its_definition() -> None:
    limited = coupon(max_redemptions=3, minimum=eur("20.00"), priority=7, exclusive=True)
    counted = limited.with_redeemed_count(2)
    assert counted == replace(limited, redeemed_count=2)
    assert limited.redeemed_count == 0  # frozen: a copy, not a change
    assert limited.with_redeemed_count(0) is limited
    assert counted.rejection(eur("50.00"), NOW, 0) is None
    assert counted.with_redeemed_count(3).rejection(eur("50.00"), NOW, 0) == RejectReason.EXHAUSTED
    with pytest.raises(InvalidCoupon):
        limited.with_redeemed_count(-1)
