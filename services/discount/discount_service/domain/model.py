"""Discount domain model: benefits, coupons, discount policies, stacking settings, requests,
results and redemptions. Pure: dataclasses, Decimal and billing_common.money only.

Conventions:
- A percent discount is a Decimal *fraction* `rate` with 0 < rate <= 1 (0.10 is 10 %), like
  the tax service's rates.
- Every amount of money is on its currency's minor-unit grid (no "10.001 EUR").
- Times are timezone-aware; a validity window is half-open: starts_at <= now < ends_at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Final

from billing_common.idempotency import request_fingerprint
from billing_common.money import Money, check_currency, format_amount, quantum
from discount_service.domain.errors import (
    InvalidAmount,
    InvalidCoupon,
    InvalidDiscount,
    InvalidPolicy,
    InvalidStackingSettings,
)

CODE_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
POLICY_KEY_PATTERN: Final = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"
CUSTOMER_TYPE_PATTERN: Final = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Rates finer than a millionth are a typo, not a pricing decision.
MAX_RATE_DECIMALS: Final = 6
_ONE: Final = Decimal(1)
_ZERO: Final = Decimal(0)


class DiscountKind(StrEnum):
    COUPON = "coupon"
    USER_TYPE = "user_type"
    THRESHOLD = "threshold"


# Among discounts of equal priority, coupons go first, then user-type, then threshold.
KIND_ORDER: Final = {DiscountKind.COUPON: 0, DiscountKind.USER_TYPE: 1, DiscountKind.THRESHOLD: 2}


class RejectReason(StrEnum):
    UNKNOWN = "unknown"
    INACTIVE = "inactive"
    NOT_STARTED = "not_started"
    EXPIRED = "expired"
    EXHAUSTED = "exhausted"
    CUSTOMER_LIMIT_REACHED = "customer_limit_reached"
    BELOW_MINIMUM = "below_minimum"
    CURRENCY_MISMATCH = "currency_mismatch"
    # Valid, but an exclusive discount giving more was chosen instead (or vice versa).
    NOT_COMBINABLE = "not_combinable"
    # Valid, but it would take nothing off (the cap was reached, or nothing was left).
    NO_EFFECT = "no_effect"

    @property
    def blocks_redemption(self) -> bool:
        """A coupon that cannot apply at all fails a redemption; one that was merely
        outranked or had no effect does not (the customer got the better deal)."""
        return self not in (RejectReason.NOT_COMBINABLE, RejectReason.NO_EFFECT)


def normalize_code(code: str) -> str:
    """Coupon codes are case-insensitive: 'welcome10' and 'WELCOME10' are one coupon."""
    return code.strip().upper()


def check_on_grid(money: Money, what: str) -> Money:
    if money.amount != money.amount.quantize(quantum(money.currency)):
        raise InvalidAmount(
            f"{what} {format_amount(money.amount)} has more decimals than {money.currency} allows"
        )
    return money.rounded()


def _check_window(
    starts_at: datetime | None, ends_at: datetime | None, error: type[InvalidCoupon | InvalidPolicy]
) -> None:
    for moment in (starts_at, ends_at):
        if moment is not None and moment.utcoffset() is None:
            raise error("validity times need a timezone (e.g. 2026-01-01T00:00:00Z)")
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise error("ends_at must be after starts_at")


def _in_window(now: datetime, starts_at: datetime | None, ends_at: datetime | None) -> bool:
    return (starts_at is None or starts_at <= now) and (ends_at is None or now < ends_at)


# --- benefits ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PercentOff:
    """`rate` of the amount it applies to, rounded ROUND_HALF_UP to the minor unit."""

    rate: Decimal

    def __post_init__(self) -> None:
        if not isinstance(self.rate, Decimal) or not self.rate.is_finite():
            raise InvalidDiscount("a percent discount needs a decimal rate")
        if not _ZERO < self.rate <= _ONE:
            raise InvalidDiscount(
                f"rate {self.rate} is outside 0 < rate <= 1 (a fraction: 0.10 is 10 %)"
            )
        exponent = self.rate.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > MAX_RATE_DECIMALS:
            raise InvalidDiscount(f"rate {self.rate} has more than {MAX_RATE_DECIMALS} decimals")

    def applies_to(self, currency: str) -> bool:
        return True

    def discount_on(self, remaining: Money) -> Money:
        return (remaining * self.rate).rounded(ROUND_HALF_UP).min(remaining)


@dataclass(frozen=True, slots=True)
class AmountOff:
    """A fixed amount, only in its own currency, never more than what remains."""

    amount: Money

    def __post_init__(self) -> None:
        check_on_grid(self.amount, "a fixed discount")
        if self.amount.amount <= 0:
            raise InvalidDiscount("a fixed discount must be greater than zero")

    def applies_to(self, currency: str) -> bool:
        return self.amount.currency == currency

    def discount_on(self, remaining: Money) -> Money:
        return self.amount.min(remaining)


Benefit = PercentOff | AmountOff


def describe(benefit: Benefit) -> str:
    if isinstance(benefit, PercentOff):
        return f"{format_amount((benefit.rate * 100).normalize())} %"
    return str(benefit.amount)


# --- coupons ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Coupon:
    id: str
    code: str
    name: str
    benefit: Benefit
    # None: no lower bound (valid from any time), so a coupon given only an end is valid now.
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    max_redemptions: int | None = None
    max_redemptions_per_customer: int | None = None
    minimum: Money | None = None
    active: bool = True
    priority: int = 0
    exclusive: bool = False
    redeemed_count: int = 0

    def __post_init__(self) -> None:
        if not re.fullmatch(CODE_PATTERN, self.code):
            raise InvalidCoupon(
                f"coupon code {self.code!r} must be 1-64 letters, digits, '_' or '-'"
            )
        if not self.name.strip():
            raise InvalidCoupon("a coupon needs a name")
        _check_window(self.starts_at, self.ends_at, InvalidCoupon)
        for limit, label in (
            (self.max_redemptions, "max_redemptions"),
            (self.max_redemptions_per_customer, "max_redemptions_per_customer"),
        ):
            if limit is not None and limit < 1:
                raise InvalidCoupon(f"{label} must be at least 1 (or absent for no limit)")
        if self.minimum is not None:
            check_on_grid(self.minimum, "the minimum amount")
            if self.minimum.is_negative:
                raise InvalidCoupon("the minimum amount cannot be negative")
            if isinstance(self.benefit, AmountOff) and (
                self.minimum.currency != self.benefit.amount.currency
            ):
                raise InvalidCoupon("a fixed coupon's minimum must be in the coupon's currency")
        if self.redeemed_count < 0:
            raise InvalidCoupon("redeemed_count cannot be negative")

    @property
    def key(self) -> str:
        return normalize_code(self.code)

    def with_redeemed_count(self, redeemed_count: int) -> Coupon:
        """This coupon with the counter `redeemed_count` (a cached definition with the live
        counter). Only the counter is checked: the definition was when it was made."""
        if redeemed_count == self.redeemed_count:
            return self
        if redeemed_count < 0:
            raise InvalidCoupon("redeemed_count cannot be negative")
        counted = object.__new__(Coupon)
        for name in Coupon.__slots__:
            object.__setattr__(counted, name, getattr(self, name))
        object.__setattr__(counted, "redeemed_count", redeemed_count)
        return counted

    def rejection(
        self, amount: Money, now: datetime, customer_redemptions: int
    ) -> RejectReason | None:
        """Why this coupon cannot apply to `amount` for a customer who redeemed it
        `customer_redemptions` times, or None. The first failing rule is the reason."""
        if not self.active:
            return RejectReason.INACTIVE
        if self.starts_at is not None and now < self.starts_at:
            return RejectReason.NOT_STARTED
        if self.ends_at is not None and now >= self.ends_at:
            return RejectReason.EXPIRED
        if self.max_redemptions is not None and self.redeemed_count >= self.max_redemptions:
            return RejectReason.EXHAUSTED
        if (
            self.max_redemptions_per_customer is not None
            and customer_redemptions >= self.max_redemptions_per_customer
        ):
            return RejectReason.CUSTOMER_LIMIT_REACHED
        if not self.benefit.applies_to(amount.currency) or (
            self.minimum is not None and self.minimum.currency != amount.currency
        ):
            return RejectReason.CURRENCY_MISMATCH
        if self.minimum is not None and amount < self.minimum:
            return RejectReason.BELOW_MINIMUM
        return None

    def candidate(self) -> Candidate:
        return Candidate(
            kind=DiscountKind.COUPON,
            code=self.code,
            sort_key=self.key,
            name=self.name,
            benefit=self.benefit,
            priority=self.priority,
            exclusive=self.exclusive,
        )


# --- policies ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserTypeRule:
    customer_type: str
    benefit: Benefit

    def __post_init__(self) -> None:
        if not re.fullmatch(CUSTOMER_TYPE_PATTERN, self.customer_type):
            raise InvalidPolicy(
                f"customer type {self.customer_type!r} must be 1-64 lowercase letters, "
                "digits, '_' or '-'"
            )


@dataclass(frozen=True, slots=True)
class ThresholdTier:
    minimum: Money
    benefit: Benefit


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """Tiers in one currency; only the highest tier the amount reaches applies. The amount
    compared is the amount before any discount."""

    currency: str
    tiers: tuple[ThresholdTier, ...]

    def __post_init__(self) -> None:
        currency = check_currency(self.currency)
        if not self.tiers:
            raise InvalidPolicy("a threshold policy needs at least one tier")
        minimums = [tier.minimum for tier in self.tiers]
        if any(m.currency != currency for m in minimums):
            raise InvalidPolicy(f"every tier minimum must be in {currency}")
        if len({m.amount for m in minimums}) != len(minimums):
            raise InvalidPolicy("two tiers have the same minimum")
        for tier in self.tiers:
            check_on_grid(tier.minimum, "a tier minimum")
            if tier.minimum.amount <= 0:
                raise InvalidPolicy("a tier minimum must be greater than zero")
            if not tier.benefit.applies_to(currency):
                raise InvalidPolicy(f"a fixed tier discount must be in {currency}")

    def tier_for(self, amount: Money) -> ThresholdTier | None:
        if amount.currency != self.currency:
            return None
        reached = [tier for tier in self.tiers if amount >= tier.minimum]
        return max(reached, key=lambda tier: tier.minimum.amount, default=None)


PolicyRule = UserTypeRule | ThresholdRule


@dataclass(frozen=True, slots=True)
class DiscountPolicy:
    """A user-type or threshold discount, addressed by a stable `key` (the name of the
    DiscountPolicy custom resource the operator reconciles)."""

    key: str
    name: str
    rule: PolicyRule
    priority: int = 0
    exclusive: bool = False
    active: bool = True
    starts_at: datetime | None = None
    ends_at: datetime | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(POLICY_KEY_PATTERN, self.key):
            raise InvalidPolicy(
                f"policy key {self.key!r} must be a lowercase DNS-style name "
                "(letters, digits, '-' and '.', at most 253 characters)"
            )
        if not self.name.strip():
            raise InvalidPolicy("a discount policy needs a name")
        _check_window(self.starts_at, self.ends_at, InvalidPolicy)

    @property
    def kind(self) -> DiscountKind:
        return (
            DiscountKind.USER_TYPE
            if isinstance(self.rule, UserTypeRule)
            else DiscountKind.THRESHOLD
        )

    def candidate(self, request: DiscountRequest, now: datetime) -> Candidate | None:
        """The discount this policy offers `request`, or None if it does not apply."""
        if not self.active or not _in_window(now, self.starts_at, self.ends_at):
            return None
        name = self.name
        if isinstance(self.rule, UserTypeRule):
            if request.customer_type != self.rule.customer_type:
                return None
            benefit = self.rule.benefit
        else:
            tier = self.rule.tier_for(request.amount)
            if tier is None:
                return None
            benefit = tier.benefit
            if len(self.rule.tiers) > 1:
                name = f"{self.name} (from {tier.minimum})"
        if not benefit.applies_to(request.amount.currency):
            return None
        return Candidate(
            kind=self.kind,
            code=None,
            sort_key=self.key,
            name=name,
            benefit=benefit,
            priority=self.priority,
            exclusive=self.exclusive,
        )


# --- stacking settings ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StackingSettings:
    """Tenant-wide cap on the total discount: at most `max_fraction` of the amount (rounded
    down to the minor unit, so the cap itself never exceeds the fraction) and, where set,
    at most the absolute amount for the request's currency."""

    max_fraction: Decimal = _ONE
    max_amounts: tuple[Money, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.max_fraction, Decimal) or not _ZERO < self.max_fraction <= _ONE:
            raise InvalidStackingSettings("max_fraction must be a fraction with 0 < f <= 1")
        currencies = [cap.currency for cap in self.max_amounts]
        if len(set(currencies)) != len(currencies):
            raise InvalidStackingSettings("one absolute cap per currency")
        for cap in self.max_amounts:
            check_on_grid(cap, "an absolute cap")
            if cap.is_negative:
                raise InvalidStackingSettings("an absolute cap cannot be negative")

    def cap_for(self, amount: Money) -> Money:
        cap = Money(
            (amount.amount * self.max_fraction).quantize(
                quantum(amount.currency), rounding="ROUND_DOWN"
            ),
            amount.currency,
        )
        for absolute in self.max_amounts:
            if absolute.currency == amount.currency:
                cap = cap.min(absolute)
        return cap.min(amount)


