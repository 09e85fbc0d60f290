"""Events of the peers kept with the invoice: tax.calculated and discount.applied."""

from __future__ import annotations

from billing_common.event_schemas import (
    DISCOUNT_APPLIED,
    TAX_CALCULATED,
    DiscountApplied,
    TaxCalculated,
)
from billing_common.events import CloudEvent
from billing_common.ports import PermanentEventError
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.inbox import CONSUMER, event_time, tenant_of
from invoice_service.service_layer.ports import ReceivedEvent


async def on_peer_event(event: CloudEvent, deps: Dependencies) -> None:
    """Keep tax.calculated / discount.applied events in the received-events history, by
    their reference (the invoice id when the calculation was made for an invoice)."""
    reference = _peer_data(event).reference
    kept = ReceivedEvent(
        event_id=event.id,
        event_type=event.type,
        source=event.source,
        reference=reference,
        subject=event.subject,
        occurred_at=event_time(event),
        received_at=deps.clock(),
        data=event.data,
    )
    async with deps.uow(tenant_of(event)) as uow:
        # The claim and the record at once (one statement on PostgreSQL): a redelivery
        # finds it claimed and keeps nothing twice.
        await uow.keep_event(CONSUMER, event, kept)


def _peer_data(event: CloudEvent) -> TaxCalculated | DiscountApplied:
    if event.type == TAX_CALCULATED:
        return event.parse(TaxCalculated)
    if event.type == DISCOUNT_APPLIED:
        return event.parse(DiscountApplied)
    raise PermanentEventError(f"the invoice service does not keep {event.type} events")
