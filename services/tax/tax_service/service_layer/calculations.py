"""Use cases of the tax calculations and their history: each runs in one transaction of
one tenant."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from billing_common.event_schemas import TAX_CALCULATED, TaxCalculated
from billing_common.events import new_event
from tax_service.domain import calculator, vat_treatment
from tax_service.domain.errors import CalculationNotFound, TaxError
from tax_service.domain.model import CalculationRequest, TaxCalculation, VatIdCheck
from tax_service.service_layer.dependencies import Dependencies
from tax_service.service_layer.ports import CalculationPosition, CalculationQuery, StaleRules

EVENT_SOURCE = "/billing/tax"


async def calculate(
    tenant: str,
    request: CalculationRequest,
    deps: Dependencies,
    *,
    now: datetime | None = None,
) -> TaxCalculation:
    """Tax the request with the tenant's rules, store it in the history and publish
    `billing.tax.calculated.v1`, all in one transaction. `now` (default: the clock) is the
    instant the caller dated the request with, so the two never disagree.

    The rules are first taken as the repository holds them, unconfirmed (on PostgreSQL the
    write itself then checks the tenant's rules version: one round trip); if they were out
    of date, or the calculation on them was refused, nothing was written and it is done
    once more on rules read as current, whose answer stands."""
    created_at = now if now is not None else deps.clock()
    # The online check before the transaction: no connection is held while VIES answers.
    check = await check_vat_id(request, deps, now=created_at)
    try:
        # First with the rules as cached, unconfirmed: the commit checks they were current.
        return await _calculate_and_store(tenant, request, deps, check, created_at, confirmed=False)
    except StaleRules:
        # They had changed (or the calculation they gave failed): again with the current.
        return await _calculate_and_store(tenant, request, deps, check, created_at, confirmed=True)


async def _calculate_and_store(
    tenant: str,
    request: CalculationRequest,
    deps: Dependencies,
    check: VatIdCheck | None,
    created_at: datetime,
    *,
    confirmed: bool,
) -> TaxCalculation:
    async with deps.uow(tenant) as uow:
        rules = await uow.rules.for_jurisdiction(
            request.jurisdiction, request.date, confirmed=confirmed
        )
        try:
            lines = calculator.calculate(request, rules, check)
        except TaxError as exc:
            if confirmed:
                raise
            # An unknown jurisdiction or category may be a rule the cached copy misses:
            # refused only on confirmed rules.
            raise StaleRules(str(exc)) from exc
        calculation = TaxCalculation.of(
            calculation_id=str(uuid.uuid4()),
            request=request,
            lines=lines,
            created_at=created_at,
            evidence=check,
        )
        await uow.calculations.add(calculation)
        uow.emit(
            new_event(
                source=EVENT_SOURCE,
                event_type=TAX_CALCULATED,
                data=TaxCalculated(
                    calculation_id=calculation.id,
                    currency=request.currency,
                    price_mode=request.price_mode.value,
                    total_net=calculation.total_net.amount,
                    total_tax=calculation.total_tax.amount,
                    total_gross=calculation.total_gross.amount,
                    line_count=len(calculation.lines),
                    customer_id=request.customer.id,
                    reference=request.reference,
                ),
                subject=calculation.id,
                tenant=uow.tenant,
            ),
            aggregate=f"calculation:{calculation.id}",
        )
        await uow.commit()
    return calculation


async def check_vat_id(
    request: CalculationRequest, deps: Dependencies, *, now: datetime
) -> VatIdCheck | None:
    """The evidence for the customer's VAT id when the decision rests on it (None when it
    does not); InvalidVatId at once when its format or checksum is wrong."""
    vat_id = vat_treatment.vat_id_to_confirm(request)
    if vat_id is None:
        return None
    if deps.vat_ids is None:
        return VatIdCheck(vat_id=vat_id, valid=True, source="format-only", checked_at=now)
    seller = request.seller
    return await deps.vat_ids.check(vat_id, requester=seller.vat_id if seller else None)


async def get_calculation(tenant: str, calculation_id: str, deps: Dependencies) -> TaxCalculation:
    async with deps.uow(tenant) as uow:
        calculation = await uow.calculations.get(calculation_id)
    if calculation is None:
        raise CalculationNotFound(calculation_id)
    return calculation


async def discard_calculations(tenant: str, reference: str, deps: Dependencies) -> int:
    """Compensation: the calculations made for `reference` (an invoice that was never
    created) are removed from the history. Idempotent; returns how many were removed."""
    async with deps.uow(tenant) as uow:
        discarded = await uow.calculations.discard_for_reference(reference)
        await uow.commit()
    return discarded


async def list_calculations(
    tenant: str,
    deps: Dependencies,
    *,
    limit: int,
    after: CalculationPosition | None = None,
    query: CalculationQuery | None = None,
) -> Sequence[TaxCalculation]:
    async with deps.uow(tenant) as uow:
        return await uow.calculations.history(limit=limit, after=after, calculation_query=query)
