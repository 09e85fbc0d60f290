"""Use cases of the discount service. Each takes a unit of work (or a factory of them, where
it may need a second transaction), works for the uow's tenant, and commits or raises."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from billing_common.event_schemas import (
    DISCOUNT_APPLIED,
    DISCOUNT_RELEASED,
    AppliedDiscountData,
    DiscountApplied,
    DiscountReleased,
)
from billing_common.events import new_event
from discount_service.adapters.repository import IdempotencyKeyTaken, PolicyKeyTaken
from discount_service.domain.errors import (
    ConcurrentUpdate,
    CouponNotApplicable,
    CouponNotFound,
    IdempotencyKeyReused,
    PolicyNotFound,
    RedemptionNotFound,
)
from discount_service.domain.model import (
    Coupon,
    DiscountPolicy,
    DiscountRequest,
    DiscountResult,
    Redemption,
    RejectReason,
    StackingSettings,
    normalize_code,
)
from discount_service.domain.stacking import evaluate
from discount_service.service_layer.unit_of_work import DiscountUnitOfWork

EVENT_SOURCE = "/billing/discount"
UnitOfWorkFactory = Callable[[], DiscountUnitOfWork]


# --- coupons ----------------------------------------------------------------------------


async def create_coupon(uow: DiscountUnitOfWork, coupon: Coupon) -> Coupon:
    async with uow:
        stored = await uow.coupons.add(coupon)
        await uow.commit()
        return stored


async def get_coupon(uow: DiscountUnitOfWork, code: str) -> Coupon:
    async with uow:
        coupon = await uow.coupons.get(code)
        if coupon is None:
            raise CouponNotFound(code)
        return coupon


async def list_coupons(uow: DiscountUnitOfWork, *, limit: int, after: str | None) -> list[Coupon]:
    async with uow:
        return await uow.coupons.page(limit=limit, after=after)


async def replace_coupon(uow: DiscountUnitOfWork, coupon: Coupon) -> Coupon:
    """Replace the definition of the coupon with `coupon.code`; the redemption count stays."""
    async with uow:
        stored = await uow.coupons.replace(coupon)
        if stored is None:
            raise CouponNotFound(coupon.code)
        await uow.commit()
        return stored


async def delete_coupon(uow: DiscountUnitOfWork, code: str) -> None:
    async with uow:
        if not await uow.coupons.delete(code):
            raise CouponNotFound(code)
        await uow.commit()


# --- policies ---------------------------------------------------------------------------


async def put_policy(new_uow: UnitOfWorkFactory, policy: DiscountPolicy) -> bool:
    """Create or replace the policy with `policy.key`; True if it was created. Idempotent:
    putting the same policy twice leaves one policy with that definition."""
    for _ in range(2):
        async with new_uow() as uow:
            try:
                created = await uow.policies.upsert(policy)
            except PolicyKeyTaken:
                continue  # a concurrent PUT created it first: update that one
            await uow.commit()
            return created
    raise ConcurrentUpdate(f"policy {policy.key!r} is being changed concurrently; retry")


async def get_policy(uow: DiscountUnitOfWork, key: str) -> DiscountPolicy:
    async with uow:
        policy = await uow.policies.get(key)
        if policy is None:
            raise PolicyNotFound(key)
        return policy


async def list_policies(uow: DiscountUnitOfWork) -> list[DiscountPolicy]:
    async with uow:
        return await uow.policies.all()


async def delete_policy(uow: DiscountUnitOfWork, key: str) -> None:
    async with uow:
        if not await uow.policies.delete(key):
            raise PolicyNotFound(key)
        await uow.commit()


# --- stacking settings ------------------------------------------------------------------


async def get_stacking_settings(uow: DiscountUnitOfWork) -> StackingSettings:
    async with uow:
        return await uow.settings.get()


async def put_stacking_settings(
    uow: DiscountUnitOfWork, settings: StackingSettings
) -> StackingSettings:
    async with uow:
        await uow.settings.put(settings)
        await uow.commit()
        return settings


# --- quotes and redemptions -------------------------------------------------------------


async def _evaluate(
    uow: DiscountUnitOfWork, request: DiscountRequest, now: datetime
) -> tuple[DiscountResult, dict[str, Coupon]]:
    coupons = await uow.coupons.by_codes(request.coupon_codes)
    usage = await uow.coupons.customer_usage(
        (coupon.id for coupon in coupons.values()), request.customer_id
    )
    result = evaluate(
        request,
        coupons=coupons,
        customer_usage=usage,
        policies=await uow.policies.active(),
        settings=await uow.settings.get(),
        now=now,
    )
    return result, coupons


async def quote(uow: DiscountUnitOfWork, request: DiscountRequest, now: datetime) -> DiscountResult:
    """What would apply to `request` now. Reads only; nothing is counted or recorded."""
    async with uow:
        result, _ = await _evaluate(uow, request, now)
        return result


@dataclass(frozen=True)
class RedemptionOutcome:
    redemption: Redemption
    replayed: bool


def _replay(existing: Redemption, fingerprint: str, key: str) -> RedemptionOutcome:
    if existing.request_hash != fingerprint:
        raise IdempotencyKeyReused(key)
    return RedemptionOutcome(existing, replayed=True)


async def redeem(
    new_uow: UnitOfWorkFactory,
    request: DiscountRequest,
    *,
    idempotency_key: str,
    now: datetime,
) -> RedemptionOutcome:
    """Apply the discounts for `request` once per idempotency key.

    In one transaction: the redemption row claims the key (unique per tenant), each applied
    coupon's counters move by an atomic conditional UPDATE, the lines are stored and the
    event goes to the outbox. A key seen before answers with the stored redemption (or 409
    if the request differs); a coupon use that a concurrent request took first is a 422
    coupon-not-applicable, exactly as if that request had committed before this one began."""
    fingerprint = request.fingerprint()
    for _ in range(2):
        async with new_uow() as uow:
            existing = await uow.redemptions.by_key(idempotency_key)
            if existing is not None:
                return _replay(existing, fingerprint, idempotency_key)
            result, coupons = await _evaluate(uow, request, now)
            for rejection in result.rejected:
                if rejection.reason.blocks_redemption:
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
            try:
                await uow.redemptions.add(redemption)
            except IdempotencyKeyTaken:
                continue  # a concurrent request with this key committed first: replay it
            applied = sorted(
                (coupons[normalize_code(code)] for code in result.applied_coupon_codes()),
                key=lambda coupon: coupon.id,  # one lock order for every transaction
            )
            # A use taken by a concurrent redemption between the evaluation and the counter
            # update is the same situation the evaluation reports when that redemption
            # committed first: the same problem (422 coupon-not-applicable, same reason),
            # whichever of the two paths a database's concurrency control takes.
            for coupon in applied:
                if not await uow.coupons.try_count_redemption(coupon.id):
                    raise CouponNotApplicable(coupon.code, RejectReason.EXHAUSTED.value)
            for coupon in applied:
                if not await uow.coupons.try_count_customer_redemption(
                    coupon.id, request.customer_id, coupon.max_redemptions_per_customer
                ):
                    raise CouponNotApplicable(
                        coupon.code, RejectReason.CUSTOMER_LIMIT_REACHED.value
                    )
            uow.emit(
                new_event(
                    source=EVENT_SOURCE,
                    event_type=DISCOUNT_APPLIED,
                    data=_event_data(redemption),
                    subject=redemption.id,
                    tenant=uow.tenant,
                ),
                aggregate=f"redemption:{redemption.id}",
            )
            await uow.commit()
            return RedemptionOutcome(redemption, replayed=False)
    raise ConcurrentUpdate(f"idempotency key {idempotency_key!r} is in use concurrently; retry")


async def release(new_uow: UnitOfWorkFactory, *, idempotency_key: str) -> Redemption | None:
    """Give back the redemption made under `idempotency_key` (compensation: the invoice it
    was made for was never created). Its coupon uses count no more, the redemption is
    removed (so the key may redeem again) and billing.discount.released.v1 says so, all in
    one transaction. Releasing a key with no redemption changes nothing: idempotent."""
    async with new_uow() as uow:
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


def _event_data(redemption: Redemption) -> DiscountApplied:
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


async def get_redemption(uow: DiscountUnitOfWork, redemption_id: str) -> Redemption:
    async with uow:
        redemption = await uow.redemptions.get(redemption_id)
        if redemption is None:
            raise RedemptionNotFound(redemption_id)
        return redemption


async def list_redemptions(
    uow: DiscountUnitOfWork,
    *,
    limit: int,
    before: tuple[datetime, str] | None,
    customer_id: str | None,
) -> list[Redemption]:
    async with uow:
        return await uow.redemptions.page(limit=limit, before=before, customer_id=customer_id)


# --- samples ----------------------------------------------------------------------------


async def ensure_samples(
    new_uow: UnitOfWorkFactory,
    *,
    coupons: list[Coupon],
    policies: list[DiscountPolicy],
    settings: StackingSettings,
) -> int:
    """Add whichever sample coupons, policies and settings are missing; return how many.
    Existing records are left as they are, so running it again changes nothing."""
    added = 0
    async with new_uow() as uow:
        for coupon in coupons:
            if await uow.coupons.get(coupon.code) is None:
                await uow.coupons.add(replace(coupon, redeemed_count=0))
                added += 1
        for policy in policies:
            if await uow.policies.get(policy.key) is None:
                await uow.policies.upsert(policy)
                added += 1
        if not await uow.settings.exists():
            await uow.settings.put(settings)
            added += 1
        await uow.commit()
    return added
