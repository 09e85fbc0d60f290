"""SQLModel tables of the invoice service. Every table carries `tenant_id`; names are
prefixed `invoice_` because all services share SQLModel's metadata in one process.
Money and quantities are ExactDecimal (NUMERIC on PostgreSQL, text on SQLite)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Date, Index, Text, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from billing_common.db import ExactDecimal, UtcDateTime


def _money(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(ExactDecimal(), nullable=nullable))


def _when(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UtcDateTime(), nullable=nullable))


class InvoiceRow(SQLModel, table=True):
    __tablename__ = "invoice_invoices"
    __table_args__ = (
        # The idempotency record of POST /v1/invoices, enforced by the database.
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_invoice_idempotency_key"),
        # Defence in depth for numbering: the counter makes numbers unique, this proves it.
        UniqueConstraint("tenant_id", "series", "sequence", name="uq_invoice_number"),
        Index("ix_invoice_invoices_page", "tenant_id", "created_at", "id"),
        Index("ix_invoice_invoices_status", "tenant_id", "status"),
        Index("ix_invoice_invoices_customer", "tenant_id", "customer_id"),
        # Gapless numbers per (seller, series) proven like uq_invoice_number. An invoice with
        # a seller keeps its sequence in `seller_sequence` (and none in `sequence`): SQLite
        # cannot widen uq_invoice_number without rebuilding a table others reference.
        Index(
            "uq_invoice_seller_number",
            "tenant_id",
            "seller_id",
            "series",
            "seller_sequence",
            unique=True,
        ),
    )

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=64)
    idempotency_key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    status: str = Field(max_length=16)
    series: str = Field(max_length=16)
    sequence: int | None = None
    number: str | None = Field(default=None, max_length=32)
    currency: str = Field(max_length=3)
    price_mode: str = Field(max_length=16)
    customer_id: str = Field(max_length=128)
    customer_type: str | None = Field(default=None, max_length=64)
    customer_country: str = Field(max_length=2)
    customer_region: str | None = Field(default=None, max_length=16)
    customer_tax_status: str = Field(max_length=16)
    customer_tax_id: str | None = Field(default=None, max_length=64)
    customer_name: str | None = Field(default=None, max_length=200)
    customer_email: str | None = Field(default=None, max_length=254)
    customer_address: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    memo: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Totals are derived from the lines; stored for listing and reporting without a join.
    subtotal: Decimal = _money()
    discount_total: Decimal = _money()
    net_total: Decimal = _money()
    tax_total: Decimal = _money()
    total: Decimal = _money()
    amount_paid: Decimal = _money()
    due_days: int
    tax_calculation_id: str | None = Field(default=None, max_length=64)
    discount_redemption_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = _when()
    updated_at: datetime = _when()
    issued_at: datetime | None = _when(nullable=True)
    due_date: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    paid_at: datetime | None = _when(nullable=True)
    voided_at: datetime | None = _when(nullable=True)
    version: int = 1
    # Sellers (0003): which one issues the invoice and what it was when it did (JSON).
    seller_id: str | None = Field(default=None, max_length=36)
    seller_sequence: int | None = None
    seller_snapshot: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    customer_location_country: str | None = Field(default=None, max_length=2)
    customer_location_region: str | None = Field(default=None, max_length=16)
    customer_kind: str | None = Field(default=None, max_length=16)
    customer_exemption_certificate: str | None = Field(default=None, max_length=128)
    tax_treatment: str | None = Field(default=None, max_length=32)
    tax_breakdown: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Credit notes (0004): the sum of their totals; NULL on rows written before is 0.
    amount_credited: Decimal | None = _money(nullable=True)
    # Document language (0005): as decided (NULL on rows written before: "en") and as the
    # customer asked for it at creation.
    language: str | None = Field(default=None, max_length=35)
    requested_language: str | None = Field(default=None, max_length=35)
    # E-invoices (0006): the buyer's postal address (BG-8; street lines JSON), the buyer
    # reference (BT-10) and the e-invoice format offered since finalization.
    customer_street: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    customer_city: str | None = Field(default=None, max_length=100)
    customer_postcode: str | None = Field(default=None, max_length=16)
    customer_subdivision: str | None = Field(default=None, max_length=100)
    customer_address_country: str | None = Field(default=None, max_length=2)
    buyer_reference: str | None = Field(default=None, max_length=200)
    einvoice_format: str | None = Field(default=None, max_length=16)


class InvoiceLineRow(SQLModel, table=True):
    __tablename__ = "invoice_lines"

    invoice_id: str = Field(primary_key=True, foreign_key="invoice_invoices.id", max_length=36)
    position: int = Field(primary_key=True)
    tenant_id: str = Field(max_length=64)
    description: str = Field(sa_column=Column(Text, nullable=False))
    quantity: Decimal = _money()
    unit_price: Decimal = _money()
    category: str = Field(max_length=64)
    subtotal: Decimal = _money()
    discount: Decimal = _money()
    net: Decimal = _money()
    tax: Decimal = _money()
    total: Decimal = _money()
    exemption: str | None = Field(default=None, max_length=32)
    vat_category: str | None = Field(default=None, max_length=8)
    vat_exemption_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    vat_exemption_reason_code: str | None = Field(default=None, max_length=32)


class InvoiceLineTaxRow(SQLModel, table=True):
    __tablename__ = "invoice_line_taxes"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice_invoices.id", max_length=36, index=True)
    tenant_id: str = Field(max_length=64)
    position: int
    seq: int
    rule_id: str | None = Field(default=None, max_length=64)
    name: str = Field(max_length=200)
    rate: Decimal = _money()
    amount: Decimal = _money()
    compound: bool = False


class InvoiceDiscountRow(SQLModel, table=True):
    __tablename__ = "invoice_discounts"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice_invoices.id", max_length=36, index=True)
    tenant_id: str = Field(max_length=64)
    seq: int
    kind: str = Field(max_length=16)
    code: str | None = Field(default=None, max_length=64)
    name: str = Field(max_length=300)
    amount: Decimal = _money()


class InvoiceStatusHistoryRow(SQLModel, table=True):
    __tablename__ = "invoice_status_history"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice_invoices.id", max_length=36, index=True)
    tenant_id: str = Field(max_length=64)
    seq: int
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str = Field(max_length=16)
    at: datetime = _when()
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    actor: str | None = Field(default=None, max_length=200)
    event_id: str | None = Field(default=None, max_length=64)


class InvoicePaymentRow(SQLModel, table=True):
    __tablename__ = "invoice_payments"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice_invoices.id", max_length=36, index=True)
    tenant_id: str = Field(max_length=64)
    seq: int
    kind: str = Field(max_length=16)
    payment_id: str = Field(max_length=64)
    refund_id: str | None = Field(default=None, max_length=64)
    event_id: str | None = Field(default=None, max_length=64)
    amount: Decimal = _money()
    currency: str = Field(max_length=3)
    applied: bool
    flag: str | None = Field(default=None, max_length=32)
    detail: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    at: datetime = _when()


class InvoiceNumberSeriesRow(SQLModel, table=True):
    """The gapless counter: one row per (tenant, series), incremented in the finalizing
    transaction, so a rolled-back finalization gives its number back."""

    __tablename__ = "invoice_number_series"

    tenant_id: str = Field(primary_key=True, max_length=64)
    series: str = Field(primary_key=True, max_length=16)
    last_number: int


class ReceivedEventRow(SQLModel, table=True):
    """Peer events this service receives for its history (tax calculated, discount applied)."""

    __tablename__ = "invoice_received_events"
    __table_args__ = (Index("ix_invoice_received_events_ref", "tenant_id", "reference"),)

    event_id: str = Field(primary_key=True, max_length=64)
    tenant_id: str = Field(max_length=64)
    event_type: str = Field(max_length=128)
    reference: str | None = Field(default=None, max_length=128)
    subject: str | None = Field(default=None, max_length=128)
    source: str = Field(max_length=200)
    occurred_at: datetime = _when()
    received_at: datetime = _when()
    data: str = Field(sa_column=Column(Text, nullable=False))


class PendingCreationRow(SQLModel, table=True):
    """An invoice being created that has redeemed a discount: written before the redemption,
    removed in the transaction that stores the invoice. A row left behind (the final write
    failed, the process died) means the redemption is given back to the discount service."""

    __tablename__ = "invoice_pending_creations"

    tenant_id: str = Field(primary_key=True, max_length=64)
    invoice_id: str = Field(primary_key=True, max_length=36)
    redemption_key: str = Field(max_length=400)
    started_at: datetime = _when()
    releasing: bool = Field(default=False)


class InvoiceDocumentCounterRow(SQLModel, table=True):
    """The gapless counters of sellers: one row per (tenant, seller, document type, series).
    Invoices without a seller keep counting in invoice_number_series."""

    __tablename__ = "invoice_document_counters"

    tenant_id: str = Field(primary_key=True, max_length=64)
    seller_id: str = Field(primary_key=True, max_length=36)
    document_type: str = Field(primary_key=True, max_length=16)
    series: str = Field(primary_key=True, max_length=16)
    last_number: int


class InvoiceSellerRow(SQLModel, table=True):
    """A seller (legal entity) of a tenant. Street lines and tax registrations are JSON."""

    __tablename__ = "invoice_sellers"
    __table_args__ = (Index("ix_invoice_sellers_page", "tenant_id", "created_at", "id"),)

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=64)
    legal_name: str = Field(max_length=200)
    country: str = Field(max_length=2)
    region: str | None = Field(default=None, max_length=16)
    postcode: str | None = Field(default=None, max_length=16)
    city: str = Field(max_length=100)
    street: str = Field(sa_column=Column(Text, nullable=False))
    vat_id: str | None = Field(default=None, max_length=32)
    tax_registrations: str = Field(sa_column=Column(Text, nullable=False))
    email: str | None = Field(default=None, max_length=254)
    phone: str | None = Field(default=None, max_length=32)
    iban: str | None = Field(default=None, max_length=34)
    bic: str | None = Field(default=None, max_length=11)
    default_currency: str | None = Field(default=None, max_length=3)
    language: str = Field(max_length=16)
    invoice_series: str = Field(max_length=16)
    credit_note_series: str = Field(max_length=16)
    active: bool = True
    created_at: datetime = _when()
    updated_at: datetime = _when()
    version: int = 1


class InvoiceDefaultSellerRow(SQLModel, table=True):
    """The tenant's default seller: one row per tenant, so there is never more than one."""

    __tablename__ = "invoice_default_sellers"

    tenant_id: str = Field(primary_key=True, max_length=64)
    seller_id: str = Field(foreign_key="invoice_sellers.id", max_length=36)


