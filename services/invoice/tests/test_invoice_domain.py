"""Domain unit tests: status machine (exhaustively), totals, payments and refunds, pricing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from invoice_service.domain.errors import (
    InvalidInvoice,
    InvalidTransition,
    PeerContractViolation,
)
from invoice_service.domain.model import (
    TRANSITIONS,
    AppliedDiscount,
    Customer,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    PaymentFlag,
    PaymentKind,
    PriceMode,
    TaxComponent,
    TaxStatus,
)
from invoice_service.domain.numbering import check_series, format_number
from invoice_service.domain.pricing import (
    DiscountResult,
    LineDraft,
    TaxLineResult,
    TaxResult,
    allocate_discount,
    build_lines,
    check_discount,
)

S = InvoiceStatus
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
D = Decimal


def customer(**overrides: object) -> Customer:
    values: dict[str, object] = {
        "id": "c-1",
        "type": None,
        "country": "DE",
        "region": None,
        "tax_status": TaxStatus.STANDARD,
    }
    values.update(overrides)
    return Customer(**values)  # type: ignore[arg-type]


def line(
    position: int = 1, subtotal: str = "100.00", discount: str = "0.00", rate: str = "0.19"
) -> InvoiceLine:
    net = D(subtotal) - D(discount)
    tax = (net * D(rate)).quantize(D("0.01"))
    return InvoiceLine(
        position=position,
        description=f"item {position}",
        quantity=D(1),
        unit_price=D(subtotal),
        category="standard",
        subtotal=D(subtotal),
        discount=D(discount),
        net=net,
        tax=tax,
        total=net + tax,
        taxes=(TaxComponent("r1", "VAT", D(rate), tax),),
    )


def invoice(
    lines: list[InvoiceLine] | None = None,
    discounts: list[AppliedDiscount] | None = None,
    due_days: int = 14,
) -> Invoice:
    return Invoice.create(
        id="inv-1",
        tenant_id="acme",
        customer=customer(),
        currency="EUR",
        price_mode=PriceMode.EXCLUSIVE,
        series="INV",
        lines=lines or [line()],
        discounts=discounts or [],
        due_days=due_days,
        at=T0,
        actor="user:alice",
        tax_calculation_id="tax-1",
        discount_redemption_id=None,
    )


def pay(inv: Invoice, amount: str, currency: str = "EUR", pid: str = "p1") -> bool:
    return inv.apply_payment(payment_id=pid, amount=D(amount), currency=currency, at=T0)


def refund(inv: Invoice, amount: str, currency: str = "EUR") -> None:
    inv.apply_refund(payment_id="p1", refund_id="r1", amount=D(amount), currency=currency, at=T0)


def finalized(total_lines: list[InvoiceLine] | None = None) -> Invoice:
    inv = invoice(total_lines)
    inv.finalize(number="INV-000001", sequence=1, at=T0)
    return inv


def in_status(status: InvoiceStatus) -> Invoice:
    """An invoice brought to `status` by the real operations (total 119.00)."""
    inv = invoice()
    if status is S.DRAFT:
        return inv
    if status is S.VOID:
        inv.void(at=T0, reason="test")
        return inv
    inv.finalize(number="INV-000001", sequence=1, at=T0)
    if status is S.PARTIALLY_PAID:
        pay(inv, "19.00")
    elif status is S.PAID:
        pay(inv, "119.00")
    elif status is S.UNCOLLECTIBLE:
        inv.mark_uncollectible(at=T0)
    elif status is S.CREDITED:
        inv.apply_credit(credit_note="CN-000001", amount=inv.total, at=T0)
    assert inv.status is status
    return inv


# ---- the status machine -----------------------------------------------------------------

EXPECTED_EDGES = {
    (S.DRAFT, S.ISSUED), (S.DRAFT, S.VOID),
    (S.ISSUED, S.PAID), (S.ISSUED, S.PARTIALLY_PAID), (S.ISSUED, S.VOID),
    (S.ISSUED, S.UNCOLLECTIBLE), (S.ISSUED, S.CREDITED),
    (S.PARTIALLY_PAID, S.PAID), (S.PARTIALLY_PAID, S.UNCOLLECTIBLE),
    (S.PARTIALLY_PAID, S.VOID), (S.PARTIALLY_PAID, S.ISSUED),
    (S.PAID, S.PARTIALLY_PAID), (S.PAID, S.ISSUED),
}  # fmt: skip


@pytest.mark.parametrize("source", list(S))
@pytest.mark.parametrize("target", list(S))
def test_transition_table_is_exactly_the_documented_one(source: S, target: S) -> None:
    assert Invoice.can_transition(source, target) == ((source, target) in EXPECTED_EDGES)
    assert (target in TRANSITIONS[source]) == ((source, target) in EXPECTED_EDGES)


# operation -> statuses from which it succeeds, and the status it leads to
OPERATIONS = {
    "finalize": ({S.DRAFT}, S.ISSUED),
    "void": ({S.DRAFT, S.ISSUED}, S.VOID),  # partially paid: something is paid -> refused
    "mark_uncollectible": ({S.ISSUED, S.PARTIALLY_PAID}, S.UNCOLLECTIBLE),
}


def _run(inv: Invoice, operation: str) -> None:
    if operation == "finalize":
        inv.finalize(number="INV-000002", sequence=2, at=T0 + timedelta(hours=1))
    elif operation == "void":
        inv.void(at=T0 + timedelta(hours=1), reason="r", actor="user:bob")
    else:
        inv.mark_uncollectible(at=T0 + timedelta(hours=1), reason="r", actor="user:bob")


@pytest.mark.parametrize("status", list(S))
@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_every_operation_from_every_status(status: S, operation: str) -> None:
    allowed, target = OPERATIONS[operation]
    inv = in_status(status)
    before = (inv.status, inv.version, len(inv.history), inv.number)
    if status in allowed:
        _run(inv, operation)
        assert inv.status is target
        assert inv.version == before[1] + 1
        change = inv.history[-1]
        assert (change.from_status, change.to_status) == (status, target)
        assert change.at == T0 + timedelta(hours=1)
    else:
        with pytest.raises(InvalidTransition) as raised:
            _run(inv, operation)
        assert raised.value.problem_extensions["current_status"] == status.value
        assert (inv.status, inv.version, len(inv.history), inv.number) == before


def test_void_refused_when_something_is_paid_and_allowed_after_full_refund() -> None:
    inv = in_status(S.PARTIALLY_PAID)
    with pytest.raises(InvalidTransition, match="refund it first"):
        inv.void(at=T0)
    refund(inv, "19.00")
    assert inv.status is S.ISSUED and inv.amount_paid == 0
    inv.void(at=T0, reason="cancelled order")
    assert inv.status is S.VOID and inv.voided_at == T0
    assert inv.amount_due == D("0.00")


def test_creation_and_finalization_history_and_dates() -> None:
    inv = invoice(due_days=14)
    assert inv.status is S.DRAFT and inv.number is None and inv.version == 1
    assert inv.history[0].from_status is None and inv.history[0].actor == "user:alice"
    inv.finalize(number="INV-000007", sequence=7, at=T0, actor="user:bob")
    assert (inv.number, inv.sequence, inv.issued_at) == ("INV-000007", 7, T0)
    assert inv.due_date == (T0 + timedelta(days=14)).date()
    assert [(h.from_status, h.to_status) for h in inv.history] == [
        (None, S.DRAFT),
        (S.DRAFT, S.ISSUED),
    ]
    assert inv.history[-1].actor == "user:bob"


def test_zero_total_invoice_is_settled_at_finalization() -> None:
    free = line(subtotal="0.00")
    inv = invoice([free])
    inv.finalize(number="INV-000001", sequence=1, at=T0)
    assert inv.status is S.PAID and inv.paid_at == T0
    assert [h.to_status for h in inv.history] == [S.DRAFT, S.ISSUED, S.PAID]


# ---- totals -----------------------------------------------------------------------------


def test_totals_are_the_sums_of_the_lines() -> None:
    lines = [line(1, "200.00", "20.00"), line(2, "33.33", "3.33", rate="0.07")]
    inv = invoice(lines, [AppliedDiscount("coupon", "Welcome", D("23.33"), "WELCOME10")])
    t = inv.totals
    assert t.subtotal == D("233.33")
    assert t.discount_total == D("23.33")
    assert t.net_total == D("210.00")
    assert t.tax_total == D("34.20") + D("2.10")
    assert t.total == t.net_total + t.tax_total == D("246.30")
    assert inv.amount_due == D("246.30")


def test_applied_discounts_must_match_the_line_discounts() -> None:
    with pytest.raises(InvalidInvoice, match="do not match"):
        invoice([line(1, "100.00", "10.00")], [AppliedDiscount("coupon", "x", D("9.99"))])


def test_an_invoice_needs_lines_and_a_non_negative_due_days() -> None:
    with pytest.raises(InvalidInvoice):
        Invoice(
            id="i",
            tenant_id="t",
            customer=customer(),
            currency="EUR",
            price_mode=PriceMode.EXCLUSIVE,
            series="INV",
            lines=[],
            created_at=T0,
            due_days=1,
        )
    with pytest.raises(InvalidInvoice):
        invoice(due_days=-1)


def test_reverse_charge_customer_needs_a_tax_id() -> None:
    with pytest.raises(InvalidInvoice, match="tax_id"):
        customer(tax_status=TaxStatus.REVERSE_CHARGE)
    assert customer(tax_status=TaxStatus.REVERSE_CHARGE, tax_id="DE123").tax_id == "DE123"


# ---- payments and refunds ---------------------------------------------------------------


def test_partial_then_full_payment() -> None:
    inv = finalized()
    assert pay(inv, "100.00") is False
    assert inv.status is S.PARTIALLY_PAID
    assert (inv.amount_paid, inv.amount_due) == (D("100.00"), D("19.00"))
    assert pay(inv, "19.00", pid="p2") is True
    assert inv.status is S.PAID and inv.paid_at == T0
    assert inv.amount_due == D("0.00") and inv.overpaid == D("0.00")
    assert [p.applied for p in inv.payments] == [True, True]


def test_overpayment_is_applied_and_flagged_and_amount_due_stays_zero() -> None:
    inv = finalized()
    assert pay(inv, "150.00") is True
    assert inv.status is S.PAID
    assert inv.payments[-1].flag is PaymentFlag.OVERPAYMENT and inv.payments[-1].applied
    assert inv.amount_due == D("0.00") and inv.overpaid == D("31.00")
    # More money on a paid invoice: kept, flagged, no second "paid".
    assert pay(inv, "1.00", pid="p2") is False
    assert inv.status is S.PAID and inv.overpaid == D("32.00")
    assert inv.payments[-1].flag is PaymentFlag.OVERPAYMENT


def test_payment_in_another_currency_is_recorded_not_applied() -> None:
    inv = finalized()
    assert pay(inv, "119.00", currency="USD") is False
    assert inv.status is S.ISSUED and inv.amount_paid == 0
    record = inv.payments[-1]
    assert (record.applied, record.flag, record.currency) == (
        False,
        PaymentFlag.CURRENCY_MISMATCH,
        "USD",
    )


@pytest.mark.parametrize("status", [S.DRAFT, S.VOID, S.UNCOLLECTIBLE])
def test_payment_on_a_non_payable_invoice_is_recorded_not_applied(status: S) -> None:
    inv = in_status(status)
    paid_before = inv.amount_paid
    assert pay(inv, "5.00") is False
    assert inv.status is status and inv.amount_paid == paid_before
    assert inv.payments[-1].flag is PaymentFlag.NOT_PAYABLE


def test_refund_from_paid_back_to_partially_paid_then_issued() -> None:
    inv = finalized()
    pay(inv, "119.00")
    refund(inv, "19.00")
    assert inv.status is S.PARTIALLY_PAID and inv.paid_at is None
    assert (inv.amount_paid, inv.amount_due) == (D("100.00"), D("19.00"))
    refund(inv, "100.00")
    assert inv.status is S.ISSUED and inv.amount_paid == D("0.00")
    assert [h.to_status for h in inv.history][-3:] == [S.PAID, S.PARTIALLY_PAID, S.ISSUED]
    assert inv.payments[-1].kind is PaymentKind.REFUND and inv.payments[-1].refund_id == "r1"


def test_refund_of_an_overpayment_keeps_the_invoice_paid() -> None:
    inv = finalized()
    pay(inv, "130.00")
    refund(inv, "11.00")
    assert inv.status is S.PAID and inv.overpaid == D("0.00") and inv.amount_due == D("0.00")


def test_refund_larger_than_paid_or_in_another_currency_is_flagged() -> None:
    inv = finalized()
    pay(inv, "50.00")
    refund(inv, "60.00")
    assert inv.payments[-1].flag is PaymentFlag.REFUND_EXCEEDS_PAID
    refund(inv, "10.00", currency="USD")
    assert inv.payments[-1].flag is PaymentFlag.CURRENCY_MISMATCH
    assert inv.amount_paid == D("50.00") and inv.status is S.PARTIALLY_PAID


def test_refund_on_uncollectible_reduces_paid_but_keeps_status() -> None:
    inv = in_status(S.PARTIALLY_PAID)
    inv.mark_uncollectible(at=T0)
    refund(inv, "9.00")
    assert inv.status is S.UNCOLLECTIBLE and inv.amount_paid == D("10.00")


def test_refund_on_draft_is_not_refundable() -> None:
    inv = invoice()
    refund(inv, "1.00")
    assert inv.payments[-1].flag is PaymentFlag.NOT_REFUNDABLE and inv.amount_paid == 0


def test_payment_failure_is_history_only() -> None:
    inv = finalized()
    version = inv.version
    inv.record_payment_failure(
        payment_id="p9",
        amount=D("119.00"),
        currency="EUR",
        failure_code="card_declined",
        failure_message="insufficient funds",
        at=T0,
        event_id="ev-1",
    )
    assert inv.status is S.ISSUED and inv.amount_paid == 0
    entry = inv.history[-1]
    assert (entry.from_status, entry.to_status, entry.event_id) == (S.ISSUED, S.ISSUED, "ev-1")
    assert "card_declined: insufficient funds" in (entry.reason or "")
    assert inv.payments[-1].kind is PaymentKind.FAILURE and not inv.payments[-1].applied
    assert inv.version == version + 1


@pytest.mark.parametrize("amount", ["0", "-1.00"])
def test_non_positive_payment_amounts_are_invalid(amount: str) -> None:
    inv = finalized()
    with pytest.raises(InvalidInvoice):
        pay(inv, amount)
    with pytest.raises(InvalidInvoice):
        refund(inv, amount)


# ---- pricing ----------------------------------------------------------------------------


def test_line_subtotal_rounds_half_up_to_the_minor_unit() -> None:
    assert LineDraft("x", D("3"), D("0.335"), "standard").subtotal("EUR") == D("1.01")
    assert LineDraft("x", D("1.5"), D("0.005"), "standard").subtotal("EUR") == D("0.01")
    assert LineDraft("x", D("3"), D("333.5"), "standard").subtotal("JPY") == D("1001")


@pytest.mark.parametrize(
    ("quantity", "price"),
    [("0", "1"), ("-1", "1"), ("1", "-0.01"), ("1.0000001", "1"), ("1", "0.0000001")],
)
def test_invalid_line_drafts(quantity: str, price: str) -> None:
    with pytest.raises(InvalidInvoice):
        LineDraft("x", D(quantity), D(price), "standard")
    with pytest.raises(InvalidInvoice):
        LineDraft("  ", D("1"), D("1"), "standard")


def test_allocate_discount_is_proportional_and_exact() -> None:
    assert allocate_discount([D("200.00"), D("33.33")], D("23.33"), "EUR") == [
        D("20.00"),
        D("3.33"),
    ]
    shares = allocate_discount([D("1.00")] * 3, D("1.00"), "EUR")
    assert sum(shares) == D("1.00") and sorted(shares) == [D("0.33"), D("0.33"), D("0.34")]
    assert allocate_discount([D("0.00"), D("10.00")], D("10.00"), "EUR") == [D("0.00"), D("10.00")]
    assert allocate_discount([D("5.00")], D("0"), "EUR") == [D("0.00")]
    with pytest.raises(InvalidInvoice):
        allocate_discount([D("5.00")], D("5.01"), "EUR")
    with pytest.raises(InvalidInvoice):
        allocate_discount([D("5.00")], D("0.001"), "EUR")


def _tax_line(position: int, net: str, tax: str, gross: str | None = None) -> TaxLineResult:
    gross = gross or str(D(net) + D(tax))
    return TaxLineResult(
        str(position), D(net), D(tax), D(gross), (TaxComponent("r", "VAT", D("0.19"), D(tax)),)
    )


def test_build_lines_exclusive() -> None:
    drafts = [LineDraft("Widget", D("2"), D("100.00"), "standard")]
    lines = build_lines(
        drafts,
        [D("20.00")],
        TaxResult("t", (_tax_line(1, "180.00", "34.20"),)),
        currency="EUR",
        price_mode=PriceMode.EXCLUSIVE,
    )
    (only,) = lines
    assert (only.quantity, only.unit_price, only.subtotal) == (D("2"), D("100.00"), D("200.00"))
    assert (only.discount, only.net, only.tax, only.total) == (
        D("20.00"),
        D("180.00"),
        D("34.20"),
        D("214.20"),
    )


def test_build_lines_inclusive() -> None:
    drafts = [LineDraft("Widget", D("1"), D("119.00"), "standard")]
    lines = build_lines(
        drafts,
        [D("0.00")],
        TaxResult("t", (_tax_line(1, "100.00", "19.00"),)),
        currency="EUR",
        price_mode=PriceMode.INCLUSIVE,
    )
    (only,) = lines
    assert (only.subtotal, only.net, only.tax, only.total) == (
        D("119.00"),
        D("100.00"),
        D("19.00"),
        D("119.00"),
    )


@pytest.mark.parametrize(
    "answer",
    [
        (_tax_line(1, "179.99", "34.20"),),  # computed on another amount
        (_tax_line(1, "180.00", "34.20", "214.21"),),  # net + tax != gross
        (_tax_line(2, "180.00", "34.20"),),  # wrong line id
        (_tax_line(1, "180.00", "34.205"),),  # not rounded
        (),  # missing line
    ],
)
def test_build_lines_refuses_an_answer_about_other_amounts(
    answer: tuple[TaxLineResult, ...],
) -> None:
    drafts = [LineDraft("Widget", D("2"), D("100.00"), "standard")]
    with pytest.raises(PeerContractViolation):
        build_lines(
            drafts,
            [D("20.00")],
            TaxResult("t", answer),
            currency="EUR",
            price_mode=PriceMode.EXCLUSIVE,
        )


def test_check_discount() -> None:
    ok = DiscountResult(D("10.00"), (AppliedDiscount("coupon", "c", D("10.00"), "C"),))
    check_discount(ok, D("100.00"), "EUR")
    for bad in (
        DiscountResult(D("101.00"), (AppliedDiscount("coupon", "c", D("101.00")),)),
        DiscountResult(D("10.00"), (AppliedDiscount("coupon", "c", D("9.00")),)),
        DiscountResult(D("-1.00"), ()),
    ):
        with pytest.raises(PeerContractViolation):
            check_discount(bad, D("100.00"), "EUR")


# ---- numbering --------------------------------------------------------------------------


def test_number_format_and_series() -> None:
    assert format_number("INV", 1) == "INV-000001"
    assert format_number("INV2026", 123456) == "INV2026-123456"
    assert format_number("INV", 1234567) == "INV-1234567"
    with pytest.raises(ValueError):
        format_number("INV", 0)
    assert check_series(" inv-eu ") == "INV-EU"
    for bad in ("", "-INV", "INV_1", "A" * 17, "IN V"):
        with pytest.raises(InvalidInvoice):
            check_series(bad)
