"""One data schema per billing event type: the contract between producers and consumers.

Services import these (the shared kernel), never each other. Amounts are Decimal, which
pydantic writes as decimal strings on the wire. A breaking change means a new `.vN` type.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from billing_common.events import register_event_type

TAX_CALCULATED = "billing.tax.calculated.v1"
DISCOUNT_APPLIED = "billing.discount.applied.v1"
DISCOUNT_RELEASED = "billing.discount.released.v1"
INVOICE_CREATED = "billing.invoice.created.v1"
INVOICE_FINALIZED = "billing.invoice.finalized.v1"
INVOICE_PAID = "billing.invoice.paid.v1"
INVOICE_VOIDED = "billing.invoice.voided.v1"
INVOICE_STATUS_CHANGED = "billing.invoice.status_changed.v1"
INVOICE_PAYMENT_REJECTED = "billing.invoice.payment_rejected.v1"
PAYMENT_RECEIVED = "billing.payment.received.v1"
PAYMENT_FAILED = "billing.payment.failed.v1"
PAYMENT_REFUNDED = "billing.payment.refunded.v1"
CREDIT_NOTE_ISSUED = "billing.creditnote.issued.v1"
CREDIT_NOTE_APPLIED = "billing.creditnote.applied.v1"
CREDIT_NOTE_REFUNDED = "billing.creditnote.refunded.v1"


class _EventData(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TaxCalculated(_EventData):
    calculation_id: str
    currency: str
    price_mode: str
    total_net: Decimal
    total_tax: Decimal
    total_gross: Decimal
    line_count: int
    customer_id: str | None = None
    reference: str | None = None


class AppliedDiscountData(_EventData):
    kind: str
    name: str
    amount: Decimal
    code: str | None = None


class DiscountApplied(_EventData):
    redemption_id: str
    customer_id: str
    currency: str
    amount_before: Decimal
    total_discount: Decimal
    applied: list[AppliedDiscountData]
    reference: str | None = None


class DiscountReleased(_EventData):
    """A redemption given back (the invoice it was for was never created): its coupon uses
    count no more."""

    redemption_id: str
    customer_id: str
    currency: str
    total_discount: Decimal
    coupon_codes: list[str]
    reference: str | None = None


class InvoiceCreated(_EventData):
    invoice_id: str
    customer_id: str
    currency: str
    total: Decimal
    amount_due: Decimal
    status: str
    # The invoice's version (bumped on every change): consumers order what they learn by it.
    version: int | None = None


class DocumentLink(_EventData):
    """A document of an invoice that can be downloaded: `kind` "pdf" or "einvoice" (then
    `format` is facturx, xrechnung or ubl); `href` is the path on the invoice service."""

    kind: str
    href: str
    format: str | None = None
    media_type: str | None = None


class InvoiceFinalized(_EventData):
    invoice_id: str
    number: str
    customer_id: str
    currency: str
    total: Decimal
    amount_due: Decimal
    due_date: str | None = None
    version: int | None = None
    # Added with e-invoices (optional: producers before it send none, consumers before it
    # ignore it): the documents available for the issued invoice, the PDF and the e-invoice
    # in the customer's default format when there is one.
    documents: list[DocumentLink] | None = None


class InvoicePaid(_EventData):
    invoice_id: str
    number: str | None
    currency: str
    total: Decimal
    amount_paid: Decimal
    paid_at: datetime


class InvoiceVoided(_EventData):
    invoice_id: str
    number: str | None
    reason: str | None = None
    version: int | None = None


class InvoiceStatusChanged(_EventData):
    """Every status change of an invoice, in the invoice service's vocabulary (draft,
    issued, partially_paid, paid, void, uncollectible). `version` orders them: a consumer
    keeps the status of the highest version it has seen."""

    invoice_id: str
    number: str | None
    customer_id: str
    currency: str
    status: str
    previous_status: str | None
    total: Decimal
    amount_paid: Decimal
    amount_due: Decimal
    version: int
    reason: str | None = None


class InvoicePaymentRejected(_EventData):
    """A payment the invoice could not apply (it was not payable when the payment arrived,
    or the currency differs). The money was taken: the payment service gives it back."""

    invoice_id: str
    payment_id: str
    currency: str
    amount: Decimal
    reason: str
    invoice_status: str


class PaymentReceived(_EventData):
    payment_id: str
    invoice_id: str
    currency: str
    amount: Decimal
    gateway: str
    gateway_reference: str | None = None


class PaymentFailed(_EventData):
    payment_id: str
    invoice_id: str
    currency: str
    amount: Decimal
    gateway: str
    failure_code: str
    failure_message: str | None = None


class PaymentRefunded(_EventData):
    payment_id: str
    refund_id: str
    invoice_id: str
    currency: str
    amount: Decimal
    gateway: str
    # Set when the refund was made for a credit note (settlement "refund").
    credit_note_id: str | None = None


class CreditNoteData(_EventData):
    """A credit note of an invoice. `invoice_amount_credited` is the sum of all the
    invoice's credit notes so far, so a consumer can take it as is (events may repeat or
    arrive out of order): what may still be charged is invoice_total − invoice_amount_credited
    less what was paid."""

    credit_note_id: str
    number: str
    invoice_id: str
    invoice_number: str
    customer_id: str
    currency: str
    settlement: str  # apply | refund | customer_balance
    status: str
    net_total: Decimal
    tax_total: Decimal
    total: Decimal
    reason: str
    invoice_total: Decimal
    invoice_amount_credited: Decimal
    invoice_version: int
    refund_ids: list[str] = []


_SCHEMAS: dict[str, type[BaseModel]] = {
    TAX_CALCULATED: TaxCalculated,
    DISCOUNT_APPLIED: DiscountApplied,
    DISCOUNT_RELEASED: DiscountReleased,
    INVOICE_CREATED: InvoiceCreated,
    INVOICE_FINALIZED: InvoiceFinalized,
    INVOICE_PAID: InvoicePaid,
    INVOICE_VOIDED: InvoiceVoided,
    INVOICE_STATUS_CHANGED: InvoiceStatusChanged,
    INVOICE_PAYMENT_REJECTED: InvoicePaymentRejected,
    PAYMENT_RECEIVED: PaymentReceived,
    PAYMENT_FAILED: PaymentFailed,
    PAYMENT_REFUNDED: PaymentRefunded,
    CREDIT_NOTE_ISSUED: CreditNoteData,
    CREDIT_NOTE_APPLIED: CreditNoteData,
    CREDIT_NOTE_REFUNDED: CreditNoteData,
}
for _type, _schema in _SCHEMAS.items():
    register_event_type(_type, _schema)
