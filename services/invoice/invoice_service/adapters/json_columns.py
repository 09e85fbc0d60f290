"""The invoice's JSON columns (0003): the seller snapshot and the VAT breakdown. Both are
documents read and written whole with the invoice, never queried by their parts. And the
buyer's postal address (0006): its street lines are JSON, its other parts columns."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from invoice_service.domain.einvoicing import PostalAddress
from invoice_service.domain.model import VatBreakdown
from invoice_service.domain.sellers import SellerSnapshot


def snapshot_of(text: str | None) -> SellerSnapshot | None:
    return None if text is None else SellerSnapshot.from_dict(json.loads(text))


def breakdown_json(breakdown: tuple[VatBreakdown, ...]) -> str | None:
    if not breakdown:
        return None
    return json.dumps(
        [
            {
                "vat_category": b.vat_category,
                "rate": str(b.rate),
                "taxable_amount": str(b.taxable_amount),
                "tax_amount": str(b.tax_amount),
                "exemption_reason": b.exemption_reason,
                "exemption_reason_code": b.exemption_reason_code,
            }
            for b in breakdown
        ]
    )


def breakdown_of(text: str | None) -> tuple[VatBreakdown, ...]:
    if text is None:
        return ()
    return tuple(
        VatBreakdown(
            vat_category=b["vat_category"],
            rate=Decimal(b["rate"]),
            taxable_amount=Decimal(b["taxable_amount"]),
            tax_amount=Decimal(b["tax_amount"]),
            exemption_reason=b.get("exemption_reason"),
            exemption_reason_code=b.get("exemption_reason_code"),
        )
        for b in json.loads(text)
    )


def postal_address_columns(address: PostalAddress | None) -> dict[str, Any]:
    return {
        "customer_street": json.dumps(list(address.street)) if address else None,
        "customer_city": address.city if address else None,
        "customer_postcode": address.postcode if address else None,
        "customer_subdivision": address.subdivision if address else None,
        "customer_address_country": address.country if address else None,
    }


def postal_address_of(
    country: str | None,
    street: str | None,
    city: str | None,
    postcode: str | None,
    subdivision: str | None,
) -> PostalAddress | None:
    """None for invoices written before 0005 (or without an address): country is NULL."""
    if country is None:
        return None
    return PostalAddress(
        country=country,
        street=tuple(json.loads(street)) if street else (),
        city=city,
        postcode=postcode,
        subdivision=subdivision,
    )
