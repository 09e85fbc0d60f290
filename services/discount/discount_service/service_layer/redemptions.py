"""Redemptions: applying a request's discounts exactly once per idempotency key, giving a
redemption back (compensation), and the redemption history."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from billing_common.event_schemas import (
    DISCOUNT_APPLIED,
    DISCOUNT_RELEASED,
    AppliedDiscountData,
    DiscountApplied,
    DiscountReleased,
)
from billing_common.events import new_event
from discount_service.domain.errors import (
    ConcurrentUpdate,
    CouponNotApplicable,
    IdempotencyKeyReused,
    RedemptionNotFound,
)
from discount_service.domain.model import (
    DiscountRequest,
    Redemption,
    normalize_code,
)
from discount_service.service_layer.dependencies import Dependencies
from discount_service.service_layer.ports import (
    IdempotencyKeyTaken,
    RedemptionQuery,
)
from discount_service.service_layer.quotes import evaluate_in

EVENT_SOURCE = "/billing/discount"


@dataclass(frozen=True)
class RedemptionOutcome:
    redemption: Redemption
    replayed: bool


def _replay(existing: Redemption, fingerprint: str, key: str) -> RedemptionOutcome:
    if existing.request_hash != fingerprint:
        raise IdempotencyKeyReused(key)
    return RedemptionOutcome(existing, replayed=True)


async def redeem(
    tenant: str, request: DiscountRequest, idempotency_key: str, deps: Dependencies
) -> RedemptionOutcome:
    """Apply the discounts for `request` once per idempotency key.

    In one transaction: the redemption row claims the key (unique per tenant), each applied
    coupon's counters move by an atomic conditional UPDATE, the lines are stored and the
    event goes to the outbox. A key seen before answers with the stored redemption (or 409
    if the request differs), found when its claim fails or when the request cannot apply;
    a coupon use that a concurrent request took first is a 422
    coupon-not-applicable, exactly as if that request had committed before this one began."""
    fingerprint = request.fingerprint()
    now = deps.clock()
    for attempt in range(2):
        async with deps.uow(tenant) as uow:
            # A key is mostly new: storing the redemption is what finds out it is not (the
            # claim is the INSERT), and the key's redemption is read only then (the second
            # attempt) or when this request cannot apply now, where a used key still
            # answers as it did.
            if attempt:
                existing = await uow.redemptions.by_key(idempotency_key)
                if existing is not None:
                    return _replay(existing, fingerprint, idempotency_key)
            result, coupons = await evaluate_in(uow, request, now)
            for rejection in result.rejected:
                if rejection.reason.blocks_redemption:
                    existing = await uow.redemptions.by_key(idempotency_key)
                    if existing is not None:
                        return _replay(existing, fingerprint, idempotency_key)
                    raise CouponNotApplicable(rejection.code, rejection.reason.value)
            redemption = Redemption(
                id=str(uuid.uuid4()),
                idempotency_key=idempotency_key,
                request_hash=fingerprint,
                customer_id=request.customer_id,
                customer_type=request.customer_type,
                reference=request.reference,
                result=result,
                created_at=now,
            )
            # The event belongs to this transaction whenever it is emitted; emitted before
            # the rows are stored, a unit of work may write it with them (one statement).
            uow.emit(
                new_event(
                    source=EVENT_SOURCE,
                    event_type=DISCOUNT_APPLIED,
                    data=_applied_data(redemption),
                    subject=redemption.id,
                    tenant=uow.tenant,
                ),
                aggregate=f"redemption:{redemption.id}",
            )
            applied = sorted(
                (coupons[normalize_code(code)] for code in result.applied_coupon_codes()),
                key=lambda coupon: coupon.id,  # one lock order for every transaction
            )
            # The redemption claims its key first; then each applied coupon's use counts.
            # A use taken by a concurrent redemption between the evaluation and the counter
            # update is the same situation the evaluation reports when that redemption
            # committed first: the same problem (422 coupon-not-applicable, same reason),
            # whichever of the two paths a database's concurrency control takes.
            try:
                refused = await uow.add_redemption(redemption, applied)
            except IdempotencyKeyTaken:
                continue  # a concurrent request with this key committed first: replay it
            if refused is not None:
                coupon, reason = refused
                raise CouponNotApplicable(coupon.code, reason.value)
            await uow.commit()
            return RedemptionOutcome(redemption, replayed=False)
    raise ConcurrentUpdate(f"idempotency key {idempotency_key!r} is in use concurrently; retry")


async def release(tenant: str, idempotency_key: str, deps: Dependencies) -> Redemption | None:
    """Give back the redemption made under `idempotency_key` (compensation: the invoice it
    was made for was never created). Its coupon uses count no more, the redemption is
    removed (so the key may redeem again) and billing.discount.released.v1 says so, all in
    one transaction. Releasing a key with no redemption changes nothing: idempotent."""
    async with deps.uow(tenant) as uow:
        redemption = await uow.redemptions.by_key(idempotency_key, for_update=True)
        if redemption is None:
            return None
        codes = redemption.result.applied_coupon_codes()
        coupons = await uow.coupons.by_codes(codes)
        # Coupon-id order, as when counting: no deadlock with a concurrent redemption.
        for coupon in sorted(coupons.values(), key=lambda coupon: coupon.id):
            await uow.coupons.uncount_redemption(coupon.id, redemption.customer_id)
        await uow.redemptions.remove(redemption.id)
        uow.emit(
            new_event(
                source=EVENT_SOURCE,
                event_type=DISCOUNT_RELEASED,
                data=DiscountReleased(
                    redemption_id=redemption.id,
                    customer_id=redemption.customer_id,
                    currency=redemption.result.currency,
                    total_discount=redemption.result.total_discount.amount,
                    coupon_codes=list(codes),
                    reference=redemption.reference,
                ),
                subject=redemption.id,
                tenant=uow.tenant,
            ),
            aggregate=f"redemption:{redemption.id}",
        )
        await uow.commit()
        return redemption


def _applied_data(redemption: Redemption) -> DiscountApplied:
    result = redemption.result
    return DiscountApplied(
        redemption_id=redemption.id,
        customer_id=redemption.customer_id,
        currency=result.currency,
        amount_before=result.amount.amount,
        total_discount=result.total_discount.amount,
        applied=[
            AppliedDiscountData(
                kind=line.kind.value, name=line.name, amount=line.amount.amount, code=line.code
            )
            for line in result.applied
        ],
        reference=redemption.reference,
    )


# --- history ----------------------------------------------------------------------------


async def get_redemption(tenant: str, redemption_id: str, deps: Dependencies) -> Redemption:
    async with deps.uow(tenant) as uow:
        redemption = await uow.redemptions.get(redemption_id)
        if redemption is None:
            raise RedemptionNotFound(redemption_id)
        return redemption


async def list_redemptions(
    tenant: str, query: RedemptionQuery, deps: Dependencies
) -> list[Redemption]:
    async with deps.uow(tenant) as uow:
        return await uow.redemptions.page(query)
