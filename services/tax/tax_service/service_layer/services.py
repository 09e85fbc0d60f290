"""Use cases of the tax service. Each takes a unit of work (or a factory, when it may need a
second transaction) and runs in one transaction; callers pass the clock's `now`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from billing_common.event_schemas import TAX_CALCULATED, TaxCalculated
from billing_common.events import new_event
from billing_common.ports import KeyValueStore
from tax_service.adapters.repository import CalculationFilter, RuleFilter
from tax_service.domain import calculator
from tax_service.domain.errors import CalculationNotFound, DuplicateRuleKey, RuleNotFound
from tax_service.domain.model import CalculationRequest, TaxCalculation, TaxRule
from tax_service.service_layer.unit_of_work import TaxUnitOfWork

EVENT_SOURCE = "/billing/tax"

UnitOfWorkFactory = Callable[[], TaxUnitOfWork]


@dataclass(frozen=True)
class RulePage:
    items: list[TaxRule]
    total: int


@dataclass(frozen=True)
class Upserted:
    rule: TaxRule
    created: bool
    changed: bool


# --- rules ------------------------------------------------------------------------------


async def create_rule(uow: TaxUnitOfWork, rule: TaxRule, *, now: datetime) -> TaxRule:
    stored = replace(rule, created_at=now, updated_at=now)
    async with uow:
        if rule.key is not None and await uow.rules.get_by_key(rule.key) is not None:
            raise DuplicateRuleKey(rule.key)
        await uow.rules.add(stored)
        await uow.commit()
    return stored


async def get_rule(uow: TaxUnitOfWork, rule_id: str) -> TaxRule:
    async with uow:
        rule = await uow.rules.get(rule_id)
    if rule is None:
        raise RuleNotFound(rule_id)
    return rule


async def get_rule_by_key(uow: TaxUnitOfWork, key: str) -> TaxRule:
    async with uow:
        rule = await uow.rules.get_by_key(key)
    if rule is None:
        raise RuleNotFound(f"with key {key!r}")
    return rule


async def list_rules(
    uow: TaxUnitOfWork, rule_filter: RuleFilter, *, limit: int, offset: int
) -> RulePage:
    async with uow:
        items, total = await uow.rules.search(rule_filter, limit=limit, offset=offset)
    return RulePage(items, total)


async def replace_rule(uow: TaxUnitOfWork, rule: TaxRule, *, now: datetime) -> TaxRule:
    """Replace the definition of the rule with `rule.id` (its key included)."""
    async with uow:
        current = await uow.rules.get(rule.id)
        if current is None:
            raise RuleNotFound(rule.id)
        if current.key == rule.key and current.same_definition(rule):
            return current
        updated = replace(rule, created_at=current.created_at, updated_at=now)
        await uow.rules.update(updated)
        await uow.commit()
    return updated


async def delete_rule(uow: TaxUnitOfWork, rule_id: str) -> None:
    async with uow:
        if not await uow.rules.delete(rule_id):
            raise RuleNotFound(rule_id)
        await uow.commit()


async def upsert_rule_by_key(
    new_uow: UnitOfWorkFactory, key: str, definition: TaxRule, *, now: datetime
) -> Upserted:
    """Create the rule with this key, or bring the existing one to `definition`.

    Idempotent: an unchanged definition changes nothing (not even updated_at). If a
    concurrent request creates the key first, the insert fails on the unique key and this
    runs once more as an update."""
    definition = replace(definition, key=key)
    for attempt in range(2):
        try:
            async with new_uow() as uow:
                current = await uow.rules.get_by_key(key)
                if current is None:
                    created = replace(definition, created_at=now, updated_at=now)
                    await uow.rules.add(created)
                    await uow.commit()
                    return Upserted(created, created=True, changed=True)
                if current.same_definition(definition):
                    return Upserted(current, created=False, changed=False)
                updated = replace(
                    definition, id=current.id, created_at=current.created_at, updated_at=now
                )
                await uow.rules.update(updated)
                await uow.commit()
                return Upserted(updated, created=False, changed=True)
        except DuplicateRuleKey:
            if attempt:
                raise
    raise AssertionError("unreachable: the loop returns or raises")


async def delete_rule_by_key(uow: TaxUnitOfWork, key: str) -> bool:
    """Delete the rule with this key; False if there was none (deleting is idempotent)."""
    async with uow:
        deleted = await uow.rules.delete_by_key(key)
        await uow.commit()
    return deleted


# --- calculations -----------------------------------------------------------------------


async def calculate(
    uow: TaxUnitOfWork, request: CalculationRequest, *, now: datetime
) -> TaxCalculation:
    """Tax the request with the tenant's rules, store it in the history and publish
    `billing.tax.calculated.v1`, all in one transaction."""
    async with uow:
        rules = await uow.rules.for_jurisdiction(request.jurisdiction, request.date)
        lines = calculator.calculate(request, rules)
        calculation = TaxCalculation.of(
            calculation_id=str(uuid.uuid4()), request=request, lines=lines, created_at=now
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


async def get_calculation(uow: TaxUnitOfWork, calculation_id: str) -> TaxCalculation:
    async with uow:
        calculation = await uow.calculations.get(calculation_id)
    if calculation is None:
        raise CalculationNotFound(calculation_id)
    return calculation


async def discard_calculations(uow: TaxUnitOfWork, reference: str) -> int:
    """Compensation: the calculations made for `reference` (an invoice that was never
    created) are removed from the history. Idempotent; returns how many were removed."""
    async with uow:
        discarded = await uow.calculations.discard_for_reference(reference)
        await uow.commit()
    return discarded


async def list_calculations(
    uow: TaxUnitOfWork,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
    calculation_filter: CalculationFilter | None = None,
) -> Sequence[TaxCalculation]:
    async with uow:
        return await uow.calculations.history(
            limit=limit, after=after, calculation_filter=calculation_filter
        )


# --- sample data ------------------------------------------------------------------------


async def ensure_samples(
    new_uow: UnitOfWorkFactory,
    state: KeyValueStore,
    rules: Sequence[TaxRule],
    *,
    marker: str,
    now: datetime,
) -> int:
    """Load the sample rules once per `marker`; return how many were added.

    Rules are matched by key, so a crash between loading and setting the marker loads
    nothing twice, and a replica starting at the same moment (whose insert then fails on
    the unique key) simply runs once more and finds them. Once the marker is set, rules an
    administrator deleted or changed stay as they are on later starts."""
    if await state.get(marker) is not None:
        return 0
    for attempt in range(2):
        try:
            added = await _add_missing_rules(new_uow, rules, now=now)
            break
        except DuplicateRuleKey:
            if attempt:
                raise
    await state.set(marker, {"loaded_at": now.isoformat(), "rules": added})
    return added


async def _add_missing_rules(
    new_uow: UnitOfWorkFactory, rules: Sequence[TaxRule], *, now: datetime
) -> int:
    added = 0
    async with new_uow() as uow:
        for rule in rules:
            if rule.key is None:
                raise ValueError(f"sample rule {rule.name!r} needs a key")
            if await uow.rules.get_by_key(rule.key) is None:
                await uow.rules.add(replace(rule, created_at=now, updated_at=now))
                added += 1
        await uow.commit()
    return added
