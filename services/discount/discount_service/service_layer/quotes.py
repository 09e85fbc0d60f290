"""What discounts apply to a request: the quote (read only), and the evaluation that a
redemption repeats inside its own transaction."""

from __future__ import annotations

from datetime import datetime

from discount_service.domain.model import Coupon, DiscountRequest, DiscountResult
from discount_service.domain.stacking import evaluate
from discount_service.service_layer.dependencies import Dependencies
from discount_service.service_layer.ports import EvaluationReads, ReadViewFactory


async def evaluate_in(
    uow: EvaluationReads, request: DiscountRequest, now: datetime
) -> tuple[DiscountResult, dict[str, Coupon]]:
    """Evaluate `request` at `now` against what `uow` reads; also the coupons it found,
    by normalised code."""
    found = await uow.coupons.for_customer(request.coupon_codes, request.customer_id)
    result = evaluate(
        request,
        coupons=found.coupons,
        customer_usage=found.usage,
        policies=await uow.policies.active(),
        settings=await uow.settings.get(),
        now=now,
    )
    return result, found.coupons


async def quote(tenant: str, request: DiscountRequest, deps: Dependencies) -> DiscountResult:
    """What would apply to `request` now. Reads only; nothing is counted or recorded: a
    read view where the adapters offer one (no transaction to open and roll back), else a
    unit of work."""
    views: ReadViewFactory = deps.reads or deps.uow
    async with views(tenant) as view:
        result, _ = await evaluate_in(view, request, deps.clock())
        return result
