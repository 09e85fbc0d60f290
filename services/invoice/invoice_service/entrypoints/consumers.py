"""Event subscriptions of the invoice service (registered before the context starts)."""

from __future__ import annotations

from dataclasses import replace

from billing_common.consumers import EventUseCase, subscribe_use_cases
from billing_common.event_schemas import (
    DISCOUNT_APPLIED,
    PAYMENT_FAILED,
    PAYMENT_RECEIVED,
    PAYMENT_REFUNDED,
    TAX_CALCULATED,
)
from billing_common.runtime import ServiceContext
from invoice_service.service_layer import payments, peer_events
from invoice_service.service_layer.dependencies import Dependencies

SUBSCRIPTIONS: dict[str, EventUseCase[Dependencies]] = {
    PAYMENT_RECEIVED: payments.on_payment_received,
    PAYMENT_FAILED: payments.on_payment_failed,
    PAYMENT_REFUNDED: payments.on_payment_refunded,
    TAX_CALCULATED: peer_events.on_peer_event,
    DISCOUNT_APPLIED: peer_events.on_peer_event,
}

# The payment events settle invoices: in a lane of their own (on RabbitMQ a queue, channel and
# prefetch window of their own), they never wait behind the peer events that the invoice
# creations under way queue up, two per invoice. The payment service publishes them and only
# them, so their order among themselves is all there is to keep, and the lane keeps it.
LANES = {
    PAYMENT_RECEIVED: "settlement",
    PAYMENT_FAILED: "settlement",
    PAYMENT_REFUNDED: "settlement",
}


def subscribe_all(ctx: ServiceContext, deps: Dependencies) -> None:
    # The lane's handlers on the lane's units of work (their own connections).
    settlement = deps if deps.settlement_uow is None else replace(deps, uow=deps.settlement_uow)
    subscribe_use_cases(
        ctx, {t: u for t, u in SUBSCRIPTIONS.items() if t in LANES}, settlement, lanes=LANES
    )
    subscribe_use_cases(
        ctx, {t: u for t, u in SUBSCRIPTIONS.items() if t not in LANES}, deps, lanes=LANES
    )
