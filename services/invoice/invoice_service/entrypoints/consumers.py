"""Event subscriptions of the invoice service (registered before the context starts)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from billing_common.event_schemas import (
    DISCOUNT_APPLIED,
    PAYMENT_FAILED,
    PAYMENT_RECEIVED,
    PAYMENT_REFUNDED,
    TAX_CALCULATED,
)
from billing_common.events import CloudEvent
from billing_common.runtime import ServiceContext
from invoice_service.service_layer import payments, peer_events
from invoice_service.service_layer.dependencies import Dependencies

Handler = Callable[[CloudEvent, Dependencies], Awaitable[None]]

SUBSCRIPTIONS: dict[str, Handler] = {
    PAYMENT_RECEIVED: payments.on_payment_received,
    PAYMENT_FAILED: payments.on_payment_failed,
    PAYMENT_REFUNDED: payments.on_payment_refunded,
    TAX_CALCULATED: peer_events.on_peer_event,
    DISCOUNT_APPLIED: peer_events.on_peer_event,
}


def subscribe_all(ctx: ServiceContext, deps: Dependencies) -> None:
    for event_type, handler in SUBSCRIPTIONS.items():
        ctx.subscribe(event_type, _bound(handler, deps))


def _bound(handler: Handler, deps: Dependencies) -> Callable[[CloudEvent], Awaitable[None]]:
    async def handle(event: CloudEvent) -> None:
        await handler(event, deps)

    handle.__name__ = handler.__name__
    return handle
