"""Domain rules: the status machine, refund arithmetic, outstanding amounts, invoice states."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing_common.money import Money
from payment_service.domain.errors import (
    AmountExceedsOutstanding,
    AmountExceedsRefundable,
    InvalidAmount,
    InvalidStatusTransition,
    InvoiceNotPayable,
    NothingOutstanding,
    PaymentCurrencyMismatch,
    PaymentNotRefundable,
)
from payment_service.domain.model import (
    ATTEMPT_LEASE,
    MAX_GATEWAY_ATTEMPTS,
    TRANSITIONS,
    InvoiceState,
    PayableInvoice,
    Payment,
    PaymentStatus,
    RefundStatus,
    invoice_balance,
    plan_payment,
)

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def eur(amount: str) -> Money:
    return Money.of(amount, "EUR")


def new_payment(amount: str = "100.00", currency: str = "EUR", pid: str = "p-1") -> Payment:
    return Payment.start(
        payment_id=pid,
        invoice_id="inv-1",
        customer_id="c-1",
        amount=Money.of(amount, currency),
        gateway="sandbox",
        payment_method="tok_visa",
        idempotency_key=f"key-{pid}",
        now=NOW,
    )


def captured(amount: str = "100.00", pid: str = "p-1") -> Payment:
    payment = new_payment(amount, pid=pid)
    payment.succeed("ref", NOW, "charged")
    return payment


def open_invoice(amount_due: str = "100.00", currency: str = "EUR") -> PayableInvoice:
    invoice = PayableInvoice.created(
        invoice_id="inv-1",
        customer_id="c-1",
        currency=currency,
        total=Decimal(amount_due),
        amount_due=Decimal(amount_due),
        now=NOW,
    )
    invoice.finalize(
        number="INV-1",
        customer_id="c-1",
        currency=currency,
        total=Decimal(amount_due),
        amount_due=Decimal(amount_due),
        now=NOW,
    )
    return invoice


# -- status machine --------------------------------------------------------------------------


def test_a_new_payment_is_pending_with_one_history_entry() -> None:
    payment = new_payment()
    assert payment.status is PaymentStatus.PENDING
    assert [(c.from_status, c.to_status) for c in payment.history] == [
        (None, PaymentStatus.PENDING)
    ]
    assert payment.new_history == payment.history


def test_pending_succeeds_then_refunds_partially_then_fully() -> None:
    payment = captured("100.00")
    first = payment.request_refund(
        refund_id="r1", amount=eur("30.00"), idempotency_key="k1", now=NOW
    )
    assert payment.complete_refund(first.id, "re_1", NOW)
    assert payment.status is PaymentStatus.PARTIALLY_REFUNDED
    second = payment.request_refund(refund_id="r2", amount=None, idempotency_key="k2", now=NOW)
    assert second.amount == eur("70.00")
    assert payment.complete_refund(second.id, "re_2", NOW)
    assert payment.status is PaymentStatus.REFUNDED
    assert [c.to_status for c in payment.history] == [
        PaymentStatus.PENDING,
        PaymentStatus.SUCCEEDED,
        PaymentStatus.PARTIALLY_REFUNDED,
        PaymentStatus.REFUNDED,
    ]
    assert [c.amount for c in payment.history[2:]] == [Decimal("30.00"), Decimal("70.00")]


def test_failed_is_final() -> None:
    payment = new_payment()
    assert payment.fail("card_declined", "declined", NOW, "declined")
    assert payment.status is PaymentStatus.FAILED
    assert payment.failure_code == "card_declined"
    assert not payment.fail("card_declined", "again", NOW, "again")  # no second entry
    with pytest.raises(InvalidStatusTransition):
        payment.succeed("ref", NOW, "late success")
    assert len(payment.history) == 2


def test_success_is_reported_once() -> None:
    payment = captured()
    assert not payment.succeed("ref", NOW, "webhook repeats it")
    assert len(payment.history) == 2


def test_a_captured_payment_cannot_fail() -> None:
    with pytest.raises(InvalidStatusTransition):
        captured().fail("card_declined", None, NOW, "late decline")


@pytest.mark.parametrize("status", list(PaymentStatus))
def test_transition_table_only_moves_forward(status: PaymentStatus) -> None:
    assert PaymentStatus.PENDING not in TRANSITIONS[status]
    if status in (PaymentStatus.FAILED, PaymentStatus.REFUNDED):
        assert TRANSITIONS[status] == frozenset()


def test_gateway_errors_keep_the_payment_pending_until_the_last_attempt() -> None:
    payment = new_payment()
    for attempt in range(1, MAX_GATEWAY_ATTEMPTS):
        assert payment.begin_attempt(NOW)
        assert not payment.begin_attempt(NOW), "a second attempt while one is in flight"
        assert not payment.gateway_error("processing_error", "boom", NOW)
        assert payment.status is PaymentStatus.PENDING
        assert payment.attempts == attempt
    assert payment.begin_attempt(NOW)
    assert payment.gateway_error("processing_error", "boom", NOW)
    assert payment.status is PaymentStatus.FAILED
    assert not payment.begin_attempt(NOW)


def test_an_abandoned_attempt_frees_the_payment_after_the_lease() -> None:
    payment = new_payment()
    assert payment.begin_attempt(NOW)
    assert not payment.begin_attempt(NOW + ATTEMPT_LEASE - timedelta(seconds=1))
    assert payment.begin_attempt(NOW + ATTEMPT_LEASE)


def test_a_payment_awaiting_confirmation_is_not_charged_again() -> None:
    payment = new_payment()
    payment.begin_attempt(NOW)
    payment.await_confirmation("ref", NOW)
    assert not payment.begin_attempt(NOW + timedelta(hours=1))


# -- amounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("amount", ["0", "-1.00", "10.001"])
def test_payment_amounts_must_be_positive_and_exact(amount: str) -> None:
    with pytest.raises(InvalidAmount):
        new_payment(amount)


def test_yen_has_no_minor_unit() -> None:
    with pytest.raises(InvalidAmount):
        new_payment("100.5", currency="JPY")
    assert new_payment("100", currency="JPY").amount == Money.of("100", "JPY")


def test_only_captured_payments_are_refundable() -> None:
    with pytest.raises(PaymentNotRefundable):
        new_payment().request_refund(refund_id="r", amount=None, idempotency_key="k", now=NOW)


def test_refund_never_exceeds_what_remains() -> None:
    payment = captured("50.00")
    payment.request_refund(refund_id="r1", amount=eur("40.00"), idempotency_key="k1", now=NOW)
    # The pending refund reserves its amount.
    assert payment.refundable == eur("10.00")
    with pytest.raises(AmountExceedsRefundable) as raised:
        payment.request_refund(refund_id="r2", amount=eur("10.01"), idempotency_key="k", now=NOW)
    assert raised.value.problem_extensions["refundable"] == "10.00"


def test_a_failed_refund_releases_its_reservation() -> None:
    payment = captured("50.00")
    payment.request_refund(refund_id="r1", amount=eur("50.00"), idempotency_key="k1", now=NOW)
    assert payment.refundable.is_zero
    assert payment.fail_refund("r1", "insufficient_balance", None, NOW)
    assert payment.refund("r1").status is RefundStatus.FAILED
    assert payment.refundable == eur("50.00")
    assert payment.status is PaymentStatus.SUCCEEDED


def test_nothing_left_to_refund() -> None:
    payment = captured("5.00")
    payment.request_refund(refund_id="r1", amount=None, idempotency_key="k1", now=NOW)
    payment.complete_refund("r1", "re", NOW)
    with pytest.raises(AmountExceedsRefundable):
        payment.request_refund(refund_id="r2", amount=None, idempotency_key="k2", now=NOW)


def test_refund_in_another_currency_is_refused() -> None:
    with pytest.raises(PaymentCurrencyMismatch):
        captured().request_refund(
            refund_id="r", amount=Money.of("1", "USD"), idempotency_key="k", now=NOW
        )


def test_completing_a_refund_twice_counts_once() -> None:
    payment = captured("20.00")
    payment.request_refund(refund_id="r1", amount=eur("5.00"), idempotency_key="k", now=NOW)
    assert payment.complete_refund("r1", "re", NOW)
    assert not payment.complete_refund("r1", "re", NOW)
    assert payment.refunded_amount == eur("5.00")


# -- outstanding -----------------------------------------------------------------------------


def test_outstanding_counts_captured_refunded_and_pending() -> None:
    invoice = open_invoice("100.00")
    paid = captured("40.00", pid="a")
    paid.request_refund(refund_id="r", amount=eur("10.00"), idempotency_key="k", now=NOW)
    paid.complete_refund("r", "re", NOW)
    pending = new_payment("25.00", pid="b")
    failed = new_payment("99.00", pid="c")
    failed.fail("card_declined", None, NOW, "declined")
    balance = invoice_balance(invoice, [paid, pending, failed])
    assert balance.captured == eur("40.00")
    assert balance.refunded == eur("10.00")
    assert balance.net_paid == eur("30.00")
    assert balance.pending == eur("25.00")
    assert balance.outstanding == eur("45.00")


def test_plan_defaults_to_everything_outstanding() -> None:
    invoice = open_invoice("100.00")
    assert plan_payment(invoice, [captured("30.00")], amount=None, currency=None) == eur("70.00")


def test_plan_refuses_overpayment_and_wrong_currency() -> None:
    invoice = open_invoice("100.00")
    with pytest.raises(AmountExceedsOutstanding) as raised:
        plan_payment(invoice, [captured("30.00")], amount=Decimal("70.01"), currency=None)
    assert raised.value.problem_extensions["outstanding"] == "70.00"
    with pytest.raises(PaymentCurrencyMismatch):
        plan_payment(invoice, [], amount=Decimal("1"), currency="usd")
    assert plan_payment(invoice, [], amount=Decimal("1"), currency="eur") == eur("1")


def test_plan_with_payments_in_flight_covering_the_rest() -> None:
    invoice = open_invoice("100.00")
    with pytest.raises(NothingOutstanding) as raised:
        plan_payment(invoice, [new_payment("100.00")], amount=None, currency=None)
    assert "in flight" in str(raised.value)


def test_draft_and_void_invoices_are_not_payable() -> None:
    draft = PayableInvoice.created(
        invoice_id="inv-1",
        customer_id="c",
        currency="EUR",
        total=Decimal(10),
        amount_due=Decimal(10),
        now=NOW,
    )
    with pytest.raises(InvoiceNotPayable) as raised:
        plan_payment(draft, [], amount=None, currency=None)
    assert "in flight" in str(raised.value)
    assert raised.value.problem_extensions["invoice_state"] == "draft"
    invoice = open_invoice()
    invoice.void(NOW)
    with pytest.raises(InvoiceNotPayable):
        plan_payment(invoice, [], amount=None, currency=None)


def test_void_wins_over_a_late_finalized_event() -> None:
    tombstone = PayableInvoice.void_tombstone(invoice_id="inv-1", number=None, now=NOW)
    tombstone.finalize(
        number="INV-1",
        customer_id="c",
        currency="EUR",
        total=Decimal(10),
        amount_due=Decimal(10),
        now=NOW,
    )
    assert tombstone.state is InvoiceState.VOID
    assert tombstone.amount_due == Decimal(10)


def test_a_late_created_event_does_not_reopen_a_draft() -> None:
    invoice = open_invoice("100.00")
    invoice.on_created(
        customer_id="c", currency="EUR", total=Decimal(1), amount_due=Decimal(1), now=NOW
    )
    assert invoice.state is InvoiceState.ISSUED
    assert invoice.amount_due == Decimal("100.00")


# -- properties ------------------------------------------------------------------------------

cents = st.integers(min_value=1, max_value=10_000_000).map(lambda c: Decimal(c).scaleb(-2))


@settings(max_examples=150, deadline=None)
@given(
    captured_amount=cents,
    requests=st.lists(
        st.tuples(st.one_of(st.none(), cents), st.sampled_from(["succeed", "fail", "pending"])),
        max_size=12,
    ),
)
def test_refunds_never_exceed_what_was_captured(
    captured_amount: Decimal, requests: list[tuple[Decimal | None, str]]
) -> None:
    payment = captured(str(captured_amount))
    for index, (amount, outcome) in enumerate(requests):
        money = None if amount is None else eur(str(amount))
        try:
            refund = payment.request_refund(
                refund_id=f"r{index}", amount=money, idempotency_key=f"k{index}", now=NOW
            )
        except AmountExceedsRefundable:
            continue
        if outcome == "succeed":
            payment.complete_refund(refund.id, f"re{index}", NOW)
        elif outcome == "fail":
            payment.fail_refund(refund.id, "failed", None, NOW)
        succeeded = sum(
            (r.amount.amount for r in payment.refunds if r.status is RefundStatus.SUCCEEDED),
            Decimal(0),
        )
        assert succeeded == payment.refunded_amount.amount
        assert payment.refunded_amount + payment.refund_reserved <= payment.amount
        assert not payment.refundable.is_negative
    fully = payment.refunded_amount == payment.amount
    assert (payment.status is PaymentStatus.REFUNDED) == fully


@settings(max_examples=150, deadline=None)
@given(
    amount_due=cents,
    payments=st.lists(
        st.tuples(cents, st.sampled_from(["pending", "succeeded", "failed"])), max_size=8
    ),
)
def test_outstanding_is_never_negative_and_adds_up(
    amount_due: Decimal, payments: list[tuple[Decimal, str]]
) -> None:
    invoice = open_invoice(str(amount_due))
    models = []
    for index, (amount, status) in enumerate(payments):
        payment = new_payment(str(amount), pid=f"p{index}")
        if status == "succeeded":
            payment.succeed("ref", NOW, "ok")
        elif status == "failed":
            payment.fail("card_declined", None, NOW, "no")
        models.append(payment)
    balance = invoice_balance(invoice, models)
    assert not balance.outstanding.is_negative
    expected = amount_due - balance.net_paid.amount - balance.pending.amount
    assert balance.outstanding.amount == max(expected, Decimal(0))
    if not balance.outstanding.is_zero:
        assert plan_payment(invoice, models, amount=None, currency=None) == balance.outstanding
