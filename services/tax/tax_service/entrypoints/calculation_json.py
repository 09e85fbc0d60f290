"""The body of a calculation answer, written from the domain result as plain values.

`CalculationOut.of(calculation)` builds and validates eighteen models for a two-line
calculation before pydantic serialises them: most of a calculation's response cost. This
writes the same bytes from dicts of strings (amounts through `format_amount`, as
`DecimalOut` does). `CalculationOut` stays the documented schema (`response_model`), and a
property test holds the two byte for byte (tests/test_calculation_json.py)."""

from __future__ import annotations

from typing import Any

from pydantic_core import to_json

from billing_common.money import format_amount
from tax_service.domain.model import (
    AppliedTax,
    BreakdownEntry,
    LineResult,
    TaxCalculation,
    VatIdCheck,
)


def calculation_json(calculation: TaxCalculation) -> bytes:
    """`CalculationOut.of(calculation).model_dump_json(by_alias=True)`, as bytes."""
    # pydantic-core's encoder (the one model_dump_json uses) writes the datetimes and the
    # strings exactly as the model would: "Z" for UTC, the same escapes.
    return to_json(calculation_dict(calculation))


def calculation_dict(calculation: TaxCalculation) -> dict[str, Any]:
    request = calculation.request
    customer = request.customer
    seller, customer_location = request.seller_location, request.customer_location
    evidence = calculation.evidence
    return {
        "id": calculation.id,
        "currency": request.currency,
        "price_mode": request.price_mode.value,
        "tax_rounding": request.rounding.value,
        "jurisdiction": {
            "country": request.jurisdiction.country,
            "region": request.jurisdiction.region,
        },
        "customer": {
            "id": customer.id,
            "tax_status": customer.tax_status.value,
            "tax_id": customer.tax_id,
        },
        "date": request.date,
        "reference": request.reference,
        "total_net": format_amount(calculation.total_net.amount),
        "total_tax": format_amount(calculation.total_tax.amount),
        "total_gross": format_amount(calculation.total_gross.amount),
        "lines": [_line(result) for result in calculation.lines],
        "created_at": calculation.created_at,
        "treatment": calculation.treatment.value,
        "breakdown": [_breakdown(entry) for entry in calculation.breakdown],
        "evidence": {"vat_id_check": _vat_id_check(evidence)} if evidence is not None else None,
        "parties": {
            "seller": {
                "country": seller.country,
                "region": seller.region,
                "vat_id": request.seller.vat_id if request.seller else None,
                "given": request.seller is not None,
            },
            "customer": {
                "country": customer_location.country,
                "region": customer_location.region,
                "kind": customer.resolved_kind.value,
                "exemption_certificate": customer.exemption_certificate,
            },
        },
    }


def _line(result: LineResult) -> dict[str, Any]:
    line, vat = result.line, result.vat
    return {
        "id": line.id,
        "description": line.description,
        "category": line.category,
        "unit_price": format_amount(line.unit_price.amount),
        "quantity": format_amount(line.quantity),
        "net": format_amount(result.net.amount),
        "tax": format_amount(result.tax.amount),
        "gross": format_amount(result.gross.amount),
        "exemption": result.exemption.value if result.exemption else None,
        "taxes": [_applied(tax) for tax in result.taxes],
        "vat_category": vat.category.value,
        "vat_exemption_reason": vat.reason,
        "vat_exemption_reason_code": vat.reason_code,
        "treatment": vat.treatment.value,
    }


def _applied(tax: AppliedTax) -> dict[str, Any]:
    return {
        "rule_id": tax.rule_id,
        "name": tax.name,
        "rate": format_amount(tax.rate),
        "amount": format_amount(tax.amount.amount),
        "compound": tax.compound,
    }


def _breakdown(entry: BreakdownEntry) -> dict[str, Any]:
    return {
        "vat_category": entry.category.value,
        "rate": format_amount(entry.rate),
        "taxable_amount": format_amount(entry.taxable.amount),
        "tax_amount": format_amount(entry.tax.amount),
        "exemption_reason": entry.reason,
        "exemption_reason_code": entry.reason_code,
    }


def _vat_id_check(check: VatIdCheck) -> dict[str, Any]:
    return {
        "vat_id": check.vat_id,
        "valid": check.valid,
        "source": check.source,
        "checked_at": check.checked_at,
        "request_id": check.request_id,
        "detail": check.detail,
    }
