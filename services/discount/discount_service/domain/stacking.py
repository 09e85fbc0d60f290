"""The stacking policy: which discounts apply to a request, in which order, for how much.

1. Every coupon named in the request is checked (`Coupon.rejection`); the ones that cannot
   apply are rejected with their reason. Every active policy that matches the customer type
   or the amount's tier becomes a candidate too.
2. Candidates are ordered by priority (higher first), then kind (coupon, user_type,
   threshold), then code/key.
3. Options: the stack of all non-exclusive candidates, and each exclusive candidate alone.
   Each option is applied sequentially: a percent takes its rate of what remains after the
   discounts before it, a fixed amount takes at most what remains; each line is rounded
   ROUND_HALF_UP to the minor unit and clipped to the cap left (`StackingSettings.cap_for`).
4. The option with the largest total discount wins; on a tie the non-exclusive stack wins,
   then the exclusive that comes first in the order.
5. Coupons outside the winning option are rejected as `not_combinable`; lines that took
   nothing are dropped (coupons among them rejected as `no_effect`, as are all coupons when
   no option takes anything).

The total therefore never exceeds the amount or the cap, is never negative, and
amount_after == amount - total_discount exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal

from billing_common.money import Money
from discount_service.domain.model import (
    AppliedDiscount,
    Candidate,
    Coupon,
    DiscountPolicy,
    DiscountRequest,
    DiscountResult,
    Rejection,
    RejectReason,
    StackingSettings,
    normalize_code,
)

_ZERO = Decimal(0)


def apply_sequentially(
    amount: Money, candidates: Sequence[Candidate], cap: Money
) -> list[tuple[Candidate, Money]]:
    """Apply `candidates` in the given order on the remaining amount, within `cap`."""
    remaining = amount
    room = cap
    lines: list[tuple[Candidate, Money]] = []
    for candidate in candidates:
        taken = candidate.benefit.discount_on(remaining).min(room)
        lines.append((candidate, taken))
        remaining -= taken
        room -= taken
    return lines


def _total(lines: Iterable[tuple[Candidate, Money]]) -> Decimal:
    # Every line is in the request's currency (taken from what remains of its amount).
    return sum((taken.amount for _, taken in lines), _ZERO)


def evaluate(
    request: DiscountRequest,
    *,
    coupons: Mapping[str, Coupon],
    customer_usage: Mapping[str, int],
    policies: Iterable[DiscountPolicy],
    settings: StackingSettings,
    now: datetime,
) -> DiscountResult:
    """What applies to `request` at `now`.

    `coupons` maps normalised codes to the tenant's coupons (those the request names);
    `customer_usage` maps coupon ids to how often this customer redeemed each."""
    amount = request.amount
    rejected: dict[str, RejectReason] = {}
    candidates: list[Candidate] = []
    for code in request.coupon_codes:
        coupon = coupons.get(normalize_code(code))
        if coupon is None:
            rejected[code] = RejectReason.UNKNOWN
            continue
        reason = coupon.rejection(amount, now, customer_usage.get(coupon.id, 0))
        if reason is not None:
            rejected[code] = reason
            continue
        candidates.append(coupon.candidate())
    for policy in policies:
        offered = policy.candidate(request, now)
        if offered is not None:
            candidates.append(offered)
    candidates.sort(key=lambda c: c.order)

    cap = settings.cap_for(amount)
    stacked = [c for c in candidates if not c.exclusive]
    options = [apply_sequentially(amount, stacked, cap)]
    options += [apply_sequentially(amount, [c], cap) for c in candidates if c.exclusive]
    totals = [_total(lines) for lines in options]
    # max() keeps the first of equal totals: the stack, then exclusives in order.
    chosen_option = max(range(len(options)), key=totals.__getitem__)
    best = options[chosen_option]

    chosen = {id(candidate) for candidate, _ in best}
    typed_codes = {normalize_code(code): code for code in request.coupon_codes}
    # When even the best option takes nothing, no coupon lost to another: none had an effect.
    outranked = (
        RejectReason.NO_EFFECT if totals[chosen_option] == 0 else RejectReason.NOT_COMBINABLE
    )
    for candidate in candidates:
        if candidate.code is not None and id(candidate) not in chosen:
            rejected[typed_codes[candidate.sort_key]] = outranked
    applied: list[AppliedDiscount] = []
    for candidate, taken in best:
        if taken.is_zero:
            if candidate.code is not None:
                rejected[typed_codes[candidate.sort_key]] = RejectReason.NO_EFFECT
            continue
        applied.append(AppliedDiscount(candidate.kind, candidate.code, candidate.name, taken))
    return DiscountResult(
        amount=amount,
        applied=tuple(applied),
        # Rejections in the order the request named the codes.
        rejected=tuple(
            Rejection(code, rejected[code]) for code in request.coupon_codes if code in rejected
        ),
    )
