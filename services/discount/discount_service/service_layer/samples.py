"""Loading the sample set (discount_service.samples) for a tenant, idempotently."""

from __future__ import annotations

from dataclasses import replace

from discount_service.domain.model import Coupon, DiscountPolicy, StackingSettings
from discount_service.service_layer.dependencies import Dependencies


async def ensure_samples(
    tenant: str,
    deps: Dependencies,
    *,
    coupons: list[Coupon],
    policies: list[DiscountPolicy],
    settings: StackingSettings,
) -> int:
    """Add whichever sample coupons, policies and settings are missing; return how many.
    Existing records are left as they are, so running it again changes nothing."""
    added = 0
    async with deps.uow(tenant) as uow:
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
