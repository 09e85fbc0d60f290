"""The events the invoice service publishes, built from the aggregate."""

from __future__ import annotations

from datetime import UTC, datetime

from billing_common.event_schemas import (
    INVOICE_CREATED,
    INVOICE_FINALIZED,
    INVOICE_PAID,
    INVOICE_PAYMENT_REJECTED,
    INVOICE_STATUS_CHANGED,
    INVOICE_VOIDED,
    DocumentLink,
    InvoiceCreated,
    InvoiceFinalized,
    InvoicePaid,
    InvoicePaymentRejected,
    InvoiceStatusChanged,
    InvoiceVoided,
)
from billing_common.events import CloudEvent, new_event
from invoice_service.domain.model import Invoice, InvoiceStatus, PaymentRecord
from invoice_service.service_layer.einvoices import available_documents

SOURCE = "/billing/invoice"


def aggregate(invoice: Invoice) -> str:
    return f"invoice:{invoice.id}"


def _event(
    invoice: Invoice,
    event_type: str,
    data: (
        InvoiceCreated
        | InvoiceFinalized
        | InvoicePaid
        | InvoiceVoided
        | InvoiceStatusChanged
        | InvoicePaymentRejected
    ),
) -> CloudEvent:
    return new_event(
        source=SOURCE,
        event_type=event_type,
        data=data,
        subject=invoice.id,
        tenant=invoice.tenant_id,
    )


def created(invoice: Invoice) -> CloudEvent:
    return _event(
        invoice,
        INVOICE_CREATED,
        InvoiceCreated(
            invoice_id=invoice.id,
            customer_id=invoice.customer.id,
            currency=invoice.currency,
            total=invoice.total,
            amount_due=invoice.amount_due,
            status=invoice.status.value,
            version=invoice.version,
        ),
    )


def finalized(invoice: Invoice) -> CloudEvent:
    assert invoice.number is not None
    return _event(
        invoice,
        INVOICE_FINALIZED,
        InvoiceFinalized(
            invoice_id=invoice.id,
            number=invoice.number,
            customer_id=invoice.customer.id,
            currency=invoice.currency,
            total=invoice.total,
            amount_due=invoice.amount_due,
            due_date=invoice.due_date.isoformat() if invoice.due_date else None,
            version=invoice.version,
            documents=[
                DocumentLink(
                    kind=document.kind,
                    href=document.href,
                    format=document.format.value if document.format else None,
                    media_type=document.media_type,
                )
                for document in available_documents(invoice)
            ],
        ),
    )


def paid(invoice: Invoice) -> CloudEvent:
    return _event(
        invoice,
        INVOICE_PAID,
        InvoicePaid(
            invoice_id=invoice.id,
            number=invoice.number,
            currency=invoice.currency,
            total=invoice.total,
            amount_paid=invoice.amount_paid,
            paid_at=invoice.paid_at or datetime.now(UTC),
        ),
    )


def voided(invoice: Invoice, reason: str | None) -> CloudEvent:
    return _event(
        invoice,
        INVOICE_VOIDED,
        InvoiceVoided(
            invoice_id=invoice.id, number=invoice.number, reason=reason, version=invoice.version
        ),
    )


def status_changed(
    invoice: Invoice, previous: InvoiceStatus | None, reason: str | None = None
) -> CloudEvent:
    """Published with every status change, so that a consumer (the payment service) learns
    each one, whatever the change: finalized, paid, re-opened by a refund, void,
    uncollectible."""
    return _event(
        invoice,
        INVOICE_STATUS_CHANGED,
        InvoiceStatusChanged(
            invoice_id=invoice.id,
            number=invoice.number,
            customer_id=invoice.customer.id,
            currency=invoice.currency,
            status=invoice.status.value,
            previous_status=previous.value if previous else None,
            total=invoice.total,
            amount_paid=invoice.amount_paid,
            amount_due=invoice.amount_due,
            version=invoice.version,
            reason=reason,
        ),
    )


def payment_rejected(invoice: Invoice, record: PaymentRecord) -> CloudEvent:
    assert record.flag is not None
    return _event(
        invoice,
        INVOICE_PAYMENT_REJECTED,
        InvoicePaymentRejected(
            invoice_id=invoice.id,
            payment_id=record.payment_id,
            currency=record.currency,
            amount=record.amount,
            reason=record.flag.value,
            invoice_status=invoice.status.value,
        ),
    )
