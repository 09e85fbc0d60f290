"""One use of a coupon counted in SQL: the overall counter, then the customer's, as CTEs.

The redemption's hot path runs them in its own statement after its claim, and the coupon
repository on their own; one text for both, so the two never count differently."""

from __future__ import annotations

from discount_service.domain.model import Coupon, RejectReason


def count_use_ctes(
    tenant: str, coupon: str, customer: str, limit: str, *, only_if: str | None = None
) -> list[str]:
    """The `counted` and `customer` CTEs of one coupon's use; the arguments are parameter
    placeholders (`$n`), never values. `customer` moves only if `counted` did, in that order
    and with the same row locks as the two single statements; `only_if`, a condition that
    must hold for anything to count (a claim's CTE having written its row)."""
    guard = f" AND {only_if}" if only_if else ""
    # Only placeholders and the caller's fixed condition are formatted in; values are
    # parameters.
    return [
        "counted AS (UPDATE discount_coupons SET redeemed_count = redeemed_count + 1"  # noqa: S608
        f" WHERE tenant_id = {tenant} AND id = {coupon}"
        " AND (max_redemptions IS NULL OR redeemed_count < max_redemptions)"
        f"{guard} RETURNING tenant_id, id)",
        "customer AS (INSERT INTO discount_coupon_usage"  # noqa: S608
        " (tenant_id, coupon_id, customer_id, redeemed_count)"
        f" SELECT tenant_id, id, {customer}::varchar, 1 FROM counted"
        " ON CONFLICT (tenant_id, coupon_id, customer_id) DO UPDATE"
        " SET redeemed_count = discount_coupon_usage.redeemed_count + 1"
        f" WHERE {limit}::integer IS NULL"
        f" OR discount_coupon_usage.redeemed_count < {limit}::integer"
        " RETURNING redeemed_count)",
    ]


# What the statement selects after the CTEs: whether each counter moved.
COUNTED_COLUMNS = "EXISTS (SELECT FROM counted), EXISTS (SELECT FROM customer)"


def use_refused(
    coupon: Coupon, counted: bool, customer_counted: bool
) -> tuple[Coupon, RejectReason] | None:
    """Why a use of `coupon` was refused, from whether each counter moved; None if both did."""
    if not counted:
        return coupon, RejectReason.EXHAUSTED
    if not customer_counted:
        return coupon, RejectReason.CUSTOMER_LIMIT_REACHED
    return None
