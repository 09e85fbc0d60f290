"""Invoice response bodies: an invoice with its lines, payments and history, and the
summaries of a list page. Amounts are decimal strings."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from billing_common.wire import DecimalString
from invoice_service.domain.model import Invoice, InvoiceLine, InvoiceSummary, TaxComponent
from invoice_service.entrypoints.einvoice_schemas import DocumentOut, PostalAddressOut
from invoice_service.entrypoints.seller_schemas import (
    SellerSnapshotOut,
    VatBreakdownOut,
    line_vat,
)
from invoice_service.service_layer.einvoices import available_documents
from invoice_service.service_layer.ports import ReceivedEvent
from invoice_service.service_layer.queries import InvoiceDetails


class JurisdictionOut(BaseModel):
    country: str
    region: str | None


class CustomerOut(BaseModel):
    id: str
    type: str | None
    jurisdiction: JurisdictionOut
    tax_status: str
    tax_id: str | None
    name: str | None
    email: str | None
    address: str | None
    country: str | None = None
    region: str | None = None
    kind: str | None = None
    exemption_certificate: str | None = None
    postal_address: PostalAddressOut | None = None
    buyer_reference: str | None = None


class TaxOut(BaseModel):
    rule_id: str | None
    name: str
    rate: DecimalString
    amount: DecimalString
    compound: bool

    @classmethod
    def of(cls, tax: TaxComponent) -> TaxOut:
        return cls(
            rule_id=tax.rule_id,
            name=tax.name,
            rate=tax.rate,
            amount=tax.amount,
            compound=tax.compound,
        )


class LineOut(BaseModel):
    position: int
    description: str
    quantity: DecimalString
    unit_price: DecimalString
    category: str
    subtotal: DecimalString
    discount: DecimalString
    net: DecimalString
    tax: DecimalString
    total: DecimalString
    exemption: str | None
    taxes: list[TaxOut]
    vat_category: str | None = Field(default=None, description="EN 16931 (UNCL5305) code")
    vat_exemption_reason: str | None = None
    vat_exemption_reason_code: str | None = Field(default=None, description="VATEX code")

    @classmethod
    def of(cls, line: InvoiceLine) -> LineOut:
        return cls(
            position=line.position,
            description=line.description,
            quantity=line.quantity,
            unit_price=line.unit_price,
            category=line.category,
            subtotal=line.subtotal,
            discount=line.discount,
            net=line.net,
            tax=line.tax,
            total=line.total,
            exemption=line.exemption,
            taxes=[TaxOut.of(t) for t in line.taxes],
            **line_vat(line),
        )


class DiscountOut(BaseModel):
    kind: str
    code: str | None
    name: str
    amount: DecimalString


class PaymentOut(BaseModel):
    kind: Literal["payment", "refund", "failure"]
    payment_id: str
    refund_id: str | None
    amount: DecimalString
    currency: str
    applied: bool
    flag: str | None = Field(description="why it was not applied as is, e.g. overpayment")
    detail: str | None
    event_id: str | None
    at: datetime


class HistoryOut(BaseModel):
    from_status: str | None
    to_status: str
    at: datetime
    reason: str | None
    actor: str | None
    event_id: str | None


class ReceivedEventOut(BaseModel):
    event_id: str
    type: str
    source: str
    occurred_at: datetime
    received_at: datetime
    data: dict[str, Any]

    @classmethod
    def of(cls, event: ReceivedEvent) -> ReceivedEventOut:
        return cls(
            event_id=event.event_id,
            type=event.event_type,
            source=event.source,
            occurred_at=event.occurred_at,
            received_at=event.received_at,
            data=event.data,
        )


class _Totals(BaseModel):
    subtotal: DecimalString
    discount_total: DecimalString
    tax_total: DecimalString
    total: DecimalString
    amount_paid: DecimalString
    amount_due: DecimalString
    amount_credited: DecimalString = Field(
        default=Decimal(0), description="the totals of its credit notes: no longer owed"
    )


class InvoiceOut(_Totals):
    id: str
    number: str | None
    series: str
    status: str
    currency: str
    price_mode: str
    customer: CustomerOut
    net_total: DecimalString
    overpaid: DecimalString
    tax_calculation_id: str | None
    discount_redemption_id: str | None
    due_days: int
    memo: str | None
    created_at: datetime
    updated_at: datetime | None
    issued_at: datetime | None
    due_date: date | None
    paid_at: datetime | None
    voided_at: datetime | None
    version: int
    lines: list[LineOut]
    discounts: list[DiscountOut]
    payments: list[PaymentOut]
    history: list[HistoryOut]
    received_events: list[ReceivedEventOut] = Field(
        default_factory=list, description="tax/discount events received about this invoice"
    )
    seller_id: str | None = None
    seller: SellerSnapshotOut | None = Field(
        default=None, description="the seller's data this invoice keeps (fixed once issued)"
    )
    tax_treatment: str | None = None
    tax_breakdown: list[VatBreakdownOut] = Field(default_factory=list)
    language: str = Field(
        default="en",
        description="the documents' language (BCP 47): the one asked for at creation, else "
        "the seller's default language, else en; fixed once issued",
        examples=["de-CH"],
    )
    requested_language: str | None = Field(
        default=None, description="the language asked for at creation, normalised"
    )
    documents: list[DocumentOut] = Field(
        default_factory=list,
        description="what can be downloaded for the issued invoice: its PDF, and the "
        "e-invoice in the customer's default format when it has one (none for drafts and "
        "void invoices); the same list as the billing.invoice.finalized.v1 event's",
    )

    @classmethod
    def of(cls, invoice: Invoice, received: list[ReceivedEvent] | None = None) -> InvoiceOut:
        totals = invoice.totals
        c = invoice.customer
        return cls(
            id=invoice.id,
            number=invoice.number,
            series=invoice.series,
            status=invoice.status.value,
            currency=invoice.currency,
            price_mode=invoice.price_mode.value,
            customer=CustomerOut(
                id=c.id,
                type=c.type,
                jurisdiction=JurisdictionOut(country=c.country, region=c.region),
                tax_status=c.tax_status.value,
                tax_id=c.tax_id,
                name=c.name,
                email=c.email,
                address=c.address,
                country=c.location_country,
                region=c.location_region,
                kind=c.kind.value if c.kind else None,
                exemption_certificate=c.exemption_certificate,
                postal_address=PostalAddressOut.of(c.postal_address) if c.postal_address else None,
                buyer_reference=c.buyer_reference,
            ),
            subtotal=totals.subtotal,
            discount_total=totals.discount_total,
            net_total=totals.net_total,
            tax_total=totals.tax_total,
            total=totals.total,
            amount_paid=invoice.amount_paid,
            amount_due=invoice.amount_due,
            amount_credited=invoice.amount_credited,
            overpaid=invoice.overpaid,
            tax_calculation_id=invoice.tax_calculation_id,
            discount_redemption_id=invoice.discount_redemption_id,
            due_days=invoice.due_days,
            memo=invoice.memo,
            created_at=invoice.created_at,
            updated_at=invoice.updated_at,
            issued_at=invoice.issued_at,
            due_date=invoice.due_date,
            paid_at=invoice.paid_at,
            voided_at=invoice.voided_at,
            version=invoice.version,
            lines=[LineOut.of(line) for line in invoice.lines],
            discounts=[
                DiscountOut(kind=d.kind, code=d.code, name=d.name, amount=d.amount)
                for d in invoice.discounts
            ],
            payments=[
                PaymentOut(
                    kind=p.kind.value,
                    payment_id=p.payment_id,
                    refund_id=p.refund_id,
                    amount=p.amount,
                    currency=p.currency,
                    applied=p.applied,
                    flag=p.flag.value if p.flag else None,
                    detail=p.detail,
                    event_id=p.event_id,
                    at=p.at,
                )
                for p in invoice.payments
            ],
            history=[
                HistoryOut(
                    from_status=h.from_status.value if h.from_status else None,
                    to_status=h.to_status.value,
                    at=h.at,
                    reason=h.reason,
                    actor=h.actor,
                    event_id=h.event_id,
                )
                for h in invoice.history
            ],
            received_events=[ReceivedEventOut.of(e) for e in received or []],
            seller_id=invoice.seller_id,
            seller=SellerSnapshotOut.of(invoice.seller) if invoice.seller else None,
            tax_treatment=invoice.tax_treatment,
            tax_breakdown=[VatBreakdownOut.of(b) for b in invoice.tax_breakdown],
            language=invoice.language,
            requested_language=invoice.requested_language,
            documents=[DocumentOut.of(d) for d in available_documents(invoice)],
        )

    @classmethod
    def of_details(cls, details: InvoiceDetails) -> InvoiceOut:
        return cls.of(details.invoice, details.received_events)


class InvoiceSummaryOut(_Totals):
    id: str
    number: str | None
    series: str
    status: str
    customer_id: str
    currency: str
    created_at: datetime
    issued_at: datetime | None
    due_date: date | None

    @classmethod
    def of(cls, summary: InvoiceSummary) -> InvoiceSummaryOut:
        return cls(
            id=summary.id,
            number=summary.number,
            series=summary.series,
            status=summary.status.value,
            customer_id=summary.customer_id,
            currency=summary.currency,
            subtotal=summary.subtotal,
            discount_total=summary.discount_total,
            tax_total=summary.tax_total,
            total=summary.total,
            amount_paid=summary.amount_paid,
            amount_due=summary.amount_due,
            amount_credited=summary.amount_credited,
            created_at=summary.created_at,
            issued_at=summary.issued_at,
            due_date=summary.due_date,
        )


class InvoicePageOut(BaseModel):
    items: list[InvoiceSummaryOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null: last")
