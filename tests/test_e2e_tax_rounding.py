"""VAT rounded per breakdown across the real services (issue 13, embedded runtime, sample
data): the tax service rounds each VAT category and rate of an invoice once, the invoice
keeps those figures on its lines, and its EN 16931 document reconciles (BR-CO-17) and passes
the official CEN rules. Before issue 13 the tax service rounded per line: the JPY invoice
below had 290 yen of VAT on a base of 1521 (19 % of it is 288.99) and the rules refused it."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from billing_launcher.seed_flows import create_invoice, expect, finalize, seed_order
from services.invoice.tests.einvoice_rules import assert_valid
from tests.conftest import Platform


def _order(currency: str, price_mode: str, lines: list[tuple[str, str, str]]) -> dict[str, Any]:
    order = copy.deepcopy(seed_order("cust-rounding", name="Kunde AG", email="ap@kunde.example"))
    order["coupon_codes"] = []
    order |= {"currency": currency, "price_mode": price_mode}
    order["lines"] = [
        {"description": f"item {i}", "quantity": q, "unit_price": p, "category": c}
        for i, (q, p, c) in enumerate(lines, start=1)
    ]
    return order


async def test_tax_inclusive_jpy_lines_at_one_rate_reconcile_and_pass_the_cen_rules(
    platform: Platform,
) -> None:
    inv, h = platform.clients["invoice"], platform.headers()
    order = _order("JPY", "inclusive", [("5", "9.30", "standard"), ("2", "882", "standard")])
    invoice = await create_invoice(inv, h, order)
    assert [(line["net"], line["tax"], line["total"]) for line in invoice["lines"]] == [
        ("40", "7", "47"),
        ("1482", "282", "1764"),
    ]
    [entry] = invoice["tax_breakdown"]
    assert (entry["taxable_amount"], entry["tax_amount"]) == ("1522", "289")
    issued = await finalize(inv, h, invoice["id"])
    answer = await inv.get(
        f"/v1/invoices/{issued['id']}/einvoice?format=ubl&buyer_reference=R-13", headers=h
    )
    expect(answer, 200)
    assert_valid(answer.content, ubl=True)
    assert b'<cbc:TaxableAmount currencyID="JPY">1522</cbc:TaxableAmount>' in answer.content
    assert b'<cbc:TaxAmount currencyID="JPY">289</cbc:TaxAmount>' in answer.content


async def test_net_prices_of_two_categories_at_one_rate_are_one_breakdown(
    platform: Platform,
) -> None:
    # DE standard and digital are both 19 %: three lines of 0.50 EUR are one breakdown,
    # 1.50 x 19 % = 0.285 -> 0.29 (per line it was 0.10 x 3 = 0.30).
    inv, h = platform.clients["invoice"], platform.headers()
    lines = [("1", "0.50", "standard"), ("1", "0.50", "digital"), ("1", "0.50", "standard")]
    invoice = await create_invoice(inv, h, _order("EUR", "exclusive", lines))
    assert [line["tax"] for line in invoice["lines"]] == ["0.10", "0.10", "0.09"]
    assert Decimal(invoice["tax_total"]) == Decimal("0.29")
    [entry] = invoice["tax_breakdown"]
    assert (entry["taxable_amount"], entry["tax_amount"]) == ("1.50", "0.29")
