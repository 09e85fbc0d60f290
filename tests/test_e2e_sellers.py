"""Sellers across the real services (embedded runtime, sample data): the demo tenant's sample
seller issues the seed invoice, the tax service decides from both parties (domestic here,
reverse charge for a business in another member state), and the issued invoice keeps the
seller as it was."""

from __future__ import annotations

import copy

from billing_launcher.seed_flows import (
    SAMPLE_SELLER_ID,
    SAMPLE_SELLER_NAME,
    create_invoice,
    default_seller,
    expect,
    finalize,
    get_invoice,
    issued_by,
    seed_order,
)
from tests.conftest import Platform


async def test_the_sample_seller_issues_the_seed_invoice_and_is_snapshotted(
    platform: Platform,
) -> None:
    inv, h = platform.clients["invoice"], platform.headers()
    seller = await default_seller(inv, h)
    assert seller is not None and seller["id"] == SAMPLE_SELLER_ID
    invoice = await create_invoice(inv, h, seed_order())
    assert invoice["seller_id"] == SAMPLE_SELLER_ID
    assert {line["vat_category"] for line in invoice["lines"]} == {"S"}
    assert invoice["tax_treatment"] == "domestic"
    assert sum(float(b["tax_amount"]) for b in invoice["tax_breakdown"]) == float(
        invoice["tax_total"]
    )
    issued = await finalize(inv, h, invoice["id"])
    assert issued_by(issued) == f"{SAMPLE_SELLER_NAME}, VAT id DE136695976"
    document = await inv.get(f"/v1/invoices/{invoice['id']}/html", headers=h)
    assert SAMPLE_SELLER_NAME in document.text and "DE89 3704 0044 0532 0130 00" in document.text

    expect(
        await inv.patch(
            f"/v1/sellers/{SAMPLE_SELLER_ID}", json={"legal_name": "Renamed GmbH"}, headers=h
        ),
        200,
    )
    later = await get_invoice(inv, h, invoice["id"])
    assert later["seller"]["legal_name"] == SAMPLE_SELLER_NAME
    again = await inv.get(f"/v1/invoices/{invoice['id']}/html", headers=h)
    assert again.text == document.text


async def test_a_business_in_another_member_state_is_reverse_charged(platform: Platform) -> None:
    inv, h = platform.clients["invoice"], platform.headers()
    order = copy.deepcopy(seed_order("cust-fr", name="Exemple SARL"))
    order["coupon_codes"] = []
    order["customer"] |= {
        "jurisdiction": {"country": "FR"},
        "country": "FR",
        "kind": "business",
        "tax_id": "FR40303265045",
    }
    order["lines"] = [
        {
            "description": "Consulting",
            "quantity": "1",
            "unit_price": "100.00",
            "category": "services",
        }
    ]
    invoice = await create_invoice(inv, h, order)
    (line,) = invoice["lines"]
    assert (line["vat_category"], line["tax"]) == ("AE", "0.00")
    assert line["vat_exemption_reason"] and "Reverse charge" in line["vat_exemption_reason"]
    assert invoice["tax_treatment"] == "intra_eu_reverse_charge"
    document = await inv.get(f"/v1/invoices/{invoice['id']}/html", headers=h)
    assert "VAT category AE" in document.text and "Reverse charge" in document.text
