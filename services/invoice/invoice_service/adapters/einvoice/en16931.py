"""A finalized invoice as the EN 16931 semantic model (business terms BT-n, groups BG-n).

This is the one place where the invoice model meets EN 16931; the CII and UBL serializers
only write what is here. Amounts are Decimals in the invoice's currency, already rounded by
the pricing; the totals are derived here so that BR-CO-10/13/15 hold by construction:

    BT-106 = Σ BT-131 (line net amounts)                      BR-CO-10
    BT-109 = BT-106 − BT-107 (allowances) + BT-108 (charges)  BR-CO-13
    BT-112 = BT-109 + BT-110 (VAT total)                      BR-CO-15
    BT-115 = BT-112 − BT-113 (paid)                           BR-CO-16

How the platform's invoice maps:
* The discount is spread over the lines by the pricing (each line's tax base is its subtotal
  minus its share). For net (exclusive) prices it is written as document-level allowances
  (BG-20), one per VAT category and rate, so each line keeps BT-131 = quantity × price and the
  VAT breakdown's taxable amount is exactly the lines' taxed base. For tax-inclusive prices
  the discount share is gross, so the line is written with its net base (BT-131 = the taxed
  net) and a net price derived from it (BT-146), with no allowance.
* The VAT breakdown (BG-23) is the lines' own figures: BT-116 and BT-117 per category and
  rate are the sums of the lines' net and tax, so they reconcile with the lines and totals
  by construction. The tax service rounds each breakdown once and allocates it to the lines
  (issue 13), so BT-117 = round(BT-116 x rate) for net prices and within one minor unit of
  it for tax-inclusive prices (BR-CO-17 allows 1 of the currency).
* One VAT rate per line (EN 16931 has no compound taxes): a line with several tax components
  (e.g. US state + county) cannot be an EN 16931 invoice and is reported as missing data.
* The supply date (BT-72) is the issue date: the platform bills at the time of supply and
  keeps no separate delivery date (BR-IC-11 needs one for intra-community supplies).
* The document is the invoice as issued: nothing is shown as prepaid (BT-113 = 0), so the
  e-invoice does not change when payments arrive.
* The buyer's address (BG-8) is the structured `postal_address` the invoice was created
  with (BT-50/51/163 street lines, BT-52 city, BT-53 postcode, BT-54 subdivision, BT-55
  country); without it, the printed address lines and the customer's country. The buyer
  reference (BT-10, the Leitweg-ID) is the invoice's unless a download names another.
* A credit note (`from_credit_note`) is its invoice's parties with the credited lines, type
  code 381 and its invoice's number as the preceding invoice reference (BT-25).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from billing_common.money import quantum
from invoice_service.domain.credit_notes import CreditNote
from invoice_service.domain.model import Invoice, InvoiceLine, PriceMode
from invoice_service.domain.sellers import SellerSnapshot

# UNCL1001 document type codes (BT-3)
COMMERCIAL_INVOICE = "380"
CREDIT_NOTE = "381"
# UNCL4461 payment means (BT-81): SEPA credit transfer
SEPA_CREDIT_TRANSFER = "58"
# UNCL5189 allowance reason (BT-98): discount
DISCOUNT_REASON_CODE = "95"
# UN/ECE Rec 20 unit (BT-130): "one" — the platform's quantities have no unit
UNIT_ONE = "C62"
# Net prices carry at most this many decimals (BT-146); the line amount is what counts.
PRICE_PLACES = Decimal("0.000001")
# VAT categories that carry no rate other than 0 (BR-Z/E/AE/K/G/O-*)
ZERO_RATE_CATEGORIES = frozenset({"Z", "E", "AE", "K", "G", "O"})
# Categories that need an exemption reason (BT-120 or BT-121) in the breakdown
REASON_CATEGORIES = frozenset({"E", "AE", "K", "G", "O"})


class MissingData(Exception):
    """What the invoice lacks for EN 16931 (or the chosen CIUS); each entry names a field."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(", ".join(missing))
        self.missing = missing


@dataclass(frozen=True, slots=True)
class Address:  # BG-5 (seller) / BG-8 (buyer)
    country: str  # BT-40 / BT-55
    lines: tuple[str, ...] = ()  # BT-35..BT-36 / BT-50..BT-51 (at most 2 used)
    city: str | None = None  # BT-37 / BT-52
    postcode: str | None = None  # BT-38 / BT-53
    region: str | None = None  # BT-39 / BT-54