class InvoiceSellerVersionRow(SQLModel, table=True):
    """One counter per tenant, bumped in the transaction of every change of the tenant's
    sellers or of its default seller: a process uses its cached sellers only while they are
    the tenant's current ones, whichever replica changed them."""

    __tablename__ = "invoice_seller_versions"

    tenant_id: str = Field(primary_key=True, max_length=64)
    version: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False, server_default="0")
    )


class CreditNoteRow(SQLModel, table=True):
    __tablename__ = "invoice_credit_notes"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key", name="uq_invoice_credit_note_key"),
        # Gapless per (seller, series): the counter makes numbers unique, this proves it.
        UniqueConstraint(
            "tenant_id", "seller_id", "series", "sequence", name="uq_invoice_credit_note_number"
        ),
        Index("ix_invoice_credit_notes_invoice", "tenant_id", "invoice_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=64)
    idempotency_key: str = Field(max_length=255)
    request_hash: str = Field(max_length=64)
    invoice_id: str = Field(foreign_key="invoice_invoices.id", max_length=36)
    invoice_number: str = Field(max_length=32)
    # "" for a tenant without sellers (the counter's key cannot be NULL).
    seller_id: str = Field(max_length=36)
    customer_id: str = Field(max_length=128)
    currency: str = Field(max_length=3)
    series: str = Field(max_length=16)
    sequence: int
    number: str = Field(max_length=32)
    status: str = Field(max_length=16)
    settlement: str = Field(max_length=16)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    net_total: Decimal = _money()
    tax_total: Decimal = _money()
    total: Decimal = _money()
    # JSON: the lines with their tax components, and the refunds (refund id -> amount).
    lines: str = Field(sa_column=Column(Text, nullable=False))
    refunds: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = _when()
    settled_at: datetime | None = _when(nullable=True)
    version: int = 1


class CustomerBalanceEntryRow(SQLModel, table=True):
    """The customer balance ledger: one entry per credit note credited to the balance
    (positive: the tenant owes the customer)."""

    __tablename__ = "invoice_customer_balance_entries"
    __table_args__ = (Index("ix_invoice_customer_balance", "tenant_id", "customer_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(max_length=64)
    customer_id: str = Field(max_length=128)
    currency: str = Field(max_length=3)
    amount: Decimal = _money()
    credit_note_id: str | None = Field(default=None, max_length=36)
    description: str = Field(sa_column=Column(Text, nullable=False))
    at: datetime = _when()


class CustomerSettingsRow(SQLModel, table=True):
    """Per-customer settings of a tenant (0006): the default e-invoice format."""

    __tablename__ = "invoice_customer_settings"

    tenant_id: str = Field(primary_key=True, max_length=64)
    customer_id: str = Field(primary_key=True, max_length=128)
    einvoice_format: str = Field(max_length=16)
    updated_at: datetime = _when()
    updated_by: str | None = Field(default=None, max_length=200)
