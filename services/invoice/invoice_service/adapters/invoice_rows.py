"""An invoice as the rows of its tables, for core INSERTs (SqlInvoiceRepository.add / save).

Each table gets one constant INSERT statement, compiled once and sent with all its rows as the
driver's executemany (asyncpg pipelines it in one round trip): no ORM unit of work on the hot
path. A new column of the invoice goes into `invoice_row`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy import insert as sql_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from invoice_service.adapters.json_columns import breakdown_json, postal_address_columns
from invoice_service.adapters.orm import (
    InvoiceDiscountRow,
    InvoiceLineRow,
    InvoiceLineTaxRow,
    InvoicePaymentRow,
    InvoiceRow,
    InvoiceStatusHistoryRow,
)
from invoice_service.domain.model import Invoice

INVOICES: Table = InvoiceRow.__table__  # type: ignore[attr-defined]
LINES: Table = InvoiceLineRow.__table__  # type: ignore[attr-defined]
LINE_TAXES: Table = InvoiceLineTaxRow.__table__  # type: ignore[attr-defined]
DISCOUNTS: Table = InvoiceDiscountRow.__table__  # type: ignore[attr-defined]
HISTORY: Table = InvoiceStatusHistoryRow.__table__  # type: ignore[attr-defined]
PAYMENTS: Table = InvoicePaymentRow.__table__  # type: ignore[attr-defined]

_INSERTS = {
    table.name: sql_insert(table)
    for table in (INVOICES, LINES, LINE_TAXES, DISCOUNTS, HISTORY, PAYMENTS)
}


async def insert(connection: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> None:
    """All `rows` of one table in one call (none: no statement)."""
    if rows:
        await connection.execute(_INSERTS[table.name], rows)


def invoice_row(invoice: Invoice, *, idempotency_key: str, request_hash: str) -> dict[str, Any]:
    """The header row of a new invoice, without the columns that change over its life (the
    repository adds those, as `save` writes them)."""
    customer = invoice.customer
    return {
        "id": invoice.id,
        "tenant_id": invoice.tenant_id,
        "idempotency_key": idempotency_key,
        "request_hash": request_hash,
        "created_at": invoice.created_at,
        "customer_id": customer.id,
        "customer_type": customer.type,
        "customer_country": customer.country,
        "customer_region": customer.region,
        "customer_tax_status": customer.tax_status.value,
        "customer_tax_id": customer.tax_id,
        "customer_name": customer.name,
        "customer_email": customer.email,
        "customer_address": customer.address,
        "currency": invoice.currency,
        "price_mode": invoice.price_mode.value,
        "memo": invoice.memo,
        "due_days": invoice.due_days,
        "tax_calculation_id": invoice.tax_calculation_id,
        "discount_redemption_id": invoice.discount_redemption_id,
        "seller_id": invoice.seller_id,
        "customer_location_country": customer.location_country,
        "customer_location_region": customer.location_region,
        "customer_kind": customer.kind.value if customer.kind else None,
        "customer_exemption_certificate": customer.exemption_certificate,
        "tax_treatment": invoice.tax_treatment,
        "tax_breakdown": breakdown_json(invoice.tax_breakdown),
        "requested_language": invoice.requested_language,
        **postal_address_columns(customer.postal_address),
        "buyer_reference": customer.buyer_reference,
    }


def line_rows(invoice: Invoice) -> list[dict[str, Any]]:
    return [
        {
            "invoice_id": invoice.id,
            "position": line.position,
            "tenant_id": invoice.tenant_id,
            "description": line.description,
            "quantity": line.quantity,
            "unit_price": line.unit_price,
            "category": line.category,
            "subtotal": line.subtotal,
            "discount": line.discount,
            "net": line.net,
            "tax": line.tax,
            "total": line.total,
            "exemption": line.exemption,
            "vat_category": line.vat_category,
            "vat_exemption_reason": line.vat_exemption_reason,
            "vat_exemption_reason_code": line.vat_exemption_reason_code,
        }
        for line in invoice.lines
    ]


def tax_rows(invoice: Invoice) -> list[dict[str, Any]]:
    return [
        {
            "invoice_id": invoice.id,
            "tenant_id": invoice.tenant_id,
            "position": line.position,
            "seq": seq,
            "rule_id": tax.rule_id,
            "name": tax.name,
            "rate": tax.rate,
            "amount": tax.amount,
            "compound": tax.compound,
        }
        for line in invoice.lines
        for seq, tax in enumerate(line.taxes)
    ]


def discount_rows(invoice: Invoice) -> list[dict[str, Any]]:
    return [
        {
            "invoice_id": invoice.id,
            "tenant_id": invoice.tenant_id,
            "seq": seq,
            "kind": discount.kind,
            "code": discount.code,
            "name": discount.name,
            "amount": discount.amount,
        }
        for seq, discount in enumerate(invoice.discounts)
    ]


def history_rows(invoice: Invoice, start: int) -> list[dict[str, Any]]:
    """The status changes from `start` on (those not stored yet)."""
    return [
        {
            "invoice_id": invoice.id,
            "tenant_id": invoice.tenant_id,
            "seq": seq,
            "from_status": change.from_status.value if change.from_status else None,
            "to_status": change.to_status.value,
            "at": change.at,
            "reason": change.reason,
            "actor": change.actor,
            "event_id": change.event_id,
        }
        for seq, change in enumerate(invoice.history[start:], start=start)
    ]


def payment_rows(invoice: Invoice, start: int) -> list[dict[str, Any]]:
    """The payment records from `start` on (those not stored yet)."""
    return [
        {
            "invoice_id": invoice.id,
            "tenant_id": invoice.tenant_id,
            "seq": seq,
            "kind": payment.kind.value,
            "payment_id": payment.payment_id,
            "refund_id": payment.refund_id,
            "event_id": payment.event_id,
            "amount": payment.amount,
            "currency": payment.currency,
            "applied": payment.applied,
            "flag": payment.flag.value if payment.flag else None,
            "detail": payment.detail,
            "at": payment.at,
        }
        for seq, payment in enumerate(invoice.payments[start:], start=start)
    ]