@dataclass(frozen=True, slots=True)
class Party:  # BG-4 seller / BG-7 buyer
    name: str  # BT-27 / BT-44
    address: Address
    vat_id: str | None = None  # BT-31 / BT-48
    tax_registration: str | None = None  # BT-32 seller tax registration (not a VAT id)
    identifier: str | None = None  # BT-46 buyer identifier (the customer id)
    email: str | None = None  # BT-34 / BT-49 electronic address (scheme EM), BT-43 contact
    phone: str | None = None  # BT-42 seller contact telephone


@dataclass(frozen=True, slots=True)
class PaymentMeans:  # BG-16
    code: str  # BT-81
    iban: str  # BT-84
    bic: str | None = None  # BT-86


@dataclass(frozen=True, slots=True)
class DocumentAllowance:  # BG-20
    amount: Decimal  # BT-92
    vat_category: str  # BT-95
    vat_rate: Decimal  # BT-96 (percent)
    reason: str  # BT-97
    reason_code: str = DISCOUNT_REASON_CODE  # BT-98


@dataclass(frozen=True, slots=True)
class VatBreakdown:  # BG-23
    category: str  # BT-118
    rate: Decimal  # BT-119 (percent)
    taxable_amount: Decimal  # BT-116
    tax_amount: Decimal  # BT-117
    exemption_reason: str | None = None  # BT-120
    exemption_reason_code: str | None = None  # BT-121


@dataclass(frozen=True, slots=True)
class Line:  # BG-25
    id: str  # BT-126
    name: str  # BT-153
    quantity: Decimal  # BT-129
    unit: str  # BT-130
    net_price: Decimal  # BT-146
    net_amount: Decimal  # BT-131
    vat_category: str  # BT-151
    vat_rate: Decimal  # BT-152 (percent)


@dataclass(frozen=True, slots=True)
class Totals:  # BG-22
    line_net: Decimal  # BT-106
    allowances: Decimal  # BT-107
    charges: Decimal  # BT-108
    tax_exclusive: Decimal  # BT-109
    vat: Decimal  # BT-110
    tax_inclusive: Decimal  # BT-112
    paid: Decimal  # BT-113
    due: Decimal  # BT-115


@dataclass(frozen=True, slots=True)
class EInvoice:
    number: str  # BT-1
    issue_date: date  # BT-2
    type_code: str  # BT-3
    currency: str  # BT-5
    due_date: date | None  # BT-9
    delivery_date: date  # BT-72
    buyer_reference: str | None  # BT-10 (Leitweg-ID for XRechnung)
    note: str | None  # BT-22
    preceding_invoice: str | None  # BT-25 (credit notes)
    seller: Party  # BG-4
    buyer: Party  # BG-7
    payment: PaymentMeans | None  # BG-16
    allowances: tuple[DocumentAllowance, ...]  # BG-20
    lines: tuple[Line, ...]  # BG-25
    vat: tuple[VatBreakdown, ...]  # BG-23
    totals: Totals  # BG-22


def percent(rate: Decimal) -> Decimal:
    """The platform keeps rates as fractions (0.19); EN 16931 writes percent (19)."""
    value = (rate * 100).normalize()
    return value.quantize(Decimal(1)) if value == value.to_integral() else value


def _line_rate(line: InvoiceLine, missing: list[str]) -> Decimal:
    if len(line.taxes) > 1:
        missing.append(
            f"lines[{line.position}]: one VAT rate per line (it has {len(line.taxes)} taxes)"
        )
    return percent(sum((t.rate for t in line.taxes), Decimal(0)))


