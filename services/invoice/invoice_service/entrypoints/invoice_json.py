"""The body of an invoice answer, written from the domain invoice as plain values.

`InvoiceOut.of(invoice)` builds and validates a model per customer, line, tax, discount and
history entry before pydantic serialises them: on the creation's hot path that is most of
its answer's cost. This writes the same bytes from dicts (amounts through `format_amount`,
as DecimalString writes them; datetimes and strings through pydantic-core's encoder, the
one model_dump_json uses). The seller snapshot and a postal address, which few answers
carry, are their models' own dumps. `InvoiceOut` stays the documented schema
(`response_model`), and tests hold the two byte for byte (tests/test_invoice_json.py)."""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json

from billing_common.money import format_amount
from invoice_service.domain.model import Invoice, InvoiceLine
from invoice_service.entrypoints.einvoice_schemas import PostalAddressOut
from invoice_service.entrypoints.seller_schemas import SellerSnapshotOut
from invoice_service.service_layer.einvoices import available_documents


def invoice_json(invoice: Invoice) -> bytes:
    """`InvoiceOut.of(invoice).model_dump_json(by_alias=True)`, as bytes."""
    return to_json(invoice_dict(invoice))


def invoice_dict(invoice: Invoice) -> dict[str, Any]:
    """InvoiceOut's fields in its order (its base's, _Totals, first), as JSON values."""
    totals = invoice.totals
    c = invoice.customer
    return {
        "subtotal": format_amount(totals.subtotal),
        "discount_total": format_amount(totals.discount_total),
        "tax_total": format_amount(totals.tax_total),
        "total": format_amount(totals.total),
        "amount_paid": format_amount(invoice.amount_paid),
        "amount_due": format_amount(invoice.amount_due),
        "amount_credited": format_amount(invoice.amount_credited),
        "id": invoice.id,
        "number": invoice.number,
        "series": invoice.series,
        "status": invoice.status.value,
        "currency": invoice.currency,
        "price_mode": invoice.price_mode.value,
        "customer": {
            "id": c.id,
            "type": c.type,
            "jurisdiction": {"country": c.country, "region": c.region},
            "tax_status": c.tax_status.value,
            "tax_id": c.tax_id,
            "name": c.name,
            "email": c.email,
            "address": c.address,
            "country": c.location_country,
            "region": c.location_region,
            "kind": c.kind.value if c.kind else None,
            "exemption_certificate": c.exemption_certificate,
            "postal_address": (
                PostalAddressOut.of(c.postal_address).model_dump(mode="json")
                if c.postal_address
                else None
            ),
            "buyer_reference": c.buyer_reference,
        },
        "net_total": format_amount(totals.net_total),
        "overpaid": format_amount(invoice.overpaid),
        "tax_calculation_id": invoice.tax_calculation_id,
        "discount_redemption_id": invoice.discount_redemption_id,
        "due_days": invoice.due_days,
        "memo": invoice.memo,
        "created_at": invoice.created_at,
        "updated_at": invoice.updated_at,
        "issued_at": invoice.issued_at,
        "due_date": invoice.due_date,
        "paid_at": invoice.paid_at,
        "voided_at": invoice.voided_at,
        "version": invoice.version,
        "lines": [_line(line) for line in invoice.lines],
        "discounts": [
            {"kind": d.kind, "code": d.code, "name": d.name, "amount": format_amount(d.amount)}
            for d in invoice.discounts
        ],
        "payments": [
            {
                "kind": p.kind.value,
                "payment_id": p.payment_id,
                "refund_id": p.refund_id,
                "amount": format_amount(p.amount),
                "currency": p.currency,
                "applied": p.applied,
                "flag": p.flag.value if p.flag else None,
                "detail": p.detail,
                "event_id": p.event_id,
                "at": p.at,
            }
            for p in invoice.payments
        ],
        "history": [
            {
                "from_status": h.from_status.value if h.from_status else None,
                "to_status": h.to_status.value,
                "at": h.at,
                "reason": h.reason,
                "actor": h.actor,
                "event_id": h.event_id,
            }
            for h in invoice.history
        ],
        "received_events": [],
        "seller_id": invoice.seller_id,
        "seller": (
            SellerSnapshotOut.of(invoice.seller).model_dump(mode="json") if invoice.seller else None
        ),
        "tax_treatment": invoice.tax_treatment,
        "tax_breakdown": [
            {
                "vat_category": b.vat_category,
                "rate": format_amount(b.rate),
                "taxable_amount": format_amount(b.taxable_amount),
                "tax_amount": format_amount(b.tax_amount),
                "exemption_reason": b.exemption_reason,
                "exemption_reason_code": b.exemption_reason_code,
            }
            for b in invoice.tax_breakdown
        ],
        "language": invoice.language,
        "requested_language": invoice.requested_language,
        "documents": [
            {
                "kind": d.kind,
                "format": d.format.value if d.format else None,
                "media_type": d.media_type,
                "href": d.href,
            }
            for d in available_documents(invoice)
        ],
    }


def _line(line: InvoiceLine) -> dict[str, Any]:
    return {
        "position": line.position,
        "description": line.description,
        "quantity": format_amount(line.quantity),
        "unit_price": format_amount(line.unit_price),
        "category": line.category,
        "subtotal": format_amount(line.subtotal),
        "discount": format_amount(line.discount),
        "net": format_amount(line.net),
        "tax": format_amount(line.tax),
        "total": format_amount(line.total),
        "exemption": line.exemption,
        "taxes": [
            {
                "rule_id": t.rule_id,
                "name": t.name,
                "rate": format_amount(t.rate),
                "amount": format_amount(t.amount),
                "compound": t.compound,
            }
            for t in line.taxes
        ],
        "vat_category": line.vat_category,
        "vat_exemption_reason": line.vat_exemption_reason,
        "vat_exemption_reason_code": line.vat_exemption_reason_code,
    }
