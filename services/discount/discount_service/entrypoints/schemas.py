"""Request and response schemas of the discount API (coupons, policies, stacking settings,
and the models all share), and their mapping to the domain. Quotes and redemptions:
redemption_schemas.py; decimal, currency and date-time types: billing_common.wire.

Amounts are decimal strings both ways: a JSON number is refused before it can pass through
a float. Percent discounts are fractions (`"rate": "0.10"` is 10 %)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from billing_common.money import Money
from billing_common.wire import (
    Currency,
    DateTimeText,
    DecimalString,
    DecimalText,
    fraction_pattern,
)
from discount_service.domain.model import (
    MAX_RATE_DECIMALS,
    AmountOff,
    Benefit,
    Coupon,
    DiscountPolicy,
    PercentOff,
    PolicyRule,
    StackingSettings,
    ThresholdRule,
    ThresholdTier,
    UserTypeRule,
)

# Fractions 0 < f <= 1: a percent discount's rate ("0.10" is 10 %) and the stacking cap.
PercentRate = Annotated[
    Decimal, DecimalText(fraction_pattern(MAX_RATE_DECIMALS, zero=False), "0.10")
]
CapFraction = Annotated[Decimal, DecimalText(fraction_pattern(12, zero=False), "0.50")]
PriorityInt = Annotated[StrictInt, Field(ge=-10_000, le=10_000)]
LimitInt = Annotated[StrictInt, Field(ge=1, le=1_000_000_000)]


class InputModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MoneyIO(InputModel):
    amount: DecimalString
    currency: Currency

    def to_domain(self) -> Money:
        return Money(self.amount, self.currency)

    @classmethod
    def of(cls, money: Money) -> MoneyIO:
        return cls(amount=money.amount, currency=money.currency)


class PercentDiscount(InputModel):
    type: Literal["percent"]
    rate: PercentRate = Field(description="fraction: 0 < rate <= 1 (0.10 is 10 %)")


class FixedDiscount(InputModel):
    type: Literal["fixed"]
    amount: DecimalString
    currency: Currency


DiscountIO = Annotated[PercentDiscount | FixedDiscount, Field(discriminator="type")]


def benefit_from(discount: PercentDiscount | FixedDiscount) -> Benefit:
    if isinstance(discount, PercentDiscount):
        return PercentOff(discount.rate)
    return AmountOff(Money(discount.amount, discount.currency))


def benefit_out(benefit: Benefit) -> PercentDiscount | FixedDiscount:
    if isinstance(benefit, PercentOff):
        return PercentDiscount(type="percent", rate=benefit.rate)
    return FixedDiscount(
        type="fixed", amount=benefit.amount.amount, currency=benefit.amount.currency
    )


# --- coupons ----------------------------------------------------------------------------


class CouponDefinition(InputModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Spring 25%",
                    "discount": {"type": "percent", "rate": "0.25"},
                    "starts_at": None,
                    "ends_at": "2030-01-01T00:00:00Z",
                    "max_redemptions": 100,
                    "max_redemptions_per_customer": 1,
                    "minimum": {"amount": "50.00", "currency": "EUR"},
                    "active": True,
                    "priority": 100,
                    "exclusive": False,
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200, examples=["Welcome 10%"])
    discount: DiscountIO
    starts_at: DateTimeText | None = Field(
        default=None,
        description="inclusive; null: no lower bound (valid from any time until ends_at)",
    )
    ends_at: DateTimeText | None = Field(default=None, description="exclusive; null: no end")
    max_redemptions: LimitInt | None = None
    max_redemptions_per_customer: LimitInt | None = None
    minimum: MoneyIO | None = None
    active: StrictBool = True
    priority: PriorityInt = Field(default=0, description="higher applies first")
    exclusive: StrictBool = Field(default=False, description="applies alone, never stacked")

    def to_domain(
        self,
        *,
        code: str,
        coupon_id: str | None,
        default_start: datetime | None = None,
        redeemed_count: int = 0,
    ) -> Coupon:
        starts_at = self.starts_at or default_start
        return Coupon(
            id=coupon_id or str(uuid.uuid4()),
            code=code,
            name=self.name.strip(),
            benefit=benefit_from(self.discount),
            starts_at=starts_at.astimezone(UTC) if starts_at else None,
            ends_at=self.ends_at.astimezone(UTC) if self.ends_at else None,
            max_redemptions=self.max_redemptions,
            max_redemptions_per_customer=self.max_redemptions_per_customer,
            minimum=self.minimum.to_domain() if self.minimum else None,
            active=self.active,
            priority=self.priority,
            exclusive=self.exclusive,
            redeemed_count=redeemed_count,
        )


class CouponCreate(CouponDefinition):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "code": "SPRING25",
                    "name": "Spring 25%",
                    "discount": {"type": "percent", "rate": "0.25"},
                    "starts_at": None,
                    "ends_at": "2030-01-01T00:00:00Z",
                    "max_redemptions": 100,
                    "max_redemptions_per_customer": 1,
                    "minimum": {"amount": "50.00", "currency": "EUR"},
                    "active": True,
                    "priority": 100,
                    "exclusive": False,
                }
            ]
        },
    )

    code: str = Field(
        min_length=1,
        max_length=64,
        description="case-insensitive, unique per tenant: letters, digits, '_', '-'",
        examples=["WELCOME10"],
    )


class CouponOut(BaseModel):
    id: str
    code: str
    name: str
    discount: DiscountIO
    starts_at: datetime | None
    ends_at: datetime | None
    max_redemptions: int | None
    max_redemptions_per_customer: int | None
    minimum: MoneyIO | None
    active: bool
    priority: int
    exclusive: bool
    redeemed_count: int

    @classmethod
    def of(cls, coupon: Coupon) -> CouponOut:
        return cls(
            id=coupon.id,
            code=coupon.code,
            name=coupon.name,
            discount=benefit_out(coupon.benefit),
            starts_at=coupon.starts_at,
            ends_at=coupon.ends_at,
            max_redemptions=coupon.max_redemptions,
            max_redemptions_per_customer=coupon.max_redemptions_per_customer,
            minimum=MoneyIO.of(coupon.minimum) if coupon.minimum else None,
            active=coupon.active,
            priority=coupon.priority,
            exclusive=coupon.exclusive,
            redeemed_count=coupon.redeemed_count,
        )


class CouponPage(BaseModel):
    items: list[CouponOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


# --- policies ---------------------------------------------------------------------------


class TierIO(InputModel):
    minimum: DecimalString = Field(description="in the policy's currency; amount >= minimum")
    discount: DiscountIO


class PolicyDefinition(InputModel):
    """A user-type policy sets `customer_type` and `discount`; a threshold policy sets
    `currency` and `tiers` (only the highest tier the amount reaches applies)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "Premium customers 5%",
                    "kind": "user_type",
                    "customer_type": "premium",
                    "discount": {"type": "percent", "rate": "0.05"},
                    "priority": 50,
                    "exclusive": False,
                    "active": True,
                }
            ]
        },
    )

    name: str = Field(min_length=1, max_length=200, examples=["Premium customers 5%"])
    kind: Literal["user_type", "threshold"]
    customer_type: str | None = Field(default=None, max_length=64, examples=["premium"])
    discount: DiscountIO | None = None
    currency: Currency | None = None
    tiers: list[TierIO] | None = Field(default=None, min_length=1, max_length=50)
    priority: PriorityInt = Field(default=0, description="higher applies first")
    exclusive: StrictBool = False
    active: StrictBool = True
    starts_at: DateTimeText | None = None
    ends_at: DateTimeText | None = None

    @model_validator(mode="after")
    def _parameters_match_kind(self) -> PolicyDefinition:
        if self.kind == "user_type":
            if self.customer_type is None or self.discount is None:
                raise ValueError("a user_type policy needs customer_type and discount")
            if self.currency is not None or self.tiers is not None:
                raise ValueError("a user_type policy takes no currency or tiers")
        else:
            if self.currency is None or self.tiers is None:
                raise ValueError("a threshold policy needs currency and tiers")
            if self.customer_type is not None or self.discount is not None:
                raise ValueError("a threshold policy takes no customer_type or discount")
        return self

    def to_domain(self, key: str) -> DiscountPolicy:
        rule: PolicyRule
        if self.kind == "user_type":
            assert self.customer_type is not None and self.discount is not None
            rule = UserTypeRule(self.customer_type.strip().lower(), benefit_from(self.discount))
        else:
            assert self.currency is not None and self.tiers is not None
            rule = ThresholdRule(
                self.currency,
                tuple(
                    ThresholdTier(Money(tier.minimum, self.currency), benefit_from(tier.discount))
                    for tier in self.tiers
                ),
            )
        return DiscountPolicy(
            key=key,
            name=self.name.strip(),
            rule=rule,
            priority=self.priority,
            exclusive=self.exclusive,
            active=self.active,
            starts_at=self.starts_at.astimezone(UTC) if self.starts_at else None,
            ends_at=self.ends_at.astimezone(UTC) if self.ends_at else None,
        )


