"""Request and response bodies of credit notes. Amounts are decimal strings both ways."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from billing_common.wire import DecimalString, Quantity
from invoice_service.domain.credit_notes import CreditNote, CreditRequestLine, Settlement
from invoice_service.entrypoints.invoice_response_schemas import TaxOut
from invoice_service.service_layer.credit_notes import IssueCreditNote


class CreditLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    position: int = Field(ge=1, le=10_000, description="the invoice line's position")
    quantity: Quantity | None = Field(
        default=None, description="credit this quantity of the line (at its invoiced price)"
    )
    amount: DecimalString | None = Field(
        default=None, description="credit this gross amount (tax included) of the line"
    )


class CreditNoteCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {"reason": "order cancelled", "settlement": "apply"},
                {
                    "reason": "one seat returned",
                    "settlement": "refund",
                    "lines": [{"position": 1, "quantity": "1"}],
                },
                {
                    "reason": "goodwill",
                    "settlement": "customer_balance",
                    "lines": [{"position": 2, "amount": "5.00"}],
                },
            ]
        },
    )

    reason: str = Field(min_length=1, max_length=500, examples=["order cancelled"])
    settlement: Settlement = Field(
        default=Settlement.APPLY,
        description="apply: reduces what the invoice owes; refund: the payment service "
        "refunds captured money; customer_balance: credited to the customer's balance",
    )
    lines: list[CreditLineIn] = Field(
        default_factory=list,
        max_length=500,
        description="what to credit; empty: everything not credited yet (a full credit note)",
    )

    def to_command(
        self, *, tenant: str, actor: str, invoice_id: str, idempotency_key: str
    ) -> IssueCreditNote:
        return IssueCreditNote(
            tenant=tenant,
            actor=actor,
            invoice_id=invoice_id,
            idempotency_key=idempotency_key,
            reason=self.reason,
            settlement=self.settlement,
            lines=tuple(
                CreditRequestLine(line.position, line.quantity, line.amount) for line in self.lines
            ),
        )


class CreditNoteLineOut(BaseModel):
    position: int
    description: str
    quantity: DecimalString | None
    net: DecimalString
    tax: DecimalString
    total: DecimalString
    vat_category: str | None
    taxes: list[TaxOut]


class CreditNoteOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "7a0d2c1e-0c65-5d5e-9f0b-3c2a1d4e5f60",
                    "number": "CN-000001",
                    "invoice_id": "0f8e6a3c-2b1d-5e4f-8a7b-6c5d4e3f2a1b",
                    "invoice_number": "INV-000001",
                    "status": "applied",
                    "settlement": "apply",
                    "currency": "EUR",
                    "net_total": "10.00",
                    "tax_total": "1.90",
                    "total": "11.90",
                }
            ]
        }
    )

    id: str
    number: str
    series: str
    invoice_id: str
    invoice_number: str = Field(description="the invoice it corrects (EN 16931 BT-25)")
    seller_id: str | None
    customer_id: str
    currency: str
    status: Literal["issued", "applied", "refunded", "credited"]
    settlement: Settlement
    reason: str
    net_total: DecimalString
    tax_total: DecimalString
    total: DecimalString
    amount_refunded: DecimalString
    refund_ids: list[str] = Field(description="the payment service's refunds made for it")
    lines: list[CreditNoteLineOut]
    created_at: datetime
    settled_at: datetime | None

    @classmethod
    def of(cls, note: CreditNote) -> CreditNoteOut:
        return cls(
            id=note.id,
            number=note.number,
            series=note.series,
            invoice_id=note.invoice_id,
            invoice_number=note.invoice_number,
            seller_id=note.seller_id,
            customer_id=note.customer_id,
            currency=note.currency,
            status=note.status.value,
            settlement=note.settlement,
            reason=note.reason,
            net_total=note.net_total,
            tax_total=note.tax_total,
            total=note.total,
            amount_refunded=note.amount_refunded,
            refund_ids=sorted(note.refunds),
            lines=[
                CreditNoteLineOut(
                    position=line.position,
                    description=line.description,
                    quantity=line.quantity,
                    net=line.net,
                    tax=line.tax,
                    total=line.total,
                    vat_category=line.vat_category,
                    taxes=[TaxOut.of(t) for t in line.taxes],
                )
                for line in note.lines
            ],
            created_at=note.created_at,
            settled_at=note.settled_at,
        )


class CreditNoteListOut(BaseModel):
    items: list[CreditNoteOut]


class CustomerBalanceOut(BaseModel):
    customer_id: str
    balances: dict[str, DecimalString] = Field(
        description="per currency: what the tenant owes the customer from credit notes"
    )
