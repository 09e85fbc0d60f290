"""Payments, refunds and what the service knows about invoices. Pure rules, no I/O.

Status machine of a payment::

    pending --> succeeded --> partially_refunded --> refunded
       |            \\_____________________________/^
       +--> failed

Every change is appended to the payment's history. A refund reserves its amount while it is
pending at the gateway, so two refunds in flight can never exceed what was captured.

Outstanding amount of an invoice (what a new payment may still cover)::

    net_paid    = captured - refunded      (captured: payments that succeeded, including
                                             those later refunded; refunded: refunds that succeeded)
    outstanding = max(0, amount_due - net_paid - pending)

`pending` (payments not yet settled at the gateway) is held back so that two payments in flight
cannot together pay more than is owed; a failed pending payment releases it again. Refunded
money is owed again, so it becomes payable again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from billing_common.money import Money, format_amount, quantum
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

# Gateway calls whose outcome is unknown (timeouts, 5xx, processing errors) are retried when
# the client repeats the request with the same Idempotency-Key; after this many attempts the
# payment (or refund) fails for good.
MAX_GATEWAY_ATTEMPTS = 3
# While an attempt is in flight no other request starts one. An attempt whose outcome was
# never recorded (the process died, the database went away at the wrong moment) frees the
# payment again when its lease ends. The service sizes the lease from its gateway
# (service_layer/outcomes.py, attempt_lease); this is the default for callers that do not.
ATTEMPT_LEASE = timedelta(seconds=60)


class PaymentStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.PENDING: frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED}),
    PaymentStatus.SUCCEEDED: frozenset({PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}),
    PaymentStatus.PARTIALLY_REFUNDED: frozenset(
        {PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}
    ),
    PaymentStatus.FAILED: frozenset(),
    PaymentStatus.REFUNDED: frozenset(),
}

# Statuses in which the gateway holds the customer's money (part of it may be refunded).
CAPTURED = frozenset(
    {PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED}
)


class RefundStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class InvoiceState(StrEnum):
    """The invoice's status, in the invoice service's own vocabulary (one name per state on
    every API: a finalized invoice is `issued` here too)."""

    DRAFT = "draft"  # created, not yet payable
    ISSUED = "issued"  # finalized: payable for amount_due
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    VOID = "void"  # no longer payable
    UNCOLLECTIBLE = "uncollectible"  # written off: no longer payable
    CREDITED = "credited"  # credit notes took back all of it before payment: closed


# States in which a payment may be taken (what is outstanding decides how much). `paid` is one
# of them: a refund makes money owed again here at once, before the invoice's status follows.
ACCEPTS_PAYMENTS = frozenset({InvoiceState.ISSUED, InvoiceState.PARTIALLY_PAID, InvoiceState.PAID})
# Final in the invoice service: nothing learned later moves an invoice out of them.
FINAL_STATES = frozenset({InvoiceState.VOID, InvoiceState.UNCOLLECTIBLE, InvoiceState.CREDITED})


def legacy_state(state: InvoiceState) -> str:
    """The name the payment API used before it adopted the invoice's vocabulary (`state`
    field, `invoice_state` problem member): draft, open or void."""
    if state in ACCEPTS_PAYMENTS:
        return "open"
    if state in FINAL_STATES:
        return "void"
    return str(state)


@dataclass(frozen=True, slots=True)
class InvoiceSnapshot:
    """The invoice as the invoice service reported it when asked directly."""

    invoice_id: str
    status: InvoiceState
    number: str | None
    customer_id: str
    currency: str
    total: Decimal
    version: int


def check_amount(amount: Money) -> Money:
    """A payable amount: positive and exact to the currency's minor unit (no silent rounding
    of what a customer is charged)."""
    if amount.amount <= 0:
        raise InvalidAmount(f"the amount must be positive, got {format_amount(amount.amount)}")
    if amount.amount != amount.amount.quantize(quantum(amount.currency)):
        raise InvalidAmount(
            f"{format_amount(amount.amount)} has more decimals than {amount.currency} allows "
            f"(smallest unit {format_amount(quantum(amount.currency))})"
        )
    return amount


@dataclass(frozen=True, slots=True)
class StatusChange:
    from_status: PaymentStatus | None
    to_status: PaymentStatus
    reason: str
    at: datetime
    amount: Decimal | None = None  # the refund amount on refund entries


@dataclass(kw_only=True)
class GatewayAttempts:
    """Bookkeeping of calls to the gateway whose outcome we wait for (payments and refunds)."""

    attempts: int = 0
    lease_until: datetime | None = None

    def _may_attempt(self, now: datetime) -> bool:
        lease_free = self.lease_until is None or self.lease_until <= now
        return self.attempts < MAX_GATEWAY_ATTEMPTS and lease_free

    def _take_lease(self, now: datetime, lease: timedelta) -> None:
        self.attempts += 1
        self.lease_until = now + lease

    def stalled(self, now: datetime) -> bool:
        """An attempt was taken and its lease ran out with no outcome recorded."""
        return self.lease_until is not None and self.lease_until <= now


@dataclass(kw_only=True)
class Refund(GatewayAttempts):
    id: str
    payment_id: str
    amount: Money
    idempotency_key: str
    created_at: datetime
    updated_at: datetime
    status: RefundStatus = RefundStatus.PENDING
    gateway_reference: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None

    def begin_attempt(self, now: datetime, lease: timedelta = ATTEMPT_LEASE) -> bool:
        """Take the right to call the gateway now; False if not due or already in flight."""
        if self.status is not RefundStatus.PENDING or self.gateway_reference is not None:
            return False
        if not self._may_attempt(now):
            return False
        self._take_lease(now, lease)
        self.updated_at = now
        return True


@dataclass(kw_only=True)
class Payment(GatewayAttempts):
    id: str
    invoice_id: str
    amount: Money
    gateway: str
    payment_method: str
    idempotency_key: str
    created_at: datetime
    updated_at: datetime
    customer_id: str | None = None
    status: PaymentStatus = PaymentStatus.PENDING
    gateway_reference: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    refunded: Money | None = None
    refunds: list[Refund] = field(default_factory=list)
    history: list[StatusChange] = field(default_factory=list)
    # Changes made since loading, for the repository to append to the history table.
    new_history: list[StatusChange] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.refunded is None:
            self.refunded = Money.zero(self.amount.currency)

    @classmethod
    def start(
        cls,
        *,
        payment_id: str,
        invoice_id: str,
        customer_id: str | None,
        amount: Money,
        gateway: str,
        payment_method: str,
        idempotency_key: str,
        now: datetime,
    ) -> Payment:
        payment = cls(
            id=payment_id,
            invoice_id=invoice_id,
            customer_id=customer_id,
            amount=check_amount(amount),
            gateway=gateway,
            payment_method=payment_method,
            idempotency_key=idempotency_key,
            created_at=now,
            updated_at=now,
        )
        payment._record(None, PaymentStatus.PENDING, "payment requested", now)
        return payment

    # -- status machine ------------------------------------------------------------------

    def _record(
        self,
        from_status: PaymentStatus | None,
        to_status: PaymentStatus,
        reason: str,
        now: datetime,
        amount: Decimal | None = None,
    ) -> None:
        change = StatusChange(from_status, to_status, reason, now, amount)
        self.history.append(change)
        self.new_history.append(change)
        self.status = to_status
        self.updated_at = now

    def _transition(
        self, to_status: PaymentStatus, reason: str, now: datetime, amount: Decimal | None = None
    ) -> None:
        if to_status not in TRANSITIONS[self.status]:
            raise InvalidStatusTransition(
                f"payment {self.id} cannot go from {self.status} to {to_status}",
                payment_status=str(self.status),
            )
        self._record(self.status, to_status, reason, now, amount)

    def begin_attempt(self, now: datetime, lease: timedelta = ATTEMPT_LEASE) -> bool:
        """Take the right to call the gateway now; False if the payment is settled, waits for
        a webhook, has used its attempts, or another request's attempt is in flight."""
        if self.status is not PaymentStatus.PENDING or self.gateway_reference is not None:
            return False
        if not self._may_attempt(now):
            return False
        self._take_lease(now, lease)
        self.updated_at = now
        return True

    def succeed(self, reference: str | None, now: datetime, reason: str) -> bool:
        """Captured. Returns False (no change) if it already was: webhooks repeat themselves."""
        if self.status in CAPTURED:
            return False
        self._transition(PaymentStatus.SUCCEEDED, reason, now)
        if reference:
            self.gateway_reference = reference
        self.failure_code = None
        self.failure_message = None
        self.lease_until = None
        return True

    def fail(self, code: str, message: str | None, now: datetime, reason: str) -> bool:
        if self.status is PaymentStatus.FAILED:
            return False
        self._transition(PaymentStatus.FAILED, reason, now)
        self.failure_code = code
        self.failure_message = message
        self.lease_until = None
        return True

    def await_confirmation(self, reference: str, now: datetime) -> None:
        """The gateway accepted the charge but settles it later (3-D Secure, async methods):
        the outcome arrives by webhook."""
        if self.status is not PaymentStatus.PENDING:
            raise InvalidStatusTransition(f"payment {self.id} is {self.status}, not pending")
        self.gateway_reference = reference
        self.lease_until = None
        self.updated_at = now

    def gateway_error(self, code: str, message: str | None, now: datetime) -> bool:
        """The outcome of the attempt is unknown. The payment stays pending (a retry with the
        same Idempotency-Key tries again, and the gateway's own idempotency key makes that
        safe) until MAX_GATEWAY_ATTEMPTS; then it fails. Returns True if it failed."""
        if self.status is not PaymentStatus.PENDING:
            return False
        self.lease_until = None
        self.failure_code = code
        self.failure_message = message
        self.updated_at = now
        if self.attempts >= MAX_GATEWAY_ATTEMPTS:
            return self.fail(code, message, now, f"gateway error after {self.attempts} attempts")
        return False

    # -- amounts ---------------------------------------------------------------------------

    @property
    def captured(self) -> Money:
        return self.amount if self.status in CAPTURED else Money.zero(self.amount.currency)

    @property
    def refunded_amount(self) -> Money:
        assert self.refunded is not None
        return self.refunded

    @property
    def refund_reserved(self) -> Money:
        reserved = Money.zero(self.amount.currency)
        for refund in self.refunds:
            if refund.status is RefundStatus.PENDING:
                reserved = reserved + refund.amount
        return reserved

    @property
    def refundable(self) -> Money:
        """Captured minus refunded minus refunds in flight: never negative."""
        remaining = self.captured - self.refunded_amount - self.refund_reserved
        return remaining.max(Money.zero(self.amount.currency))

    # -- refunds ---------------------------------------------------------------------------

    def request_refund(
        self, *, refund_id: str, amount: Money | None, idempotency_key: str, now: datetime
    ) -> Refund:
        """Reserve a refund; `amount` None means everything still refundable."""
        if self.status not in CAPTURED:
            raise PaymentNotRefundable(
                f"payment {self.id} is {self.status}: only captured payments can be refunded",
                payment_status=str(self.status),
            )
        refundable = self.refundable
        if amount is None:
            if refundable.is_zero:
                raise AmountExceedsRefundable(
                    f"payment {self.id} has nothing left to refund",
                    refundable=format_amount(refundable.amount),
                )
            amount = refundable
        if amount.currency != self.amount.currency:
            raise PaymentCurrencyMismatch(
                f"the payment is in {self.amount.currency}, not {amount.currency}"
            )
        check_amount(amount)
        if amount > refundable:
            raise AmountExceedsRefundable(
                f"cannot refund {amount}: only {refundable} of payment {self.id} is refundable",
                refundable=format_amount(refundable.amount),
            )
        refund = Refund(
            id=refund_id,
            payment_id=self.id,
            amount=amount,
            idempotency_key=idempotency_key,
            created_at=now,
            updated_at=now,
        )
        self.refunds.append(refund)
        return refund

    def refund(self, refund_id: str) -> Refund:
        for refund in self.refunds:
            if refund.id == refund_id:
                return refund
        raise KeyError(refund_id)

    def complete_refund(self, refund_id: str, reference: str | None, now: datetime) -> bool:
        """The gateway returned the money. False if this refund was already complete."""
        refund = self.refund(refund_id)
        if refund.status is RefundStatus.SUCCEEDED:
            return False
        if refund.status is RefundStatus.FAILED:
            raise InvalidStatusTransition(f"refund {refund_id} already failed")
        refund.status = RefundStatus.SUCCEEDED
        refund.gateway_reference = reference or refund.gateway_reference
        refund.failure_code = refund.failure_message = None
        refund.lease_until = None
        refund.updated_at = now
        self.refunded = self.refunded_amount + refund.amount
        target = (
            PaymentStatus.REFUNDED
            if self.refunded_amount >= self.amount
            else PaymentStatus.PARTIALLY_REFUNDED
        )
        self._transition(target, f"refund {refund_id}", now, refund.amount.amount)
        return True

    def fail_refund(self, refund_id: str, code: str, message: str | None, now: datetime) -> bool:
        """The gateway refused the refund: its reservation is released."""
        refund = self.refund(refund_id)
        if refund.status is not RefundStatus.PENDING:
            return False
        refund.status = RefundStatus.FAILED
        refund.failure_code = code
        refund.failure_message = message
        refund.lease_until = None
        refund.updated_at = now
        return True

    def refund_awaits_confirmation(self, refund_id: str, reference: str, now: datetime) -> None:
        refund = self.refund(refund_id)
        refund.gateway_reference = reference
        refund.lease_until = None
        refund.updated_at = now

    def refund_gateway_error(
        self, refund_id: str, code: str, message: str | None, now: datetime
    ) -> bool:
        """Outcome unknown: retry with the same key, fail after MAX_GATEWAY_ATTEMPTS."""
        refund = self.refund(refund_id)
        if refund.status is not RefundStatus.PENDING:
            return False
        refund.lease_until = None
        refund.failure_code = code
        refund.failure_message = message
        refund.updated_at = now
        if refund.attempts >= MAX_GATEWAY_ATTEMPTS:
            return self.fail_refund(refund_id, code, message, now)
        return False