class PolicyOut(BaseModel):
    key: str
    name: str
    kind: Literal["user_type", "threshold"]
    customer_type: str | None
    discount: DiscountIO | None
    currency: str | None
    tiers: list[TierIO] | None
    priority: int
    exclusive: bool
    active: bool
    starts_at: datetime | None
    ends_at: datetime | None

    @classmethod
    def of(cls, policy: DiscountPolicy) -> PolicyOut:
        rule = policy.rule
        return cls(
            key=policy.key,
            name=policy.name,
            kind="user_type" if isinstance(rule, UserTypeRule) else "threshold",
            customer_type=rule.customer_type if isinstance(rule, UserTypeRule) else None,
            discount=benefit_out(rule.benefit) if isinstance(rule, UserTypeRule) else None,
            currency=rule.currency if isinstance(rule, ThresholdRule) else None,
            tiers=[
                TierIO(minimum=tier.minimum.amount, discount=benefit_out(tier.benefit))
                for tier in rule.tiers
            ]
            if isinstance(rule, ThresholdRule)
            else None,
            priority=policy.priority,
            exclusive=policy.exclusive,
            active=policy.active,
            starts_at=policy.starts_at,
            ends_at=policy.ends_at,
        )


class PolicyList(BaseModel):
    items: list[PolicyOut]


# --- stacking settings ------------------------------------------------------------------


class StackingIO(InputModel):
    max_fraction: CapFraction = Field(
        description="cap on the total discount as a fraction of the amount, 0 < f <= 1",
        examples=["0.50"],
    )
    max_amounts: dict[Currency, DecimalString] = Field(
        default_factory=dict,
        max_length=200,
        description="optional absolute cap per currency",
        examples=[{"EUR": "100.00"}],
    )

    def to_domain(self) -> StackingSettings:
        return StackingSettings(
            max_fraction=self.max_fraction,
            max_amounts=tuple(
                Money(amount, currency) for currency, amount in sorted(self.max_amounts.items())
            ),
        )

    @classmethod
    def of(cls, settings: StackingSettings) -> StackingIO:
        return cls(
            max_fraction=settings.max_fraction,
            max_amounts={cap.currency: cap.amount for cap in settings.max_amounts},
        )
