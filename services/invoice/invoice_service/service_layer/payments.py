"""Payment events applied to invoices: received, failed, refunded (once per event id)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from billing_common.event_schemas import (
    PaymentFailed,
    PaymentReceived,
    PaymentRefunded,
)
from billing_common.events import CloudEvent
from billing_common.ports import PermanentEventError
from invoice_service.domain.errors import InvoiceError
from invoice_service.domain.model import Invoice, InvoiceStatus
from invoice_service.service_layer import credit_notes, events
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.inbox import CONSUMER, event_time, tenant_of
from invoice_service.service_layer.ports import UnitOfWork
from invoice_service.service_layer.status_changes import record_status_change


async def _apply(
    event: CloudEvent,
    invoice_id: str,
    deps: Dependencies,
    change: Callable[[Invoice], bool],
    after: Callable[[UnitOfWork, Invoice], Awaitable[None]] | None = None,
    *,
    received: str | None = None,
) -> None:
    """Apply `change` to the invoice once per event id (inbox claim in the same transaction);
    publish invoice.paid if `change` returns True. Events that can never apply are
    dead-lettered (PermanentEventError), never retried forever. `received`: the payment id
    of a payment.received event (its data parsed once, by the caller)."""
    async with deps.uow(tenant_of(event)) as uow:
        if after is None:

            def decide(invoice: Invoice | None) -> None:
                _emit(uow, event, *_changed(event, invoice_id, invoice, change), received)

            # The claim, the read, the change and its events in as few statements as the
            # unit of work can send them (this is how a payment settles an invoice).
            await uow.apply_event(CONSUMER, event, invoice_id, decide)
            return
        if not await uow.claim_event(CONSUMER, event):
            return
        invoice = await uow.invoices.get(invoice_id, for_update=True)
        changed = _changed(event, invoice_id, invoice, change)
        await uow.invoices.save(changed[0])
        await after(uow, changed[0])
        _emit(uow, event, *changed, received)
        await uow.commit()


def _changed(
    event: CloudEvent, invoice_id: str, invoice: Invoice | None, change: Callable[[Invoice], bool]
) -> tuple[Invoice, InvoiceStatus, bool]:
    """`change` applied: (the invoice, its status before, whether it became paid)."""
    if invoice is None:
        raise PermanentEventError(f"{event.type} {event.id}: no invoice {invoice_id!r}")
    previous = invoice.status
    try:
        became_paid = change(invoice)
    except InvoiceError as exc:
        raise PermanentEventError(f"{event.type} {event.id}: {exc}") from exc
    return invoice, previous, became_paid


def _emit(
    uow: UnitOfWork,
    event: CloudEvent,
    invoice: Invoice,
    previous: InvoiceStatus,
    became_paid: bool,
    received: str | None,
) -> None:
    """The events a change made: invoice.paid, the status change, a payment refused (the
    payment `received`, named by payment.received events only)."""
    if became_paid:
        uow.emit(events.paid(invoice), aggregate=events.aggregate(invoice))
    record_status_change(uow, invoice, previous, event.type)
    if received is not None:
        rejected = invoice.rejected_payment(received, event.id)
        if rejected is not None:
            uow.emit(
                events.payment_rejected(invoice, rejected),
                aggregate=events.aggregate(invoice),
            )


async def on_payment_received(event: CloudEvent, deps: Dependencies) -> None:
    data = event.parse(PaymentReceived)

    def change(invoice: Invoice) -> bool:
        return invoice.apply_payment(
            payment_id=data.payment_id,
            amount=data.amount,
            currency=data.currency,
            at=event_time(event),
            event_id=event.id,
        )

    await _apply(event, data.invoice_id, deps, change, received=data.payment_id)


async def on_payment_failed(event: CloudEvent, deps: Dependencies) -> None:
    data = event.parse(PaymentFailed)

    def change(invoice: Invoice) -> bool:
        invoice.record_payment_failure(
            payment_id=data.payment_id,
            amount=data.amount,
            currency=data.currency,
            failure_code=data.failure_code,
            failure_message=data.failure_message,
            at=event_time(event),
            event_id=event.id,
        )
        return False

    await _apply(event, data.invoice_id, deps, change)


async def on_payment_refunded(event: CloudEvent, deps: Dependencies) -> None:
    data = event.parse(PaymentRefunded)

    def change(invoice: Invoice) -> bool:
        invoice.apply_refund(
            payment_id=data.payment_id,
            refund_id=data.refund_id,
            amount=data.amount,
            currency=data.currency,
            at=event_time(event),
            event_id=event.id,
        )
        return False

    async def for_credit_note(uow: UnitOfWork, invoice: Invoice) -> None:
        if data.credit_note_id is not None:
            await credit_notes.record_credit_note_refund(
                uow, invoice, data.credit_note_id, data.refund_id, data.amount, deps
            )

    await _apply(event, data.invoice_id, deps, change, for_credit_note)