@dataclass
class PayableInvoice:
    """An invoice as far as payments are concerned, built from the invoice service's events
    (and, for an invoice not known yet, from asking the invoice service).

    Events may arrive in any order and more than once: `version` (the invoice's own change
    counter) orders what is learned, a status is never taken from an older version, nothing
    moves an invoice back to draft, and void/uncollectible are final. A `void` event may
    arrive before anything else; the row is then a tombstone without amounts, and later
    events only fill in the details."""

    invoice_id: str
    state: InvoiceState
    created_at: datetime
    updated_at: datetime
    customer_id: str | None = None
    currency: str | None = None
    total: Decimal | None = None
    amount_due: Decimal | None = None
    number: str | None = None
    version: int | None = None

    def _details(
        self, customer_id: str, currency: str, total: Decimal, amount_due: Decimal
    ) -> None:
        self.customer_id = customer_id
        self.currency = Money.of(total, currency).currency
        self.total = total
        self.amount_due = amount_due

    @classmethod
    def void_tombstone(
        cls, *, invoice_id: str, number: str | None, now: datetime
    ) -> PayableInvoice:
        """A void event for an invoice not seen before: remembered, so that a finalized event
        arriving later cannot make it payable."""
        return cls(
            invoice_id=invoice_id,
            state=InvoiceState.VOID,
            number=number,
            created_at=now,
            updated_at=now,
        )

    @classmethod
    def created(
        cls,
        *,
        invoice_id: str,
        customer_id: str,
        currency: str,
        total: Decimal,
        amount_due: Decimal,
        now: datetime,
    ) -> PayableInvoice:
        invoice = cls(
            invoice_id=invoice_id, state=InvoiceState.DRAFT, created_at=now, updated_at=now
        )
        invoice._details(customer_id, currency, total, amount_due)
        return invoice

    @classmethod
    def learned(cls, snapshot: InvoiceSnapshot, now: datetime) -> PayableInvoice:
        invoice = cls(
            invoice_id=snapshot.invoice_id,
            state=InvoiceState.DRAFT,
            created_at=now,
            updated_at=now,
        )
        invoice.learn(snapshot, now)
        return invoice

    def on_created(
        self, *, customer_id: str, currency: str, total: Decimal, amount_due: Decimal, now: datetime
    ) -> None:
        """A late `created` never moves a finalized or void invoice back to draft; it only
        fills in details a tombstone lacks."""
        if self.currency is None:
            self._details(customer_id, currency, total, amount_due)
            self.updated_at = now

    def observe(self, state: InvoiceState, version: int | None, now: datetime) -> bool:
        """Take a status the invoice service reported; False if it is older than what is
        known (a lower version, a step back to draft, or anything after a final state)."""
        if self.state in FINAL_STATES and state is not self.state:
            return False
        if state is InvoiceState.DRAFT and self.state is not InvoiceState.DRAFT:
            return False
        if version is not None and self.version is not None and version < self.version:
            return False
        self.state = state
        if version is not None:
            self.version = max(version, self.version or 0)
        self.updated_at = now
        return True

    def finalize(
        self,
        *,
        number: str,
        customer_id: str,
        currency: str,
        total: Decimal,
        amount_due: Decimal,
        now: datetime,
        version: int | None = None,
    ) -> None:
        """Payable for `amount_due` (the finalized figures win over the draft's). Only a
        draft becomes issued: a void invoice stays void, a later status stays."""
        self._details(customer_id, currency, total, amount_due)
        self.number = number
        if self.state is InvoiceState.DRAFT:
            self.observe(InvoiceState.ISSUED, version, now)
        self.updated_at = now

    def learn(self, snapshot: InvoiceSnapshot, now: datetime) -> None:
        """What the invoice service answered when asked. A finalized invoice is payable for
        its total: the payments this service took are subtracted from it here (a payment
        the invoice service applied was taken by this service)."""
        if self.currency is None or self.state is InvoiceState.DRAFT:
            self._details(snapshot.customer_id, snapshot.currency, snapshot.total, snapshot.total)
        self.number = self.number or snapshot.number
        self.observe(snapshot.status, snapshot.version, now)

    def credit(self, *, invoice_total: Decimal, amount_credited: Decimal, now: datetime) -> bool:
        """A credit note of the invoice: at most total − credited (all its credit notes so
        far) may be charged any more. Only lowers: events may repeat or come out of order.
        False if it changed nothing."""
        if self.amount_due is None:
            return False
        limit = invoice_total - amount_credited
        if limit >= self.amount_due:
            return False
        self.amount_due = max(limit, limit - limit)
        self.updated_at = now
        return True

    def void(self, now: datetime, version: int | None = None) -> None:
        """Void is final whatever was learned before it."""
        self.state = InvoiceState.VOID
        if version is not None:
            self.version = max(version, self.version or 0)
        self.updated_at = now

    @property
    def needs_lookup(self) -> bool:
        """Still a draft here: its finalization may be on its way; ask the invoice service."""
        return self.state is InvoiceState.DRAFT

    def ensure_payable(self) -> None:
        if self.state in ACCEPTS_PAYMENTS:
            return
        if self.state is InvoiceState.DRAFT:
            detail = (
                f"invoice {self.invoice_id} is still a draft; it becomes payable once it is "
                "finalized (if it was finalized just now, its event may still be in flight: "
                "retry shortly)"
            )
        elif self.state is InvoiceState.VOID:
            detail = f"invoice {self.invoice_id} is void and can no longer be paid"
        else:
            detail = f"invoice {self.invoice_id} is {self.state} and can no longer be paid"
        raise InvoiceNotPayable(
            detail,
            invoice_id=self.invoice_id,
            invoice_status=str(self.state),
            invoice_state=legacy_state(self.state),
        )

    @property
    def amount_due_money(self) -> Money:
        if self.currency is None or self.amount_due is None:
            raise InvoiceNotPayable(f"invoice {self.invoice_id} has no known amount due")
        return Money.of(self.amount_due, self.currency)


