"""Finalized invoices for the e-invoice tests, priced the way the pricing and the tax service
do: the discount spread over the lines before tax, and the VAT rounded half-up to the
currency's minor unit once per VAT breakdown (category and rate), allocated back to the
lines by largest remainder with ties to the earlier line (the tax service's
`per_breakdown`, issue 13)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from billing_common.money import quantum
from invoice_service.domain.credit_notes import (
    CreditNote,
    CreditRequestLine,
    Settlement,
    credit_lines,
)
from invoice_service.domain.einvoicing import PostalAddress
from invoice_service.domain.model import (
    AppliedDiscount,
    Customer,
    Invoice,
    InvoiceLine,
    PriceMode,
    TaxComponent,
    TaxStatus,
)
from invoice_service.domain.sellers import BankAccount, SellerAddress, SellerSnapshot

AT = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
REVERSE_CHARGE = ("AE", "VATEX-EU-AE", "Reverse charge")
EXPORT = ("G", "VATEX-EU-G", "Export outside the EU")
INTRA_EU_GOODS = ("K", "VATEX-EU-IC", "Intra-community supply")
EXEMPT = ("E", None, "Exempt under Art. 132 of the VAT Directive")


@dataclass(frozen=True)
class Spec:
    description: str
    quantity: str
    unit_price: str
    rate: str  # fraction, e.g. "0.19"
    category: tuple[str, str | None, str | None] | None = None  # (code, VATEX, reason)


def seller(**overrides: object) -> SellerSnapshot:
    values: dict[str, object] = {
        "seller_id": "sel_1",
        "legal_name": "Beispiel GmbH",
        "address": SellerAddress(
            country="DE", city="Berlin", postcode="10115", street=("Hauptstraße 1",)
        ),
        "vat_id": "DE136695976",
        "email": "billing@beispiel.de",
        "phone": "+49 30 1234567",
        "bank_account": BankAccount("DE89370400440532013000", "COBADEFFXXX"),
    }
    values.update(overrides)
    return SellerSnapshot(**values)  # type: ignore[arg-type]


def _round(value: Decimal, currency: str) -> Decimal:
    return value.quantize(quantum(currency), rounding=ROUND_HALF_UP)


def _allocate(total: Decimal, exact: list[Decimal], currency: str) -> list[Decimal]:
    """`total` over the lines: each its exact share rounded down, the units left over one
    each to the largest remainders (the earlier line on a tie)."""
    step = quantum(currency)
    floors = [share.quantize(step, rounding=ROUND_DOWN) for share in exact]
    left = int((total - sum(floors, Decimal(0))) / step)
    order = sorted(range(len(exact)), key=lambda i: (exact[i] - floors[i], -i), reverse=True)
    for index in order[:left]:
        floors[index] += step
    return floors


def breakdown_taxes(
    amounts: list[Decimal],
    rates: list[Decimal],
    keys: list[object],
    *,
    currency: str,
    price_mode: PriceMode,
) -> list[Decimal]:
    """Each line's VAT: per group of equal keys, round(Σ net x rate) (exclusive: `amounts`
    are nets) or round(G x rate / (1 + rate)) (inclusive: `amounts` are grosses), allocated
    to the group's lines."""
    taxes = [Decimal(0)] * len(amounts)
    groups: dict[object, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    for members in groups.values():
        rate = rates[members[0]]
        factor = rate if price_mode is PriceMode.EXCLUSIVE else rate / (1 + rate)
        exact = [amounts[i] * factor for i in members]
        total = _round(sum(amounts[i] for i in members) * factor, currency)
        for index, tax in zip(members, _allocate(total, exact, currency), strict=True):
            taxes[index] = tax
    return taxes


def build(
    specs: list[Spec],
    *,
    currency: str = "EUR",
    price_mode: PriceMode = PriceMode.EXCLUSIVE,
    discount: str | None = None,
    customer_country: str = "DE",
    customer_tax_id: str | None = "DE129273398",
    seller_snapshot: SellerSnapshot | None = None,
    number: str = "INV-2026-0001",
) -> Invoice:
    subtotals = [_round(Decimal(s.quantity) * Decimal(s.unit_price), currency) for s in specs]
    gross = sum(subtotals, Decimal(0))
    total_discount = _round(Decimal(discount), currency) if discount else Decimal(0)
    shares: list[Decimal] = []
    for index, subtotal in enumerate(subtotals):
        if index == len(subtotals) - 1:
            shares.append(total_discount - sum(shares, Decimal(0)))
        else:
            shares.append(
                _round(total_discount * subtotal / gross, currency) if gross else subtotal * 0
            )
    taxed = [subtotal - share for subtotal, share in zip(subtotals, shares, strict=True)]
    rates = [Decimal(spec.rate) for spec in specs]
    taxes = breakdown_taxes(
        taxed,
        rates,
        [(spec.category, rate) for spec, rate in zip(specs, rates, strict=True)],
        currency=currency,
        price_mode=price_mode,
    )
    lines = []
    for position, (spec, subtotal, share, amount, tax) in enumerate(
        zip(specs, subtotals, shares, taxed, taxes, strict=True)
    ):
        rate = Decimal(spec.rate)
        if price_mode is PriceMode.EXCLUSIVE:
            net, total = amount, amount + tax
        else:
            net, total = amount - tax, amount
        code, vatex, reason = spec.category or (("S" if rate else "Z"), None, None)
        lines.append(
            InvoiceLine(
                position=position + 1,
                description=spec.description,
                quantity=Decimal(spec.quantity),
                unit_price=Decimal(spec.unit_price),
                category="general",
                subtotal=subtotal,
                discount=share,
                net=net,
                tax=tax,
                total=total,
                taxes=(TaxComponent("r1", "VAT", rate, tax),),
                vat_category=code,
                vat_exemption_reason=reason,
                vat_exemption_reason_code=vatex,
            )
        )
    invoice = Invoice.create(
        id="inv_1",
        tenant_id="t1",
        customer=Customer(
            id="cus_42",
            type=None,
            country=customer_country,
            region=None,
            tax_status=TaxStatus.STANDARD,
            tax_id=customer_tax_id,
            name="Kunde AG",
            email="ap@kunde.example",
            address="Kundenweg 5\n80331 München",
        ),
        currency=currency,
        price_mode=price_mode,
        series="INV",
        lines=lines,
        discounts=[AppliedDiscount("coupon", "Spring coupon", total_discount)] if discount else [],
        due_days=14,
        at=AT,
        actor=None,
        tax_calculation_id=None,
        discount_redemption_id=None,
        seller=seller_snapshot or seller(),
    )
    invoice.finalize(number=number, sequence=1, at=AT, seller=seller_snapshot or seller())
    return invoice


# The corpus the issue names: each entry is (name, invoice).
def corpus() -> list[tuple[str, Invoice]]:
    return [
        ("domestic-standard", build([Spec("Consulting", "3", "150.00", "0.19")])),
        (
            "several-rates",
            build(
                [
                    Spec("Software licence", "2", "99.99", "0.19"),
                    Spec("Book", "1", "24.50", "0.07"),
                ]
            ),
        ),
        (
            "reduced-and-zero-rated",
            build(
                [Spec("Food", "4", "2.35", "0.07"), Spec("Newspaper", "1", "3.00", "0")],
            ),
        ),
        (
            "intra-eu-reverse-charge",
            build(
                [Spec("Cloud service", "1", "1200.00", "0", REVERSE_CHARGE)],
                customer_country="FR",
                customer_tax_id="FR40303265045",
            ),
        ),
        (
            "intra-eu-supply-of-goods",
            build(
                [Spec("Machine part", "10", "45.00", "0", INTRA_EU_GOODS)],
                customer_country="AT",
                customer_tax_id="ATU13585627",
            ),
        ),
        (
            "export",
            build(
                [Spec("Hardware", "5", "80.00", "0", EXPORT)],
                customer_country="US",
                customer_tax_id=None,
            ),
        ),
        ("exempt", build([Spec("Medical treatment", "1", "300.00", "0", EXEMPT)])),
        (
            "document-discount",
            build(
                [
                    Spec("Subscription", "1", "100.00", "0.19"),
                    Spec("E-book", "3", "9.99", "0.07"),
                ],
                discount="15.00",
            ),
        ),
        (
            "discount-on-one-rate",
            build([Spec("Seats", "7", "12.345", "0.19")], discount="3.33"),
        ),
        (
            "jpy-zero-decimals",
            build(
                [Spec("Service", "3", "1234", "0.10"), Spec("Food", "2", "333", "0.08")],
                currency="JPY",
                discount="100",
            ),
        ),
        (
            "inclusive-prices",
            build(
                [Spec("Ticket", "3", "19.99", "0.19"), Spec("Snack", "1", "4.20", "0.07")],
                price_mode=PriceMode.INCLUSIVE,
                discount="2.00",
            ),
        ),
    ]


BUYER_ADDRESS = PostalAddress(
    country="DE", street=("Kundenweg 5",), city="München", postcode="80331", subdivision="Bayern"
)
LEITWEG_ID = "04011000-12345-34"


def for_xrechnung(invoice: Invoice, address: PostalAddress = BUYER_ADDRESS) -> Invoice:
    """The invoice with what XRechnung asks of the buyer: the structured postal address
    (BR-DE-8/9) and the Leitweg-ID as buyer reference (BR-DE-15)."""
    country = invoice.customer.location_country or invoice.customer.country
    invoice.customer = replace(
        invoice.customer,
        postal_address=replace(address, country=country),
        buyer_reference=LEITWEG_ID,
    )
    return invoice


def credit_note_of(
    invoice: Invoice, requested: tuple[CreditRequestLine, ...] = (), number: str = "CN-2026-0001"
) -> CreditNote:
    """A credit note of the invoice as the domain computes it (empty: all of it)."""
    return CreditNote(
        id="cn_1",
        tenant_id=invoice.tenant_id,
        invoice_id=invoice.id,
        invoice_number=invoice.number or "",
        customer_id=invoice.customer.id,
        currency=invoice.currency,
        settlement=Settlement.APPLY,
        reason="Returned goods",
        lines=credit_lines(invoice, requested, []),
        created_at=AT,
        series="CN",
        sequence=1,
        number=number,
        seller_id=invoice.seller_id,
    )
