"""Credit notes in the domain: what they credit, their tax at the invoice's own rates, and
what they do to the invoice. Properties: never more than invoiced, sums to the cent."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invoice_service.domain.credit_notes import (
    CreditNote,
    CreditNoteStatus,
    CreditRequestLine,
    Settlement,
    check_settlement,
    credit_lines,
    remaining_balances,
)
from invoice_service.domain.errors import (
    CreditExceedsInvoiced,
    InvalidTransition,
    InvoiceNotCreditable,
)
from invoice_service.domain.model import (
    Customer,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    PriceMode,
    TaxComponent,
    TaxStatus,
)

AT = datetime(2026, 12, 2, 10, tzinfo=UTC)
CENT = Decimal("0.01")


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _line(
    position: int, quantity: str, unit_price: str, rates: tuple[str, ...] = ("0.19",)
) -> InvoiceLine:
    net = _cents(Decimal(quantity) * Decimal(unit_price))
    taxes = tuple(
        TaxComponent(f"r{i}", f"tax {rate}", Decimal(rate), _cents(net * Decimal(rate)))
        for i, rate in enumerate(rates)
    )
    tax = sum((t.amount for t in taxes), Decimal("0.00"))
    return InvoiceLine(
        position=position,
        description=f"line {position}",
        quantity=Decimal(quantity),
        unit_price=Decimal(unit_price),
        category="standard",
        subtotal=net,
        discount=Decimal("0.00"),
        net=net,
        tax=tax,
        total=net + tax,
        taxes=taxes,
    )


def issued(*lines: InvoiceLine) -> Invoice:
    invoice = Invoice.create(
        id="inv-1",
        tenant_id="acme",
        customer=Customer("c-1", None, "DE", None, TaxStatus.STANDARD),
        currency="EUR",
        price_mode=PriceMode.EXCLUSIVE,
        series="INV",
        lines=list(lines),
        discounts=[],
        due_days=14,
        at=AT,
        actor=None,
        tax_calculation_id=None,
        discount_redemption_id=None,
    )
    invoice.finalize(number="INV-000001", sequence=1, at=AT)
    return invoice


def note_of(invoice: Invoice, lines, settlement=Settlement.APPLY, n: int = 1) -> CreditNote:
    return CreditNote(
        id=f"cn-{n}",
        tenant_id="acme",
        invoice_id=invoice.id,
        invoice_number="INV-000001",
        customer_id="c-1",
        currency="EUR",
        settlement=settlement,
        reason="test",
        lines=lines,
        created_at=AT,
        series="CN",
        sequence=n,
        number=f"CN-{n:06d}",
    )


def test_full_credit_gives_back_the_invoice_to_the_cent_and_closes_it() -> None:
    invoice = issued(_line(1, "3", "33.33"), _line(2, "1", "10.00", ("0.07",)))
    lines = credit_lines(invoice, [], [])
    note = note_of(invoice, lines)
    assert (note.net_total, note.tax_total, note.total) == (
        invoice.totals.net_total,
        invoice.totals.tax_total,
        invoice.total,
    )
    invoice.apply_credit(credit_note=note.number, amount=note.total, at=AT)
    assert invoice.status is InvoiceStatus.CREDITED and invoice.amount_due == 0
    with pytest.raises(CreditExceedsInvoiced):
        credit_lines(invoice, [], [note])


def test_quantity_credit_uses_the_stored_rates_not_todays() -> None:
    # The invoice was taxed at 16 % (a rate since changed): the credit keeps 16 %.
    invoice = issued(_line(1, "4", "25.00", ("0.16",)))
    [line] = credit_lines(invoice, [CreditRequestLine(1, quantity=Decimal("1"))], [])
    assert (line.net, line.tax, line.total) == (Decimal("25.00"), Decimal("4.00"), Decimal("29.00"))
    assert [t.rate for t in line.taxes] == [Decimal("0.16")]


def test_amount_credit_is_split_at_the_lines_rates_and_matches_the_gross() -> None:
    invoice = issued(_line(1, "1", "100.00"))
    [line] = credit_lines(invoice, [CreditRequestLine(1, amount=Decimal("11.90"))], [])
    assert (line.net, line.tax, line.total) == (Decimal("10.00"), Decimal("1.90"), Decimal("11.90"))


def test_more_than_invoiced_is_refused_per_line_and_after_earlier_notes() -> None:
    invoice = issued(_line(1, "2", "50.00"))
    with pytest.raises(CreditExceedsInvoiced):
        credit_lines(invoice, [CreditRequestLine(1, quantity=Decimal("3"))], [])
    with pytest.raises(CreditExceedsInvoiced):
        credit_lines(invoice, [CreditRequestLine(1, amount=Decimal("119.01"))], [])
    first = note_of(invoice, credit_lines(invoice, [CreditRequestLine(1, Decimal("2"))], []))
    with pytest.raises(CreditExceedsInvoiced):
        credit_lines(invoice, [CreditRequestLine(1, quantity=Decimal("1"))], [first])


def test_drafts_and_void_invoices_are_not_creditable() -> None:
    invoice = issued(_line(1, "1", "10.00"))
    draft = Invoice.create(
        id="d",
        tenant_id="acme",
        customer=invoice.customer,
        currency="EUR",
        price_mode=PriceMode.EXCLUSIVE,
        series="INV",
        lines=list(invoice.lines),
        discounts=[],
        due_days=0,
        at=AT,
        actor=None,
        tax_calculation_id=None,
        discount_redemption_id=None,
    )
    with pytest.raises(InvoiceNotCreditable):
        credit_lines(draft, [], [])
    invoice.void(at=AT)
    with pytest.raises(InvoiceNotCreditable):
        credit_lines(invoice, [], [])


def test_settlements_apply_only_what_is_owed_and_refund_only_what_is_paid() -> None:
    invoice = issued(_line(1, "1", "100.00"))
    invoice.apply_payment(payment_id="p", amount=Decimal("50.00"), currency="EUR", at=AT)
    check_settlement(invoice, Settlement.APPLY, Decimal("69.00"), [])
    with pytest.raises(CreditExceedsInvoiced):
        check_settlement(invoice, Settlement.APPLY, Decimal("69.01"), [])
    check_settlement(invoice, Settlement.REFUND, Decimal("50.00"), [])
    promised = note_of(invoice, credit_lines(invoice, [], []), Settlement.REFUND)
    with pytest.raises(CreditExceedsInvoiced):
        check_settlement(invoice, Settlement.REFUND, Decimal("0.01"), [promised])


def test_partial_payment_plus_credit_settles_the_invoice_and_a_refund_keeps_it_paid() -> None:
    invoice = issued(_line(1, "1", "100.00"))
    invoice.apply_payment(payment_id="p", amount=Decimal("60.00"), currency="EUR", at=AT)
    invoice.apply_credit(credit_note="CN-1", amount=Decimal("59.00"), at=AT)
    assert invoice.status is InvoiceStatus.PAID and invoice.amount_due == 0
    # A later refund credit note of 60.00 gives everything back: owed 0, paid 0, still paid.
    invoice.apply_credit(credit_note="CN-2", amount=Decimal("60.00"), at=AT)
    invoice.apply_refund(
        payment_id="p", refund_id="r", amount=Decimal("60.00"), currency="EUR", at=AT
    )
    assert (invoice.status, invoice.amount_paid, invoice.amount_due) == (
        InvoiceStatus.PAID,
        Decimal("0.00"),
        Decimal("0.00"),
    )


def test_a_credited_invoice_is_closed_for_payments() -> None:
    invoice = issued(_line(1, "1", "10.00"))
    invoice.apply_credit(credit_note="CN-1", amount=invoice.total, at=AT)
    assert not invoice.apply_payment(payment_id="p", amount=Decimal("1"), currency="EUR", at=AT)
    assert invoice.payments[-1].flag is not None and invoice.amount_paid == 0
    with pytest.raises(InvalidTransition):
        invoice.void(at=AT)


def test_record_refund_completes_a_refund_note_once() -> None:
    invoice = issued(_line(1, "1", "10.00"))
    note = note_of(invoice, credit_lines(invoice, [], []), Settlement.REFUND)
    assert not note.record_refund("r1", Decimal("5.00"), AT)
    assert not note.record_refund("r1", Decimal("5.00"), AT)  # the same refund again
    assert note.record_refund("r2", Decimal("6.90"), AT)
    assert note.status is CreditNoteStatus.REFUNDED and note.amount_refunded == Decimal("11.90")


_QUANTITY = st.integers(min_value=1, max_value=40)
_PRICE = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("999.99"), places=2)
_RATES = st.sampled_from([("0.19",), ("0.07",), ("0.05", "0.09975"), ("0",), ("0.16",)])


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(st.tuples(_QUANTITY, _PRICE, _RATES), min_size=1, max_size=4),
    requests=st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(["quantity", "amount", "all"]), st.data()),
        min_size=1,
        max_size=8,
    ),
)
def test_credit_notes_never_exceed_the_invoice_and_reconcile_to_the_cent(lines, requests) -> None:
    invoice = issued(
        *(_line(i + 1, str(q), str(p), rates) for i, (q, p, rates) in enumerate(lines))
    )
    notes: list[CreditNote] = []
    for n, (index, kind, data) in enumerate(requests, start=1):
        line = invoice.lines[index % len(invoice.lines)]
        left = remaining_balances(invoice, notes)[line.position]
        if kind == "quantity":
            request = CreditRequestLine(
                line.position, quantity=Decimal(data.draw(st.integers(1, int(line.quantity))))
            )
        elif kind == "amount":
            most = max(left.net + left.tax, CENT)
            cents = data.draw(st.integers(1, int(most / CENT) + 2))
            request = CreditRequestLine(line.position, amount=cents * CENT)
        else:
            request = CreditRequestLine(line.position)
        try:
            credited = credit_lines(invoice, [request], notes)
        except CreditExceedsInvoiced:
            continue
        for c in credited:
            assert c.total == c.net + c.tax
            assert c.tax == sum((t.amount for t in c.taxes), Decimal(0))
            # Tax at the stored rates, except where it takes the last cents of a line.
            closing = c.net == left.net
            for index, (original, component) in enumerate(zip(line.taxes, c.taxes, strict=True)):
                assert component.rate == original.rate
                left_tax = left.taxes[index]
                if closing:
                    assert component.amount == left_tax
                elif kind == "quantity":
                    assert component.amount == min(_cents(c.net * original.rate), left_tax)
        notes.append(note_of(invoice, credited, n=n))
        for position, balance in remaining_balances(invoice, notes).items():
            assert balance.net >= 0 and all(t >= 0 for t in balance.taxes), position
    # What is left plus what was credited is exactly what was invoiced, net and tax.
    final = (
        credit_lines(invoice, [], notes)
        if any(b.net + b.tax > 0 for b in remaining_balances(invoice, notes).values())
        else []
    )
    everything = [*notes, note_of(invoice, final, n=99)] if final else notes
    assert sum((note.net_total for note in everything), Decimal(0)) == invoice.totals.net_total
    assert sum((note.tax_total for note in everything), Decimal(0)) == invoice.totals.tax_total
    assert sum((note.total for note in everything), Decimal(0)) == invoice.total


def test_a_credit_note_rounds_its_tax_per_vat_breakdown() -> None:
    # One of two 0.50 items on each of two 19 % lines: per line 0.095 -> 0.10 twice (0.20),
    # per breakdown 1.00 x 19 % = 0.19, the tie's cent to the earlier line. The 7 % line is
    # a breakdown of its own.
    invoice = issued(_line(1, "2", "0.50"), _line(2, "2", "0.50"), _line(3, "2", "0.50", ("0.07",)))
    lines = credit_lines(
        invoice, [CreditRequestLine(p, quantity=Decimal("1")) for p in (1, 2, 3)], []
    )
    assert [(line.net, line.tax) for line in lines] == [
        (Decimal("0.50"), Decimal("0.10")),
        (Decimal("0.50"), Decimal("0.09")),
        (Decimal("0.50"), Decimal("0.04")),
    ]
    # The rest of the invoice closes every line with what is left of it, to the cent.
    rest = credit_lines(invoice, [], [note_of(invoice, lines)])
    assert [(line.net, line.tax) for line in rest] == [
        (Decimal("0.50"), Decimal("0.09")),
        (Decimal("0.50"), Decimal("0.10")),
        (Decimal("0.50"), Decimal("0.03")),
    ]


@settings(max_examples=100, deadline=None)
@given(
    lines=st.lists(
        st.tuples(st.integers(2, 40), _PRICE, st.sampled_from([("0.19",), ("0.07",)])),
        min_size=1,
        max_size=6,
    ),
    data=st.data(),
)
def test_a_credit_note_of_several_lines_per_rate_rounds_each_breakdown_once(lines, data) -> None:
    invoice = issued(
        *(_line(i + 1, str(q), str(p), rates) for i, (q, p, rates) in enumerate(lines))
    )
    requests = [
        CreditRequestLine(
            line.position, quantity=Decimal(data.draw(st.integers(1, int(line.quantity) - 1)))
        )
        for line in invoice.lines
    ]
    credited = credit_lines(invoice, requests, [])
    by_rate: dict[Decimal, list[Any]] = {}
    for line, credit in zip(invoice.lines, credited, strict=True):
        by_rate.setdefault(line.taxes[0].rate, []).append(credit)
        # Each line within one cent of its own exact tax.
        assert abs(credit.tax - credit.net * line.taxes[0].rate) < CENT
    capped = {
        line.taxes[0].rate
        for line, credit in zip(invoice.lines, credited, strict=True)
        if credit.tax == line.tax  # all of the line's tax: the cap may have held it back
    }
    for rate, members in by_rate.items():
        exact = sum((c.net for c in members), Decimal(0)) * rate
        group_tax = sum((c.tax for c in members), Decimal(0))
        if rate in capped:
            assert group_tax <= _cents(exact)
        else:
            assert group_tax == _cents(exact)