def invoice_not_known(invoice_id: str) -> InvoiceNotPayable:
    return InvoiceNotPayable(
        f"invoice {invoice_id} is not known to the payment service, and the invoice "
        "service did not confirm it exists; if it was finalized just now, its event may "
        "still be in flight: retry shortly",
        invoice_id=invoice_id,
        invoice_status="unknown",
        invoice_state="unknown",
    )


@dataclass(frozen=True, slots=True)
class InvoiceBalance:
    amount_due: Money
    captured: Money
    refunded: Money
    pending: Money

    @property
    def net_paid(self) -> Money:
        return self.captured - self.refunded

    @property
    def outstanding(self) -> Money:
        owed = self.amount_due - self.net_paid - self.pending
        return owed.max(Money.zero(self.amount_due.currency))


def invoice_balance(invoice: PayableInvoice, payments: Iterable[Payment]) -> InvoiceBalance:
    due = invoice.amount_due_money
    zero = Money.zero(due.currency)
    captured = refunded = pending = zero
    for payment in payments:
        if payment.amount.currency != due.currency:
            continue  # cannot happen through `plan_payment`; never mix currencies if it did
        if payment.status in CAPTURED:
            captured = captured + payment.amount
            refunded = refunded + payment.refunded_amount
        elif payment.status is PaymentStatus.PENDING:
            pending = pending + payment.amount
    return InvoiceBalance(due, captured, refunded, pending)


