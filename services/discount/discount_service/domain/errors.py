"""Domain exceptions. Each says its HTTP status; the class name becomes the problem type
(`CouponNotApplicable` -> `/problems/coupon-not-applicable`), and keyword arguments add
machine-readable members to the problem document (billing_common.errors)."""

from __future__ import annotations

from billing_common.errors import DomainError


class DiscountError(DomainError):
    """Base of every discount-domain error (422 unless it says otherwise)."""


class InvalidDiscount(DiscountError):
    """A percent or fixed amount that cannot be a discount (422)."""


class InvalidCoupon(DiscountError):
    """A coupon definition that breaks a rule (422)."""


class InvalidPolicy(DiscountError):
    """A discount policy definition that breaks a rule (422)."""


class InvalidStackingSettings(DiscountError):
    """A stacking cap outside its range (422)."""


class InvalidAmount(DiscountError):
    """An amount to discount that is negative or finer than the currency's minor unit (422)."""


class CouponNotFound(DiscountError):
    status = 404

    def __init__(self, code: str) -> None:
        super().__init__(f"no coupon with code {code!r}", code=code)


class PolicyNotFound(DiscountError):
    status = 404

    def __init__(self, key: str) -> None:
        super().__init__(f"no discount policy with key {key!r}", key=key)


class RedemptionNotFound(DiscountError):
    status = 404

    def __init__(self, redemption_id: str) -> None:
        super().__init__(f"no redemption with id {redemption_id!r}", id=redemption_id)


class DuplicateCouponCode(DiscountError):
    status = 409

    def __init__(self, code: str) -> None:
        super().__init__(
            f"a coupon with code {code!r} already exists (codes are case-insensitive)", code=code
        )


class CouponNotApplicable(DiscountError):
    """A redemption named a coupon that cannot apply to it (422), including one whose last
    use went to a concurrent redemption (`reason` exhausted or customer_limit_reached)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"coupon {code!r} cannot be applied: {reason}", code=code, reason=reason)


class IdempotencyKeyReused(DiscountError):
    """The Idempotency-Key was used before with a different request (409)."""

    status = 409

    def __init__(self, key: str) -> None:
        super().__init__(
            "this Idempotency-Key was already used with a different request; "
            "send a new key for a new redemption",
            idempotency_key=key,
        )


class ConcurrentUpdate(DiscountError):
    """Two writers raced on the same record and this one lost; retrying is safe (409)."""

    status = 409