def _address_lines(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").splitlines() if part.strip())


def from_invoice(
    invoice: Invoice,
    *,
    buyer_reference: str | None = None,
    preceding_invoice: str | None = None,
    type_code: str = COMMERCIAL_INVOICE,
) -> EInvoice:
    """The EN 16931 model of a finalized invoice with its seller snapshot; raises MissingData
    naming every field EN 16931 itself requires that the invoice lacks. `buyer_reference`
    (BT-10): default, the one the invoice keeps from its creation."""
    missing = _header_missing(invoice)
    lines: list[Line] = []
    groups: dict[tuple[str, Decimal], list[InvoiceLine]] = {}
    for line in invoice.lines:
        rate = _line_rate(line, missing)
        category = line.vat_category or ("S" if rate else "Z")
        if category in ZERO_RATE_CATEGORIES and rate:
            missing.append(f"lines[{line.position}]: category {category} with rate {rate} %")
        groups.setdefault((category, rate), []).append(line)
        exclusive = invoice.price_mode is PriceMode.EXCLUSIVE
        amount = line.subtotal if exclusive else line.net
        price = line.unit_price if exclusive else (line.net / line.quantity)
        lines.append(
            Line(
                id=str(line.position),
                name=line.description,
                quantity=line.quantity.normalize(),
                unit=UNIT_ONE,
                net_price=price.quantize(PRICE_PLACES).normalize() if not exclusive else price,
                net_amount=amount,
                vat_category=category,
                vat_rate=rate,
            )
        )
    if missing:
        raise MissingData(missing)
    allowances = _allowances(invoice, groups)
    vat = tuple(
        _breakdown(category, rate, [(m, m.net, m.tax) for m in members])
        for (category, rate), members in groups.items()
    )
    return _document(
        invoice,
        number=invoice.number or "",
        type_code=type_code,
        buyer_reference=buyer_reference,
        preceding_invoice=preceding_invoice,
        lines=tuple(lines),
        allowances=allowances,
        vat=vat,
        missing=missing,
    )


def from_credit_note(
    note: CreditNote, invoice: Invoice, *, buyer_reference: str | None = None
) -> EInvoice:
    """The EN 16931 model of a credit note (BT-3 381): its invoice's parties and payment
    means, BT-25 the invoice's number, each credited line with the invoice line's VAT
    category and rate. A credit note's line is already net of the invoice's discount (its
    share was credited with it), so it carries no allowance: BT-131 is the credited net and
    BT-146 the net price derived from it (BT-129: the credited quantity; the invoiced
    quantity when the whole line is credited; 1 when an amount is)."""
    missing = _header_missing(invoice)
    by_position = {line.position: line for line in invoice.lines}
    lines: list[Line] = []
    groups: dict[tuple[str, Decimal], list[tuple[InvoiceLine, Decimal, Decimal]]] = {}
    for credited in note.lines:
        original = by_position.get(credited.position)
        if original is None:
            missing.append(f"lines[{credited.position}]: not a line of invoice {invoice.id}")
            continue
        rate = _line_rate(original, missing)
        category = credited.vat_category or original.vat_category or ("S" if rate else "Z")
        groups.setdefault((category, rate), []).append((original, credited.net, credited.tax))
        if credited.quantity is not None:
            quantity = credited.quantity
        elif credited.net == original.net:
            quantity = original.quantity
        else:
            quantity = Decimal(1)
        lines.append(
            Line(
                id=str(credited.position),
                name=credited.description,
                quantity=quantity.normalize(),
                unit=UNIT_ONE,
                net_price=(credited.net / quantity).quantize(PRICE_PLACES).normalize(),
                net_amount=credited.net,
                vat_category=category,
                vat_rate=rate,
            )
        )
    if missing:
        raise MissingData(missing)
    vat = tuple(_breakdown(category, rate, members) for (category, rate), members in groups.items())
    return _document(
        invoice,
        number=note.number,
        type_code=CREDIT_NOTE,
        buyer_reference=buyer_reference,
        preceding_invoice=note.invoice_number,
        lines=tuple(lines),
        allowances=(),
        vat=vat,
        missing=missing,
        issue_date=note.created_at.date(),
        note_text=note.reason,
        due_date=None,
    )


def _header_missing(invoice: Invoice) -> list[str]:
    missing: list[str] = []
    if invoice.seller is None:
        missing.append("seller (the invoice has no seller)")
    if not invoice.customer.name:
        missing.append("customer.name (BT-44 buyer name)")
    if invoice.number is None or invoice.issued_at is None:
        missing.append("number and issue date (finalize the invoice)")
    return missing


_UNSET: Any = object()


def _document(
    invoice: Invoice,
    *,
    number: str,
    type_code: str,
    buyer_reference: str | None,
    preceding_invoice: str | None,
    lines: tuple[Line, ...],
    allowances: tuple[DocumentAllowance, ...],
    vat: tuple[VatBreakdown, ...],
    missing: list[str],
    issue_date: date | None = None,
    note_text: str | None = None,
    due_date: date | None = _UNSET,
) -> EInvoice:
    seller, customer = invoice.seller, invoice.customer
    assert seller is not None and invoice.issued_at is not None  # _header_missing
    for entry in vat:
        if entry.category in REASON_CATEGORIES and not (
            entry.exemption_reason or entry.exemption_reason_code
        ):
            missing.append(f"VAT category {entry.category}: exemption reason (BT-120/121)")
    if missing:
        raise MissingData(missing)
    zero = Decimal(0).quantize(quantum(invoice.currency))
    line_net = sum((line.net_amount for line in lines), zero)
    allowance_total = sum((a.amount for a in allowances), zero)
    tax_exclusive = line_net - allowance_total
    vat_total = sum((entry.tax_amount for entry in vat), zero)
    totals = Totals(
        line_net=line_net,
        allowances=allowance_total,
        charges=zero,
        tax_exclusive=tax_exclusive,
        vat=vat_total,
        tax_inclusive=tax_exclusive + vat_total,
        paid=zero,
        due=tax_exclusive + vat_total,
    )
    bank = seller.bank_account
    postal = customer.postal_address
    buyer_address = (
        Address(
            country=postal.country,
            lines=postal.street,
            city=postal.city,
            postcode=postal.postcode,
            region=postal.subdivision,
        )
        if postal is not None
        else Address(
            country=customer.location_country or customer.country,
            lines=_address_lines(customer.address),
            region=customer.location_region,
        )
    )
    return EInvoice(
        number=number,
        issue_date=issue_date or invoice.issued_at.date(),
        type_code=type_code,
        currency=invoice.currency,
        due_date=invoice.due_date if due_date is _UNSET else due_date,
        delivery_date=invoice.issued_at.date(),
        buyer_reference=buyer_reference or customer.buyer_reference,
        note=note_text if note_text is not None else invoice.memo,
        preceding_invoice=preceding_invoice,
        seller=Party(
            name=seller.legal_name,
            address=Address(
                country=seller.address.country,
                lines=seller.address.street,
                city=seller.address.city,
                postcode=seller.address.postcode,
                region=seller.address.region,
            ),
            vat_id=seller.vat_id,
            tax_registration=_home_registration(seller),
            email=seller.email,
            phone=seller.phone,
        ),
        buyer=Party(
            name=customer.name or "",
            address=buyer_address,
            vat_id=customer.tax_id,
            identifier=customer.id,
            email=customer.email,
        ),
        payment=PaymentMeans(SEPA_CREDIT_TRANSFER, bank.iban, bank.bic) if bank else None,
        allowances=allowances,
        lines=lines,
        vat=vat,
        totals=totals,
    )


def _home_registration(seller: SellerSnapshot) -> str | None:
    """BT-32: the registration in the seller's own country, else the first one."""
    registrations = seller.tax_registrations
    home = [r for r in registrations if r.country == seller.address.country]
    chosen = home or list(registrations)
    return chosen[0].number if chosen else None


def _allowances(
    invoice: Invoice, groups: dict[tuple[str, Decimal], list[InvoiceLine]]
) -> tuple[DocumentAllowance, ...]:
    if invoice.price_mode is not PriceMode.EXCLUSIVE:
        return ()
    reason = "; ".join(d.name for d in invoice.discounts) or "Discount"
    return tuple(
        DocumentAllowance(amount, category, rate, reason)
        for (category, rate), members in groups.items()
        if (amount := sum((line.discount for line in members), Decimal(0)))
    )


def _breakdown(
    category: str, rate: Decimal, members: Iterable[tuple[InvoiceLine, Decimal, Decimal]]
) -> VatBreakdown:
    """BG-23 of one category and rate: `members` are (invoice line, net, tax) — the line's
    own for an invoice, the credited part for a credit note."""
    members = list(members)
    lines = [line for line, _, _ in members]
    reason = next((m.vat_exemption_reason for m in lines if m.vat_exemption_reason), None)
    code = next((m.vat_exemption_reason_code for m in lines if m.vat_exemption_reason_code), None)
    if category in REASON_CATEGORIES and not (reason or code):
        # The platform's own exemption marker (exempt customer, reverse charge) is the reason.
        reason = next((m.exemption for m in lines if m.exemption), None)
    return VatBreakdown(
        category=category,
        rate=rate,
        taxable_amount=sum((net for _, net, _ in members), Decimal(0)),
        tax_amount=sum((tax for _, _, tax in members), Decimal(0)),
        exemption_reason=reason,
        exemption_reason_code=code,
    )
