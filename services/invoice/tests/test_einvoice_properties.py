"""Hypothesis: random valid invoices (lines, VAT rates and categories, discounts, currencies)
give EN 16931 documents whose sums reconcile (our own BR-CO checks, named as such) and that
pass the official CII and UBL rules with no error.

Known defect, open on issue 13: the tax engine rounds VAT per line, EN 16931 per VAT
breakdown (BR-CO-17: BT-117 = BT-116 x rate, rounded, within 1 of the currency). Lines at
one rate add up their roundings; in a currency without minor unit (JPY) two tax-inclusive
lines can be more than a yen off, and the official rules refuse the document
(`test_per_line_rounding_breaks_br_co_17`, a strict xfail that turns red once it is fixed).
So the property draws what per-line rounding gets right: at most one line per positive
rate."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_common.money import quantum
from invoice_service.adapters.einvoice.cii import to_cii
from invoice_service.adapters.einvoice.en16931 import EInvoice, from_invoice
from invoice_service.adapters.einvoice.ubl import to_ubl
from invoice_service.domain.model import PriceMode

from .einvoice_corpus import EXEMPT, REVERSE_CHARGE, Spec, build
from .einvoice_rules import assert_valid

RATES = ["0.19", "0.07", "0.20", "0.055", "0.10", "0.21", "0"]


@st.composite
def invoices(draw: st.DrawFn) -> object:
    currency = draw(st.sampled_from(["EUR", "JPY", "USD", "CHF"]))
    places = -int(quantum(currency).as_tuple().exponent)  # type: ignore[operator]
    reverse_charge = draw(st.booleans())
    specs = []
    used_rates: set[str] = set()
    for index in range(draw(st.integers(1, 5))):
        cents = draw(st.integers(0, 10**7))
        price = Decimal(cents).scaleb(-places - draw(st.integers(0, 2)))
        quantity = Decimal(draw(st.integers(1, 5000))).scaleb(-draw(st.integers(0, 3)))
        if reverse_charge:
            specs.append(Spec(f"item {index}", str(quantity), str(price), "0", REVERSE_CHARGE))
            continue
        rate = draw(st.sampled_from([r for r in RATES if r == "0" or r not in used_rates]))
        used_rates.add(rate)
        category = EXEMPT if rate == "0" and draw(st.booleans()) else None
        specs.append(Spec(f"item {index}", str(quantity), str(price), rate, category))
    mode = draw(st.sampled_from(list(PriceMode)))
    invoice = build(
        specs,
        currency=currency,
        price_mode=mode,
        customer_country="FR" if reverse_charge else "DE",
        customer_tax_id="FR40303265045" if reverse_charge else "DE129273398",
    )
    gross = invoice.totals.subtotal
    if draw(st.booleans()) and gross > 0:
        fraction = Decimal(draw(st.integers(1, 100))) / 100
        discount = (gross * fraction).quantize(quantum(currency))
        if discount > 0:
            invoice = build(
                specs,
                currency=currency,
                price_mode=mode,
                discount=str(discount),
                customer_country="FR" if reverse_charge else "DE",
                customer_tax_id="FR40303265045" if reverse_charge else "DE129273398",
            )
    return invoice


def _own_sum_checks(doc: EInvoice, total: Decimal) -> None:
    """Our own restatement of BR-CO-10/13/14/15 and the per-category base (not the
    official rules, which run below)."""
    t = doc.totals
    assert t.line_net == sum((line.net_amount for line in doc.lines), Decimal(0))
    assert t.allowances == sum((a.amount for a in doc.allowances), Decimal(0))
    assert t.tax_exclusive == t.line_net - t.allowances + t.charges
    assert t.vat == sum((entry.tax_amount for entry in doc.vat), Decimal(0))
    assert t.tax_inclusive == t.tax_exclusive + t.vat == total
    for entry in doc.vat:
        lines = sum(
            (
                line.net_amount
                for line in doc.lines
                if (line.vat_category, line.vat_rate) == (entry.category, entry.rate)
            ),
            Decimal(0),
        )
        allowances = sum(
            (
                a.amount
                for a in doc.allowances
                if (a.vat_category, a.vat_rate) == (entry.category, entry.rate)
            ),
            Decimal(0),
        )
        assert entry.taxable_amount == lines - allowances


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(invoice=invoices())
def test_random_invoices_reconcile_and_pass_the_official_rules(invoice: object) -> None:
    doc = from_invoice(invoice, buyer_reference="R-1")  # type: ignore[arg-type]
    _own_sum_checks(doc, invoice.total)  # type: ignore[attr-defined]
    assert_valid(to_cii(doc), ubl=False)
    assert_valid(to_ubl(doc), ubl=True)


@pytest.mark.xfail(
    strict=True,
    reason="issue 13: VAT is rounded per line, EN 16931 rounds per breakdown (BR-CO-17)",
)
def test_per_line_rounding_breaks_br_co_17() -> None:
    # Tax-inclusive JPY at 19 %: 47 -> 39 + 8 and 1764 -> 1482 + 282, 290 yen of tax in all;
    # the breakdown's 1521 x 19 % is 288.99. The CEN rules allow a difference of 1.
    specs = [Spec("a", "9.30", "5", "0.19"), Spec("b", "2", "882", "0.19")]
    invoice = build(specs, currency="JPY", price_mode=PriceMode.INCLUSIVE)
    doc = from_invoice(invoice, buyer_reference="R-1")
    assert_valid(to_cii(doc), ubl=False)
