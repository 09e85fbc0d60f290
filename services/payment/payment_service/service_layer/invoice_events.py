"""What this service learns from the invoice service's events: the invoices it may take
payments for, and the payments an invoice refused (refunded at once). Each event is
claimed in the inbox in the same transaction as its effect, so a redelivery does nothing."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TypeVar

from loguru import logger
from pydantic import BaseModel

from billing_common.event_schemas import (
    CreditNoteData,
    InvoiceCreated,
    InvoiceFinalized,
    InvoicePaymentRejected,
    InvoiceStatusChanged,
    InvoiceVoided,
)
from billing_common.events import CloudEvent
from billing_common.money import MoneyError
from billing_common.ports import PermanentEventError
from payment_service.domain.errors import AmountExceedsRefundable, PaymentDomainError
from payment_service.domain.model import (
    CAPTURED,
    InvoiceState,
    PayableInvoice,
    Payment,
    RefundStatus,
)
from payment_service.service_layer import refunds
from payment_service.service_layer.dependencies import Dependencies

CONSUMER = "payment"
SchemaT = TypeVar("SchemaT", bound=BaseModel)


def auto_refund_key(payment_id: str) -> str:
    """The Idempotency-Key of the refund this service makes by itself for a payment the
    invoice refused: one per payment, so redelivered events refund it once."""
    return f"auto-refund:{payment_id}"


def credit_note_refund_key(credit_note_id: str, part: int = 1) -> str:
    """The Idempotency-Key of the refund made for a refund credit note (part 2, 3…: when it
    is refunded from more than one payment); refunds.credit_note_of_refund_key reads it."""
    key = f"creditnote-refund:{credit_note_id}"
    return key if part == 1 else f"{key}:{part}"


class AutoRefundIncomplete(Exception):
    """The automatic refund's gateway outcome is not known yet: the event is delivered again
    and the refund retried under the same key."""


async def on_invoice_created(event: CloudEvent, deps: Dependencies) -> None:
    tenant, data = _parse(event, InvoiceCreated)
    now = deps.clock()
    async with deps.uow() as uow:
        new = _new_invoice(data, now)
        # Almost always the invoice is new here: the claim and the row in one step where the
        # unit of work has one; whatever that step cannot decide goes the general way below.
        if new is not None and await uow.claim_new_invoice(CONSUMER, event, tenant, new):
            return
        if not await uow.claim_event(CONSUMER, event):
            return
        repo = uow.payments(tenant)
        invoice = await repo.get_invoice(data.invoice_id, for_update=True)
        try:
            if invoice is None:
                invoice = _created(data, now)
            else:
                invoice.on_created(
                    customer_id=data.customer_id,
                    currency=data.currency,
                    total=data.total,
                    amount_due=data.amount_due,
                    now=now,
                )
        except MoneyError as exc:
            raise PermanentEventError(f"{event.type} {event.id}: {exc}") from exc
        await repo.save_invoice(invoice)
        await uow.commit()


def _created(data: InvoiceCreated, now: datetime) -> PayableInvoice:
    """The invoice `data` creates where it is not known yet (MoneyError if its amounts are
    refused)."""
    return PayableInvoice.created(
        invoice_id=data.invoice_id,
        customer_id=data.customer_id,
        currency=data.currency,
        total=data.total,
        amount_due=data.amount_due,
        now=now,
    )


def _new_invoice(data: InvoiceCreated, now: datetime) -> PayableInvoice | None:
    """The invoice `data` creates, if it is new here; None if its amounts are refused (the
    general path decides that, as it does for an invoice already known)."""
    try:
        return _created(data, now)
    except MoneyError:
        return None


async def on_invoice_finalized(event: CloudEvent, deps: Dependencies) -> None:
    tenant, data = _parse(event, InvoiceFinalized)
    async with deps.uow() as uow:
        if not await uow.claim_event(CONSUMER, event):
            return
        repo = uow.payments(tenant)
        now = deps.clock()
        invoice = await repo.get_invoice(data.invoice_id, for_update=True)
        try:
            if invoice is None:  # the created event was missed or is still on its way
                invoice = PayableInvoice.created(
                    invoice_id=data.invoice_id,
                    customer_id=data.customer_id,
                    currency=data.currency,
                    total=data.total,
                    amount_due=data.amount_due,
                    now=now,
                )
            invoice.finalize(
                number=data.number,
                customer_id=data.customer_id,
                currency=data.currency,
                total=data.total,
                amount_due=data.amount_due,
                now=now,
                version=data.version,
            )
        except MoneyError as exc:
            raise PermanentEventError(f"{event.type} {event.id}: {exc}") from exc
        await repo.save_invoice(invoice)
        await uow.commit()


async def on_invoice_voided(event: CloudEvent, deps: Dependencies) -> None:
    tenant, data = _parse(event, InvoiceVoided)
    async with deps.uow() as uow:
        if not await uow.claim_event(CONSUMER, event):
            return
        repo = uow.payments(tenant)
        now = deps.clock()
        invoice = await repo.get_invoice(data.invoice_id, for_update=True)
        if invoice is None:
            invoice = PayableInvoice.void_tombstone(
                invoice_id=data.invoice_id, number=data.number, now=now
            )
        else:
            invoice.number = invoice.number or data.number
            invoice.void(now, data.version)
        await repo.save_invoice(invoice)
        await uow.commit()


async def on_invoice_status_changed(event: CloudEvent, deps: Dependencies) -> None:
    """Every status change of the invoice (paid, re-opened by a refund, uncollectible,
    void...): a charge is refused at once when the invoice stops being payable."""
    tenant, data = _parse(event, InvoiceStatusChanged)
    try:
        status = InvoiceState(data.status)
    except ValueError as exc:
        raise PermanentEventError(f"{event.type} {event.id}: unknown status") from exc
    async with deps.uow() as uow:
        if not await uow.claim_event(CONSUMER, event):
            return
        repo = uow.payments(tenant)
        now = deps.clock()
        invoice = await repo.get_invoice(data.invoice_id, for_update=True)
        try:
            if invoice is None:  # the earlier events are missed or still on their way
                invoice = PayableInvoice.created(
                    invoice_id=data.invoice_id,
                    customer_id=data.customer_id,
                    currency=data.currency,
                    total=data.total,
                    amount_due=data.total,  # payable for the total less our payments
                    now=now,
                )
        except MoneyError as exc:
            raise PermanentEventError(f"{event.type} {event.id}: {exc}") from exc
        invoice.number = invoice.number or data.number
        invoice.observe(status, data.version, now)
        await repo.save_invoice(invoice)
        await uow.commit()


async def on_invoice_payment_rejected(event: CloudEvent, deps: Dependencies) -> None:
    """The invoice refused a payment this service captured (it had become void or
    uncollectible before the payment reached it): give the money back, in full.

    Idempotent through the refund's own Idempotency-Key (one per payment), which is
    committed with the pending refund before the gateway is called; an unknown gateway
    outcome raises, so the event comes again and the refund is retried with that key."""
    tenant, data = _parse(event, InvoicePaymentRejected)
    async with deps.uow() as uow:
        payment = await uow.payments(tenant).get(data.payment_id)
    if payment is None:
        raise PermanentEventError(f"{event.type} {event.id}: no payment {data.payment_id}")
    if payment.status not in CAPTURED:
        return  # nothing was taken
    try:
        outcome = await refunds.refund(tenant, payment.id, auto_refund_key(payment.id), None, deps)
    except AmountExceedsRefundable:
        logger.info("payment {} was refunded already", payment.id)
        return
    made = outcome.refund
    logger.warning(
        "payment {} refused by invoice {} ({}): refund {} {}",
        payment.id,
        data.invoice_id,
        data.reason,
        made.id,
        made.status,
    )
    if made.status is RefundStatus.PENDING and made.gateway_reference is None:
        raise AutoRefundIncomplete(f"refund {made.id} of payment {payment.id} is pending")


async def on_credit_note_issued(event: CloudEvent, deps: Dependencies) -> None:
    """A credit note of an invoice: lower what may still be charged; a refund credit note
    is refunded from the invoice's captured payments (oldest first, under keys derived from
    the credit note: a redelivered event replays them). The refunds publish
    billing.payment.refunded.v1 naming the credit note, which the invoice records."""
    tenant, data = _parse(event, CreditNoteData)
    async with deps.uow() as uow:
        if await uow.claim_event(CONSUMER, event):
            repo = uow.payments(tenant)
            invoice = await repo.get_invoice(data.invoice_id, for_update=True)
            if invoice is not None and invoice.credit(
                invoice_total=data.invoice_total,
                amount_credited=data.invoice_amount_credited,
                now=deps.clock(),
            ):
                await repo.save_invoice(invoice)
            await uow.commit()
    if data.settlement != "refund":
        return
    async with deps.uow() as uow:
        payments = await uow.payments(tenant).for_invoice(data.invoice_id)
    for part, (payment, amount) in enumerate(_refund_plan(payments, data.total), start=1):
        key = credit_note_refund_key(data.credit_note_id, part)
        try:
            outcome = await refunds.refund(tenant, payment.id, key, amount, deps)
        except PaymentDomainError as exc:
            logger.error("credit note {}: refund of {} failed: {}", data.number, payment.id, exc)
            continue
        made = outcome.refund
        logger.info(
            "credit note {}: refund {} of payment {} {}",
            data.number,
            made.id,
            payment.id,
            made.status,
        )
        if made.status is RefundStatus.PENDING and made.gateway_reference is None:
            raise AutoRefundIncomplete(f"refund {made.id} of payment {payment.id} is pending")


def _refund_plan(payments: list[Payment], total: Decimal) -> list[tuple[Payment, Decimal]]:
    """Which captured payments give back `total`, oldest first, each at most what it
    captured: computed from amounts that never change, so a redelivery plans the same."""
    plan: list[tuple[Payment, Decimal]] = []
    left = total
    for payment in payments:
        if left <= 0:
            break
        if payment.status not in CAPTURED:
            continue
        amount = min(payment.amount.amount, left)
        plan.append((payment, amount))
        left -= amount
    return plan


def _parse(event: CloudEvent, schema: type[SchemaT]) -> tuple[str, SchemaT]:
    """The event's tenant and validated data; an event that can never apply is permanent."""
    if not event.tenant:
        raise PermanentEventError(f"{event.type} {event.id} has no tenant")
    return event.tenant, event.parse(schema)
