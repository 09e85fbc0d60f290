"""The invoice's JSON columns (0003): the seller snapshot and the VAT breakdown. Both are
documents read and written whole with the invoice, never queried by their parts."""

from __future__ import annotations

import json
from decimal import Decimal

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