def plan_payment(
    invoice: PayableInvoice,
    payments: Iterable[Payment],
    *,
    amount: Decimal | None,
    currency: str | None,
) -> Money:
    """The amount a new payment of this invoice charges: `amount` (default: everything
    outstanding), checked against the invoice's state, currency and outstanding amount."""
    invoice.ensure_payable()
    balance = invoice_balance(invoice, payments)
    due_currency = balance.amount_due.currency
    if currency is not None and Money.zero(currency).currency != due_currency:
        raise PaymentCurrencyMismatch(
            f"invoice {invoice.invoice_id} is payable in {due_currency}, not {currency}",
            invoice_currency=due_currency,
        )
    outstanding = balance.outstanding
    if outstanding.is_zero:
        detail = (
            "payments in flight cover the rest" if not balance.pending.is_zero else "it is paid"
        )
        raise NothingOutstanding(
            f"invoice {invoice.invoice_id} has nothing outstanding: {detail}",
            pending=format_amount(balance.pending.amount),
        )
    charge = outstanding if amount is None else check_amount(Money.of(amount, due_currency))
    if charge > outstanding:
        raise AmountExceedsOutstanding(
            f"cannot pay {charge}: {outstanding} of invoice {invoice.invoice_id} is outstanding",
            outstanding=format_amount(outstanding.amount),
        )
    return charge
