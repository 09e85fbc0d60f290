"""SQLModel tables of the payment service. Every business table carries `tenant_id`; names are
prefixed `payment_` because all services share SQLModel's metadata in one process.

Migrations in `migrations/versions` create exactly these tables (keep them in step)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Index, Integer, UniqueConstraint
from sqlmodel import Column, Field, SQLModel

from billing_common.db import ExactDecimal, UtcDateTime


def _money(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(ExactDecimal(), nullable=nullable))


def _when(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=Column(UtcDateTime(), nullable=nullable))


class PayableInvoiceRow(SQLModel, table=True):
    __tablename__ = "payment_payable_invoices"

    tenant_id: str = Field(primary_key=True, max_length=64)
    invoice_id: str = Field(primary_key=True, max_length=64)
    state: str = Field(max_length=16)
    customer_id: str | None = Field(default=None, max_length=128)
    currency: str | None = Field(default=None, max_length=3)
    total: Decimal | None = _money(nullable=True)
    amount_due: Decimal | None = _money(nullable=True)
    number: str | None = Field(default=None, max_length=64)
    # The invoice's version last learned (orders the status changes it reports).
    invoice_version: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    created_at: datetime = _when()
    updated_at: datetime = _when()


class PaymentRow(SQLModel, table=True):
    __tablename__ = "payment_payments"
    __table_args__ = (
        # A gateway reference names one payment: webhooks find it through this.
        UniqueConstraint("gateway", "gateway_reference", name="uq_payment_gateway_reference"),
        Index("ix_payment_payments_tenant_invoice", "tenant_id", "invoice_id"),
        Index("ix_payment_payments_tenant_created", "tenant_id", "created_at"),
        Index("ix_payment_payments_lease_until", "lease_until"),
    )

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=64)
    invoice_id: str = Field(max_length=64)
    customer_id: str | None = Field(default=None, max_length=128)
    currency: str = Field(max_length=3)
    amount: Decimal = _money()
    refunded_amount: Decimal = _money()
    status: str = Field(max_length=32)
    gateway: str = Field(max_length=32)
    payment_method: str = Field(max_length=255)
    gateway_reference: str | None = Field(default=None, max_length=255)
    failure_code: str | None = Field(default=None, max_length=64)
    failure_message: str | None = Field(default=None, max_length=500)
    idempotency_key: str = Field(max_length=255)
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    lease_until: datetime | None = _when(nullable=True)
    created_at: datetime = _when()
    updated_at: datetime = _when()


class PaymentStatusHistoryRow(SQLModel, table=True):
    __tablename__ = "payment_status_history"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(max_length=64)
    payment_id: str = Field(max_length=36, index=True)
    from_status: str | None = Field(default=None, max_length=32)
    to_status: str = Field(max_length=32)
    reason: str = Field(max_length=500)
    amount: Decimal | None = _money(nullable=True)
    at: datetime = _when()


class RefundRow(SQLModel, table=True):
    __tablename__ = "payment_refunds"
    __table_args__ = (
        UniqueConstraint("gateway", "gateway_reference", name="uq_payment_refund_reference"),
        Index("ix_payment_refunds_lease_until", "lease_until"),
    )

    id: str = Field(primary_key=True, max_length=36)
    tenant_id: str = Field(max_length=64)
    payment_id: str = Field(max_length=36, index=True)
    gateway: str = Field(max_length=32)
    currency: str = Field(max_length=3)
    amount: Decimal = _money()
    status: str = Field(max_length=16)
    gateway_reference: str | None = Field(default=None, max_length=255)
    failure_code: str | None = Field(default=None, max_length=64)
    failure_message: str | None = Field(default=None, max_length=500)
    idempotency_key: str = Field(max_length=255)
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False))
    lease_until: datetime | None = _when(nullable=True)
    created_at: datetime = _when()
    updated_at: datetime = _when()


class IdempotencyKeyRow(SQLModel, table=True):
    """One row per (tenant, Idempotency-Key), written in the transaction that creates the
    pending payment or refund, before any gateway call: the primary key is what makes a
    second concurrent request with the same key lose."""

    __tablename__ = "payment_idempotency_keys"

    tenant_id: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    operation: str = Field(max_length=16)
    request_hash: str = Field(max_length=64)
    resource_id: str = Field(max_length=36)
    created_at: datetime = _when()


class WebhookEventRow(SQLModel, table=True):
    """Webhook events already applied, so a redelivered event has no second effect."""

    __tablename__ = "payment_webhook_events"

    gateway: str = Field(primary_key=True, max_length=32)
    event_id: str = Field(primary_key=True, max_length=255)
    event_type: str = Field(max_length=128)
    tenant_id: str | None = Field(default=None, max_length=64)
    payment_id: str | None = Field(default=None, max_length=36)
    outcome: str = Field(max_length=32)
    received_at: datetime = _when()
