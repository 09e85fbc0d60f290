"""Event subscriptions of the payment service (registered before the context starts)."""

from __future__ import annotations

from billing_common.consumers import EventUseCase, subscribe_use_cases
from billing_common.event_schemas import (
    CREDIT_NOTE_ISSUED,
    INVOICE_CREATED,
    INVOICE_FINALIZED,
    INVOICE_PAYMENT_REJECTED,
    INVOICE_STATUS_CHANGED,
    INVOICE_VOIDED,
)
from billing_common.runtime import ServiceContext
from payment_service.service_layer import invoice_events
from payment_service.service_layer.dependencies import Dependencies

SUBSCRIPTIONS: dict[str, EventUseCase[Dependencies]] = {
    INVOICE_CREATED: invoice_events.on_invoice_created,
    INVOICE_FINALIZED: invoice_events.on_invoice_finalized,
    INVOICE_VOIDED: invoice_events.on_invoice_voided,
    INVOICE_STATUS_CHANGED: invoice_events.on_invoice_status_changed,
    INVOICE_PAYMENT_REJECTED: invoice_events.on_invoice_payment_rejected,
    CREDIT_NOTE_ISSUED: invoice_events.on_credit_note_issued,
}


def subscribe_all(ctx: ServiceContext, deps: Dependencies) -> None:
    subscribe_use_cases(ctx, SUBSCRIPTIONS, deps)
