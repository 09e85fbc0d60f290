"""Use cases on a tenant's coupons (admin). A coupon's redemption counter moves only through
redemptions (see redemptions.py); replacing a coupon keeps it."""

from __future__ import annotations

from discount_service.domain.errors import CouponNotFound
from discount_service.domain.model import Coupon
from discount_service.service_layer.dependencies import Dependencies
from discount_service.service_layer.ports import CouponQuery


async def create_coupon(tenant: str, coupon: Coupon, deps: Dependencies) -> Coupon:
    async with deps.uow(tenant) as uow:
        stored = await uow.coupons.add(coupon)
        await uow.commit()
        return stored


async def get_coupon(tenant: str, code: str, deps: Dependencies) -> Coupon:
    async with deps.uow(tenant) as uow:
        coupon = await uow.coupons.get(code)
        if coupon is None:
            raise CouponNotFound(code)
        return coupon


async def list_coupons(tenant: str, query: CouponQuery, deps: Dependencies) -> list[Coupon]:
    async with deps.uow(tenant) as uow:
        return await uow.coupons.page(query)


async def replace_coupon(tenant: str, coupon: Coupon, deps: Dependencies) -> Coupon:
    """Replace the definition of the coupon with `coupon.code`; the redemption count stays."""
    async with deps.uow(tenant) as uow:
        stored = await uow.coupons.replace(coupon)
        if stored is None:
            raise CouponNotFound(coupon.code)
        await uow.commit()
        return stored


async def delete_coupon(tenant: str, code: str, deps: Dependencies) -> None:
    async with deps.uow(tenant) as uow:
        if not await uow.coupons.delete(code):
            raise CouponNotFound(code)
        await uow.commit()
