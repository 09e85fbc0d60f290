"""Request and response bodies. Amounts are decimal strings both ways: a JSON number is
refused on input (it may already have been through a float) and never produced on output."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from billing_common.money import Money, format_amount
from billing_common.wire import DecimalString
from payment_service.domain.model import (
    ACCEPTS_PAYMENTS,
    PaymentStatus,
    RefundStatus,
    StatusChange,
    legacy_state,
)
from payment_service.domain.model import Payment as PaymentModel
from payment_service.domain.model import Refund as RefundModel
from payment_service.service_layer.queries import InvoiceView


class PayRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "invoice_id": "inv_123",
                    "amount": "25.00",
                    "currency": "EUR",
                    "payment_method": "tok_visa",
                    "gateway": "sandbox",
                }
            ]
        },
    )

    invoice_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    amount: DecimalString | None = Field(
        default=None, description="Default: everything outstanding on the invoice"
    )
    currency: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z]{3}$",
        description="Optional check: must be the invoice's currency",
    )
    payment_method: str = Field(
        min_length=1,
        max_length=255,
        pattern=r"^[A-Za-z0-9_]+$",
        description="Gateway token, e.g. tok_visa (sandbox) or pm_... (Stripe)",
        examples=["tok_visa"],
    )
    gateway: str = Field(default="sandbox", pattern=r"^[a-z][a-z0-9_]{0,31}$")


class RefundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: DecimalString | None = Field(
        default=None, description="Default: everything still refundable"
    )


class SandboxConfirmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: Literal["succeeded", "failed"] = "succeeded"
    failure_code: str | None = Field(default=None, max_length=64, pattern=r"^[a-z_]+$")


class StatusChangeOut(BaseModel):
    from_status: PaymentStatus | None
    to_status: PaymentStatus
    reason: str
    amount: str | None
    at: datetime


class RefundOut(BaseModel):
    id: str
    payment_id: str
    amount: str
    currency: str
    status: RefundStatus
    gateway_reference: str | None
    failure_code: str | None
    failure_message: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime


NextAction = Literal["retry", "in_progress", "await_confirmation"]


class PaymentOut(BaseModel):
    id: str
    invoice_id: str
    customer_id: str | None
    amount: str
    currency: str
    status: PaymentStatus
    gateway: str
    payment_method: str
    gateway_reference: str | None
    failure_code: str | None
    failure_message: str | None
    refunded_amount: str
    refundable_amount: str
    attempts: int
    next_action: NextAction | None = Field(
        description="For pending payments: `retry` (outcome unknown: repeat the request with "
        "the same Idempotency-Key), `in_progress` (another request is calling the gateway), "
        "`await_confirmation` (the gateway settles it later and sends a webhook)"
    )
    created_at: datetime
    updated_at: datetime
    refunds: list[RefundOut]
    history: list[StatusChangeOut]


class PaymentPage(BaseModel):
    items: list[PaymentOut]
    total: int
    limit: int
    offset: int


class RefundResponse(BaseModel):
    refund: RefundOut
    payment: PaymentOut


class PayableInvoiceOut(BaseModel):
    invoice_id: str
    number: str | None
    customer_id: str | None
    currency: str | None
    status: str = Field(
        description="the invoice's status in the invoice service's vocabulary: draft, "
        "issued, partially_paid, paid, void, uncollectible"
    )
    state: str = Field(
        deprecated=True,
        description="former name: open (issued, partially_paid, paid), draft or void "
        "(void, uncollectible); use status",
    )
    payable: bool = Field(description="accepts payments and something is outstanding")
    total: str | None
    amount_due: str | None
    paid: str | None = Field(description="captured minus refunded")
    captured: str | None
    refunded: str | None
    pending: str | None = Field(description="held by payments not yet settled")
    outstanding: str | None = Field(description="max(0, amount_due - paid - pending)")
    updated_at: datetime


class WebhookAck(BaseModel):
    received: bool = True
    duplicate: bool
    effect: str
    payment_id: str | None


class SandboxConfirmOut(BaseModel):
    webhook: WebhookAck
    payment: PaymentOut


def _amount(value: Decimal | None) -> str | None:
    return None if value is None else format_amount(value)


def _money(value: Money) -> str:
    """Exact to the currency's minor unit on the wire ("0.00", not "0"). Stored amounts are
    already exact, so this rounding (explicitly half-up) never changes a value."""
    return format_amount(value.rounded(ROUND_HALF_UP).amount)


def refund_out(refund: RefundModel) -> RefundOut:
    return RefundOut(
        id=refund.id,
        payment_id=refund.payment_id,
        amount=_money(refund.amount),
        currency=refund.amount.currency,
        status=refund.status,
        gateway_reference=refund.gateway_reference,
        failure_code=refund.failure_code,
        failure_message=refund.failure_message,
        attempts=refund.attempts,
        created_at=refund.created_at,
        updated_at=refund.updated_at,
    )


def _next_action(payment: PaymentModel, now: datetime) -> NextAction | None:
    if payment.status is not PaymentStatus.PENDING:
        return None
    if payment.gateway_reference is not None:
        return "await_confirmation"
    if payment.lease_until is not None and payment.lease_until > now:
        return "in_progress"
    return "retry"


def payment_out(payment: PaymentModel) -> PaymentOut:
    return PaymentOut(
        id=payment.id,
        invoice_id=payment.invoice_id,
        customer_id=payment.customer_id,
        amount=_money(payment.amount),
        currency=payment.amount.currency,
        status=payment.status,
        gateway=payment.gateway,
        payment_method=payment.payment_method,
        gateway_reference=payment.gateway_reference,
        failure_code=payment.failure_code,
        failure_message=payment.failure_message,
        refunded_amount=_money(payment.refunded_amount),
        refundable_amount=_money(payment.refundable),
        attempts=payment.attempts,
        next_action=_next_action(payment, datetime.now(UTC)),
        created_at=payment.created_at,
        updated_at=payment.updated_at,
        refunds=[refund_out(r) for r in payment.refunds],
        history=[_change_out(c) for c in payment.history],
    )


def _change_out(change: StatusChange) -> StatusChangeOut:
    return StatusChangeOut(
        from_status=change.from_status,
        to_status=change.to_status,
        reason=change.reason,
        amount=_amount(change.amount),
        at=change.at,
    )


def payable_invoice_out(view: InvoiceView) -> PayableInvoiceOut:
    invoice, balance = view.invoice, view.balance
    accepts = invoice.state in ACCEPTS_PAYMENTS
    return PayableInvoiceOut(
        invoice_id=invoice.invoice_id,
        number=invoice.number,
        customer_id=invoice.customer_id,
        currency=invoice.currency,
        status=str(invoice.state),
        state=legacy_state(invoice.state),
        payable=accepts and balance is not None and not balance.outstanding.is_zero,
        total=_amount(invoice.total),
        amount_due=_amount(invoice.amount_due),
        paid=_money(balance.net_paid) if balance else None,
        captured=_money(balance.captured) if balance else None,
        refunded=_money(balance.refunded) if balance else None,
        pending=_money(balance.pending) if balance else None,
        outstanding=_money(balance.outstanding) if balance else None,
        updated_at=invoice.updated_at,
    )