# --- requests and results ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiscountRequest:
    customer_id: str
    amount: Money
    customer_type: str | None = None
    coupon_codes: tuple[str, ...] = ()
    reference: str | None = None

    def __post_init__(self) -> None:
        if not self.customer_id.strip():
            raise InvalidAmount("a discount request needs a customer id")
        object.__setattr__(self, "amount", check_on_grid(self.amount, "the amount"))
        if self.amount.is_negative:
            raise InvalidAmount("the amount to discount cannot be negative")
        if self.customer_type is not None:
            object.__setattr__(self, "customer_type", self.customer_type.strip().lower())
        # A code named twice is one coupon: it must never be counted twice.
        seen: dict[str, str] = {}
        for code in self.coupon_codes:
            seen.setdefault(normalize_code(code), code.strip())
        object.__setattr__(self, "coupon_codes", tuple(seen.values()))

    @property
    def coupon_keys(self) -> tuple[str, ...]:
        return tuple(normalize_code(code) for code in self.coupon_codes)

    def fingerprint(self) -> str:
        """SHA-256 of the request's canonical form: two requests with equal fingerprints
        ask for the same thing ('200.0' and '200.00', 'welcome10' and 'WELCOME10')."""
        canonical = {
            "customer_id": self.customer_id,
            "customer_type": self.customer_type,
            "currency": self.amount.currency,
            "amount": format_amount(self.amount.amount),
            "coupon_codes": list(self.coupon_keys),
            "reference": self.reference,
        }
        return request_fingerprint(canonical)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A discount that may apply, before stacking decides."""

    kind: DiscountKind
    code: str | None
    sort_key: str
    name: str
    benefit: Benefit
    priority: int
    exclusive: bool

    @property
    def order(self) -> tuple[int, int, str]:
        # Higher priority first; ties by kind, then by code/key so the order is total.
        return (-self.priority, KIND_ORDER[self.kind], self.sort_key)


@dataclass(frozen=True, slots=True)
class AppliedDiscount:
    kind: DiscountKind
    code: str | None
    name: str
    amount: Money


@dataclass(frozen=True, slots=True)
class Rejection:
    code: str
    reason: RejectReason


@dataclass(frozen=True, slots=True)
class DiscountResult:
    amount: Money
    applied: tuple[AppliedDiscount, ...]
    rejected: tuple[Rejection, ...]
    total_discount: Money = field(init=False)
    amount_after: Money = field(init=False)

    def __post_init__(self) -> None:
        total = Money.zero(self.amount.currency).rounded()  # "0.00", not "0"
        for line in self.applied:
            total += line.amount
        if total.is_negative or total > self.amount:
            raise ValueError(f"a total discount of {total} is outside 0..{self.amount}")
        object.__setattr__(self, "total_discount", total)
        object.__setattr__(self, "amount_after", self.amount - total)

    @property
    def currency(self) -> str:
        return self.amount.currency

    def applied_coupon_codes(self) -> tuple[str, ...]:
        return tuple(line.code for line in self.applied if line.code is not None)


@dataclass(frozen=True, slots=True)
class Redemption:
    """One application of discounts, kept in history."""

    id: str
    idempotency_key: str
    request_hash: str
    customer_id: str
    customer_type: str | None
    reference: str | None
    result: DiscountResult
    created_at: datetime
