"""Property-based tests: totals always equal the sums of the lines, the discount is spread
exactly, and no sequence of payments and refunds makes an amount negative."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from invoice_service.domain.model import (
    AppliedDiscount,
    Customer,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    PriceMode,
    TaxComponent,
    TaxStatus,
)
from invoice_service.domain.pricing import (
    LineDraft,
    TaxLineResult,
    TaxResult,
    allocate_discount,
    build_lines,
    line_id,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CENT = Decimal("0.01")
RATES = {"standard": Decimal("0.19"), "reduced": Decimal("0.07"), "zero": Decimal("0")}

quantities = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("1000"), places=3)
prices = st.decimals(min_value=Decimal("0"), max_value=Decimal("100000"), places=2)
drafts = st.lists(
    st.builds(
        LineDraft,
        description=st.just("item"),
        quantity=quantities,
        unit_price=prices,
        category=st.sampled_from(sorted(RATES)),
    ),
    min_size=1,
    max_size=12,
)
fractions = st.decimals(min_value=Decimal("0"), max_value=Decimal("1"), places=4)


def fake_tax(drafts: list[LineDraft], shares: list[Decimal], mode: PriceMode) -> TaxResult:
    """A tax service stand-in with the same contract: one rate per category, rounded half-up."""
    lines = []
    for position, (draft, share) in enumerate(zip(drafts, shares, strict=True), 1):
        amount = draft.subtotal("EUR") - share
        rate = RATES[draft.category]
        if mode is PriceMode.EXCLUSIVE:
            net = amount
            tax = (net * rate).quantize(CENT, ROUND_HALF_UP)
        else:
            net = (amount / (1 + rate)).quantize(CENT, ROUND_HALF_UP)
            tax = amount - net
        lines.append(
            TaxLineResult(
                line_id(position), net, tax, net + tax, (TaxComponent("r", "VAT", rate, tax),)
            )
        )
    return TaxResult("calc", tuple(lines))


@given(drafts=drafts, fraction=fractions, mode=st.sampled_from(list(PriceMode)))
@settings(max_examples=150, deadline=None)
def test_totals_equal_the_sums_of_the_lines(
    drafts: list[LineDraft], fraction: Decimal, mode: PriceMode
) -> None:
    subtotals = [d.subtotal("EUR") for d in drafts]
    whole = sum(subtotals, Decimal(0))
    discount = (whole * fraction).quantize(CENT, rounding="ROUND_DOWN")
    shares = allocate_discount(subtotals, discount, "EUR")
    lines = build_lines(
        drafts, shares, fake_tax(drafts, shares, mode), currency="EUR", price_mode=mode
    )
    invoice = Invoice.create(
        id="i",
        tenant_id="t",
        customer=Customer("c", None, "DE", None, TaxStatus.STANDARD),
        currency="EUR",
        price_mode=mode,
        series="INV",
        lines=lines,
        discounts=[AppliedDiscount("coupon", "c", discount)] if discount else [],
        due_days=30,
        at=T0,
        actor=None,
        tax_calculation_id="calc",
        discount_redemption_id=None,
    )
    totals = invoice.totals
    assert totals.subtotal == whole == sum(line.subtotal for line in lines)
    assert totals.discount_total == discount
    assert totals.tax_total == sum(line.tax for line in lines)
    assert totals.total == sum(line.total for line in lines)
    assert totals.total == totals.net_total + totals.tax_total
    if mode is PriceMode.EXCLUSIVE:
        assert totals.net_total == totals.subtotal - totals.discount_total
    else:
        assert totals.total == totals.subtotal - totals.discount_total
    for line in lines:
        assert line.subtotal == (line.quantity * line.unit_price).quantize(CENT, ROUND_HALF_UP)
        assert line.net >= 0 and line.tax >= 0 and line.total >= 0
        assert line.total == line.net + line.tax


@given(
    subtotals=st.lists(
        st.decimals(min_value=Decimal("0"), max_value=Decimal("1000000"), places=2),
        min_size=1,
        max_size=30,
    ).filter(lambda xs: sum(xs) > 0),
    fraction=fractions,
)
@settings(max_examples=300, deadline=None)
def test_discount_allocation_sums_exactly_and_never_exceeds_a_line(
    subtotals: list[Decimal], fraction: Decimal
) -> None:
    whole = sum(subtotals, Decimal(0))
    discount = (whole * fraction).quantize(CENT, rounding="ROUND_DOWN")
    shares = allocate_discount(subtotals, discount, "EUR")
    assert sum(shares, Decimal(0)) == discount
    for share, subtotal in zip(shares, subtotals, strict=True):
        assert Decimal(0) <= share <= subtotal
        assert share == share.quantize(CENT)
        # Proportional to within one cent.
        assert abs(share - discount * subtotal / whole) < CENT


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("300"), places=2)
steps = st.lists(
    st.tuples(st.sampled_from(["pay", "refund", "pay_usd"]), amounts), min_size=1, max_size=25
)


@given(
    steps=steps, total=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("500"), places=2)
)
@settings(max_examples=200, deadline=None)
def test_amount_due_never_negative_and_status_follows_amount_paid(
    steps: list[tuple[str, Decimal]], total: Decimal
) -> None:
    line = InvoiceLine(
        1, "x", Decimal(1), total, "zero", total, Decimal("0.00"), total, Decimal("0.00"), total
    )
    invoice = Invoice.create(
        id="i",
        tenant_id="t",
        customer=Customer("c", None, "DE", None, TaxStatus.STANDARD),
        currency="EUR",
        price_mode=PriceMode.EXCLUSIVE,
        series="INV",
        lines=[line],
        discounts=[],
        due_days=30,
        at=T0,
        actor=None,
        tax_calculation_id=None,
        discount_redemption_id=None,
    )
    invoice.finalize(number="INV-000001", sequence=1, at=T0)
    received = Decimal(0)
    for n, (kind, amount) in enumerate(steps):
        if kind == "pay":
            invoice.apply_payment(payment_id=f"p{n}", amount=amount, currency="EUR", at=T0)
            received += amount
        elif kind == "pay_usd":
            invoice.apply_payment(payment_id=f"p{n}", amount=amount, currency="USD", at=T0)
        else:
            before = invoice.amount_paid
            invoice.apply_refund(
                payment_id="p", refund_id=f"r{n}", amount=amount, currency="EUR", at=T0
            )
            if amount <= before:
                received -= amount
        assert invoice.amount_paid == received >= 0
        assert invoice.amount_due >= 0 and invoice.overpaid >= 0
        assert invoice.amount_due - invoice.overpaid == total - invoice.amount_paid
        expected = (
            InvoiceStatus.ISSUED
            if received == 0
            else InvoiceStatus.PAID
            if received >= total
            else InvoiceStatus.PARTIALLY_PAID
        )
        assert invoice.status is expected
