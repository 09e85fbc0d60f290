"""The invoice aggregate: lines, totals, status machine, payments and history.

Status machine (every change goes through `_transition`, which checks it and appends history):

    draft ──finalize──> issued ──payment──> partially_paid ──payment──> paid
      │                   │ │                   │  │
      └──void──> void <───┘ └──> uncollectible <┘  └──> void (only if nothing paid)

* draft -> issued (finalize, takes the number), draft -> void.
* issued -> paid | partially_paid (payments), void (only if nothing is paid), uncollectible.
* partially_paid -> paid (payment), uncollectible, void (only if nothing is paid — after
  refunds brought amount_paid back to 0 the invoice is `issued` again, so in practice never).
* Refunds move backwards: paid -> partially_paid | issued, partially_paid -> issued, depending
  on what is still paid. These are only reachable through refund events.
* void and uncollectible are final. A payment for a draft, void or uncollectible invoice is
  recorded and flagged, never applied; a payment beyond the total is applied and flagged as
  an overpayment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Final

from billing_common.money import quantum
from invoice_service.domain.einvoicing import EInvoiceFormat, PostalAddress, check_buyer_reference
from invoice_service.domain.errors import InvalidInvoice, InvalidTransition
from invoice_service.domain.languages import DEFAULT_LANGUAGE, document_language
from invoice_service.domain.sellers import SellerSnapshot


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    ISSUED = "issued"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"
    # Credit notes took back everything before anything was paid: closed, never charged.
    CREDITED = "credited"


S = InvoiceStatus

# Every allowed status change. Anything else raises InvalidTransition.
TRANSITIONS: Final[dict[InvoiceStatus, frozenset[InvoiceStatus]]] = {
    S.DRAFT: frozenset({S.ISSUED, S.VOID}),
    S.ISSUED: frozenset({S.PAID, S.PARTIALLY_PAID, S.VOID, S.UNCOLLECTIBLE, S.CREDITED}),
    S.PARTIALLY_PAID: frozenset({S.PAID, S.UNCOLLECTIBLE, S.VOID, S.ISSUED}),
    S.PAID: frozenset({S.PARTIALLY_PAID, S.ISSUED}),
    S.VOID: frozenset(),
    S.UNCOLLECTIBLE: frozenset(),
    S.CREDITED: frozenset(),
}

# Statuses in which money is owed and payments apply.
PAYABLE: Final = frozenset({S.ISSUED, S.PARTIALLY_PAID})
# Statuses in which a refund changes amount_paid (uncollectible keeps its status).
REFUNDABLE: Final = frozenset({S.ISSUED, S.PARTIALLY_PAID, S.PAID, S.UNCOLLECTIBLE})


class PriceMode(StrEnum):
    EXCLUSIVE = "exclusive"  # unit prices are net; tax is added
    INCLUSIVE = "inclusive"  # unit prices include tax; tax is extracted


class TaxStatus(StrEnum):
    STANDARD = "standard"
    EXEMPT = "exempt"
    REVERSE_CHARGE = "reverse_charge"


class CustomerKind(StrEnum):
    BUSINESS = "business"
    CONSUMER = "consumer"


class PaymentKind(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"
    FAILURE = "failure"


class PaymentFlag(StrEnum):
    """Why a payment event was recorded but not (fully) applied as expected."""

    CURRENCY_MISMATCH = "currency_mismatch"  # not applied
    OVERPAYMENT = "overpayment"  # applied; amount_paid exceeds the total
    NOT_PAYABLE = "not_payable"  # invoice is draft/void/uncollectible: not applied
    REFUND_EXCEEDS_PAID = "refund_exceeds_paid"  # not applied
    NOT_REFUNDABLE = "not_refundable"  # invoice is draft/void: not applied
    # The refund gives back a payment that was never applied (the payment service refunds
    # such payments by itself): amount_paid never counted it, so it does not change.
    REFUND_OF_UNAPPLIED = "refund_of_unapplied_payment"


# Payments recorded but not applied because the invoice could not take them: the money was
# captured, so the payment service is told (billing.invoice.payment_rejected.v1) and refunds it.
REJECTED_PAYMENT_FLAGS: Final = frozenset({PaymentFlag.NOT_PAYABLE, PaymentFlag.CURRENCY_MISMATCH})


def amount_due_of(
    status: InvoiceStatus,
    total: Decimal,
    amount_paid: Decimal,
    amount_credited: Decimal = Decimal(0),
) -> Decimal:
    """What is still owed: total - credited - paid, never negative (an overpayment shows as
    `overpaid`). A void, uncollectible or credited invoice is owed nothing any more."""
    zero = total - total  # zero with the total's exponent: "0.00", not "0"
    if status in (InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE, InvoiceStatus.CREDITED):
        return zero
    return max(total - amount_credited - amount_paid, zero)


@dataclass(frozen=True, slots=True)
class InvoiceSummary:
    """The list view of an invoice: header and totals, no lines or history."""

    id: str
    number: str | None
    series: str
    status: InvoiceStatus
    customer_id: str
    currency: str
    subtotal: Decimal
    discount_total: Decimal
    tax_total: Decimal
    total: Decimal
    amount_paid: Decimal
    created_at: datetime
    issued_at: datetime | None
    due_date: date | None
    amount_credited: Decimal = Decimal(0)

    @property
    def amount_due(self) -> Decimal:
        return amount_due_of(self.status, self.total, self.amount_paid, self.amount_credited)


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    type: str | None
    country: str
    region: str | None
    tax_status: TaxStatus
    tax_id: str | None = None
    name: str | None = None
    email: str | None = None
    address: str | None = None
    # Where the customer is established (may differ from the tax jurisdiction `country` /
    # `region`), business or consumer, and an exemption certificate: sent to the tax service
    # only when given, so requests lawful before sellers existed stay exactly the same.
    location_country: str | None = None
    location_region: str | None = None
    kind: CustomerKind | None = None
    exemption_certificate: str | None = None
    # E-invoices (issue 13): the buyer's structured postal address (BG-8) and the reference
    # the buyer gives (BT-10, for XRechnung the Leitweg-ID). `address` stays the printed text.
    postal_address: PostalAddress | None = None
    buyer_reference: str | None = None

    def __post_init__(self) -> None:
        if self.tax_status is TaxStatus.REVERSE_CHARGE and not self.tax_id:
            raise InvalidInvoice("a reverse-charge customer needs a tax_id")
        object.__setattr__(self, "buyer_reference", check_buyer_reference(self.buyer_reference))


@dataclass(frozen=True, slots=True)
class TaxComponent:
    """One tax on one line, as the tax service computed it."""

    rule_id: str | None
    name: str
    rate: Decimal
    amount: Decimal
    compound: bool = False


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One line. `subtotal` = quantity × unit_price (rounded); `discount` its share of the
    invoice discount; `net` the tax base; `tax`; `total` what the customer pays for it.
    Exclusive prices: net = subtotal − discount, total = net + tax.
    Inclusive prices: total = subtotal − discount, net = total − tax."""

    position: int
    description: str
    quantity: Decimal
    unit_price: Decimal
    category: str
    subtotal: Decimal
    discount: Decimal
    net: Decimal
    tax: Decimal
    total: Decimal
    taxes: tuple[TaxComponent, ...] = ()
    exemption: str | None = None
    # EN 16931: the VAT category code (UNCL5305: S, Z, E, AE, K, G, O), the exemption reason
    # text (BT-120) and code (VATEX, BT-121), as the tax service decided them.
    vat_category: str | None = None
    vat_exemption_reason: str | None = None
    vat_exemption_reason_code: str | None = None


@dataclass(frozen=True, slots=True)
class VatBreakdown:
    """One entry of the tax service's VAT breakdown: per category and rate."""

    vat_category: str
    rate: Decimal
    taxable_amount: Decimal
    tax_amount: Decimal
    exemption_reason: str | None = None
    exemption_reason_code: str | None = None


@dataclass(frozen=True, slots=True)
class AppliedDiscount:
    kind: str
    name: str
    amount: Decimal
    code: str | None = None


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One history entry. from_status == to_status records an event that changed no status
    (a failed payment); from_status is None for the creation entry."""

    from_status: InvoiceStatus | None
    to_status: InvoiceStatus
    at: datetime
    reason: str | None = None
    actor: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """A payment event as received: applied to amount_paid or, with a flag, only recorded."""

    kind: PaymentKind
    payment_id: str
    amount: Decimal
    currency: str
    at: datetime
    applied: bool
    event_id: str | None = None
    refund_id: str | None = None
    flag: PaymentFlag | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Totals:
    subtotal: Decimal
    discount_total: Decimal
    net_total: Decimal
    tax_total: Decimal
    total: Decimal

    @classmethod
    def of_lines(cls, lines: list[InvoiceLine] | tuple[InvoiceLine, ...]) -> Totals:
        def total_of(values: list[Decimal]) -> Decimal:
            return sum(values, Decimal(0))

        return cls(
            subtotal=total_of([line.subtotal for line in lines]),
            discount_total=total_of([line.discount for line in lines]),
            net_total=total_of([line.net for line in lines]),
            tax_total=total_of([line.tax for line in lines]),
            total=total_of([line.total for line in lines]),
        )


@dataclass
class Invoice:
    """The aggregate. Totals are never stored independently of the lines: `totals` derives
    them, so they are reproducible by construction."""

    id: str
    tenant_id: str
    customer: Customer
    currency: str
    price_mode: PriceMode
    series: str
    lines: list[InvoiceLine]
    created_at: datetime
    due_days: int
    discounts: list[AppliedDiscount] = field(default_factory=list)
    status: InvoiceStatus = InvoiceStatus.DRAFT
    number: str | None = None
    sequence: int | None = None
    amount_paid: Decimal = Decimal(0)
    # The totals of its credit notes (domain/credit_notes.py): no longer owed.
    amount_credited: Decimal = Decimal(0)
    tax_calculation_id: str | None = None
    discount_redemption_id: str | None = None
    memo: str | None = None
    issued_at: datetime | None = None
    due_date: date | None = None
    paid_at: datetime | None = None
    voided_at: datetime | None = None
    updated_at: datetime | None = None
    # Bumped on every change: optimistic concurrency guard and the PDF cache's version.
    version: int = 1
    history: list[StatusChange] = field(default_factory=list)
    payments: list[PaymentRecord] = field(default_factory=list)
    # The issuing seller: None for an invoice of a tenant without sellers (printed with the
    # service's configured issuer). `seller` is its snapshot: taken at creation, taken again
    # at finalization and never changed after, so an issued invoice keeps the seller's data
    # as it was when it was issued.
    seller_id: str | None = None
    seller: SellerSnapshot | None = None
    # From the tax answer when it has them: "domestic", "intra_eu_reverse_charge", ...
    tax_treatment: str | None = None
    tax_breakdown: tuple[VatBreakdown, ...] = ()
    # The documents' language (domain/languages.py): the customer's as asked for at creation
    # (`requested_language`, normalised), else the seller's default language, else English.
    # Taken at creation and again at finalization, with the seller snapshot, then kept.
    language: str = DEFAULT_LANGUAGE
    requested_language: str | None = None
    # The e-invoice offered with the issued invoice besides its PDF: the customer's default
    # format when the invoice had what that format needs at finalization, else None.
    einvoice_format: EInvoiceFormat | None = None

    def __post_init__(self) -> None:
        if not self.lines:
            raise InvalidInvoice("an invoice needs at least one line")
        if self.due_days < 0:
            raise InvalidInvoice("due_days cannot be negative")
        discount_sum = sum((d.amount for d in self.discounts), Decimal(0))
        if discount_sum != self.totals.discount_total:
            raise InvalidInvoice(
                f"applied discounts ({discount_sum}) do not match the lines' discounts "
                f"({self.totals.discount_total})"
            )

    # ---- creation ------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        *,
        id: str,
        tenant_id: str,
        customer: Customer,
        currency: str,
        price_mode: PriceMode,
        series: str,
        lines: list[InvoiceLine],
        discounts: list[AppliedDiscount],
        due_days: int,
        at: datetime,
        actor: str | None,
        tax_calculation_id: str | None,
        discount_redemption_id: str | None,
        memo: str | None = None,
        seller: SellerSnapshot | None = None,
        tax_treatment: str | None = None,
        tax_breakdown: tuple[VatBreakdown, ...] = (),
        requested_language: str | None = None,
        seller_language: str | None = None,
    ) -> Invoice:
        invoice = cls(
            id=id,
            tenant_id=tenant_id,
            customer=customer,
            currency=currency,
            price_mode=price_mode,
            series=series,
            lines=lines,
            discounts=discounts,
            due_days=due_days,
            created_at=at,
            updated_at=at,
            tax_calculation_id=tax_calculation_id,
            discount_redemption_id=discount_redemption_id,
            memo=memo,
            amount_paid=Decimal(0).quantize(quantum(currency)),
            amount_credited=Decimal(0).quantize(quantum(currency)),
            seller_id=seller.seller_id if seller else None,
            seller=seller,
            tax_treatment=tax_treatment,
            tax_breakdown=tax_breakdown,
            language=document_language(requested_language, seller_language),
            requested_language=requested_language,
        )
        invoice.history.append(
            StatusChange(None, InvoiceStatus.DRAFT, at, reason="created", actor=actor)
        )
        return invoice

    # ---- derived values ------------------------------------------------------------------

    @property
    def totals(self) -> Totals:
        return Totals.of_lines(self.lines)

    @property
    def total(self) -> Decimal:
        return self.totals.total

    @property
    def amount_due(self) -> Decimal:
        return amount_due_of(self.status, self.total, self.amount_paid, self.amount_credited)

    @property
    def owed(self) -> Decimal:
        """The total less what credit notes took back: what payments settle."""
        return self.total - self.amount_credited

    @property
    def overpaid(self) -> Decimal:
        total = self.total
        return max(self.amount_paid - self.owed, total - total)

    def apply_credit(
        self, *, credit_note: str, amount: Decimal, at: datetime, actor: str | None = None
    ) -> None:
        """A credit note of `amount` was issued: it is owed no more. Credited before anything
        was paid and nothing left: closed as `credited` (it can no longer be charged); paid
        for what is left: settled as `paid`."""
        if amount <= 0 or amount > self.owed:
            raise InvalidInvoice(f"a credit of {amount} does not fit a total of {self.owed}")
        self.amount_credited += amount
        self._touch(at)
        reason = f"credit note {credit_note}"
        if self.status not in PAYABLE or self.amount_paid < self.owed:
            return
        if self.amount_paid == 0:
            self._transition(InvoiceStatus.CREDITED, at, reason=reason, actor=actor)
        else:
            self._settle(at, reason=reason, actor=actor)

    # ---- status machine ------------------------------------------------------------------

    @staticmethod
    def can_transition(current: InvoiceStatus, target: InvoiceStatus) -> bool:
        return target in TRANSITIONS[current]

    def _transition(
        self,
        target: InvoiceStatus,
        at: datetime,
        *,
        reason: str | None = None,
        actor: str | None = None,
        event_id: str | None = None,
    ) -> None:
        if not self.can_transition(self.status, target):
            raise InvalidTransition(self.status.value, target.value)
        self.history.append(StatusChange(self.status, target, at, reason, actor, event_id))
        self.status = target
        self._touch(at)

    def _touch(self, at: datetime) -> None:
        self.updated_at = at
        self.version += 1

    def check_can_finalize(self) -> None:
        """Checked before a number is drawn, so a refused finalization never takes one.
        Only a draft is finalized: the other edges into `issued` are refunds moving back."""
        if self.status is not InvoiceStatus.DRAFT:
            raise InvalidTransition(self.status.value, InvoiceStatus.ISSUED.value)

    def finalize(
        self,
        *,
        number: str,
        sequence: int,
        at: datetime,
        actor: str | None = None,
        seller: SellerSnapshot | None = None,
        seller_language: str | None = None,
    ) -> None:
        """Issue the invoice under its gapless number, with the seller's data as it is now
        (`seller`: the snapshot of its seller; it stays on the invoice for good) and the
        documents' language decided again from the seller's default language as it is now
        (`seller_language`; None keeps the language taken at creation). An invoice
        with nothing to pay is settled at once (issued, then paid), so it never waits for a
        payment that cannot come."""
        self.check_can_finalize()
        if seller is not None:
            if seller.seller_id != self.seller_id:
                raise InvalidInvoice("an invoice is issued by the seller it names")
            self.seller = seller
        if seller_language is not None:
            self.language = document_language(self.requested_language, seller_language)
        self.number = number
        self.sequence = sequence
        self.issued_at = at
        self.due_date = at.date() + timedelta(days=self.due_days)
        self._transition(InvoiceStatus.ISSUED, at, reason="finalized", actor=actor)
        if self.total == 0:
            self._settle(at, reason="nothing to pay", actor=actor)

    def offer_einvoice(self, fmt: EInvoiceFormat | None) -> None:
        """The e-invoice this issued invoice is offered with besides its PDF (chosen in the
        transaction that finalizes it; None: the PDF only)."""
        if self.number is None:
            raise InvalidInvoice("only an issued invoice is offered as an e-invoice")
        self.einvoice_format = fmt

    def void(self, *, at: datetime, reason: str | None = None, actor: str | None = None) -> None:
        if (
            self.status in (InvoiceStatus.ISSUED, InvoiceStatus.PARTIALLY_PAID)
            and self.amount_paid != 0
        ):
            raise InvalidTransition(
                self.status.value,
                InvoiceStatus.VOID.value,
                f"{self.amount_paid} {self.currency} is paid; refund it first",
            )
        self._transition(InvoiceStatus.VOID, at, reason=reason, actor=actor)
        self.voided_at = at

    def mark_uncollectible(
        self, *, at: datetime, reason: str | None = None, actor: str | None = None
    ) -> None:
        self._transition(InvoiceStatus.UNCOLLECTIBLE, at, reason=reason, actor=actor)

    def _settle(
        self, at: datetime, *, reason: str, actor: str | None = None, event_id: str | None = None
    ) -> None:
        self._transition(InvoiceStatus.PAID, at, reason=reason, actor=actor, event_id=event_id)
        self.paid_at = at

    # ---- payments ------------------------------------------------------------------------

    def apply_payment(
        self,
        *,
        payment_id: str,
        amount: Decimal,
        currency: str,
        at: datetime,
        event_id: str | None = None,
    ) -> bool:
        """Apply a received payment. Returns True when this payment made the invoice paid.

        Another currency, or a draft/void/uncollectible invoice: recorded with a flag, not
        applied. More than is due (also any payment on a paid invoice): applied in full, since
        the money was received, and flagged as an overpayment (refundable)."""
        if amount <= 0:
            raise InvalidInvoice("a payment amount must be positive")
        flag: PaymentFlag | None = None
        if currency != self.currency:
            flag = PaymentFlag.CURRENCY_MISMATCH
        elif self.status not in PAYABLE and self.status is not InvoiceStatus.PAID:
            flag = PaymentFlag.NOT_PAYABLE
        if flag is not None:
            self._record(
                PaymentKind.PAYMENT,
                payment_id,
                amount,
                currency,
                at,
                event_id,
                applied=False,
                flag=flag,
            )
            return False
        if amount > self.amount_due:
            flag = PaymentFlag.OVERPAYMENT
        self.amount_paid += amount
        self._record(
            PaymentKind.PAYMENT, payment_id, amount, currency, at, event_id, applied=True, flag=flag
        )
        if self.status is InvoiceStatus.PAID:
            return False  # money received on a paid invoice: kept as an overpayment
        if self.amount_paid >= self.owed:
            self._settle(at, reason=f"payment {payment_id}", event_id=event_id)
            return True
        if self.status is not InvoiceStatus.PARTIALLY_PAID:
            self._transition(
                InvoiceStatus.PARTIALLY_PAID, at, reason=f"payment {payment_id}", event_id=event_id
            )
        return False

    def apply_refund(
        self,
        *,
        payment_id: str,
        refund_id: str,
        amount: Decimal,
        currency: str,
        at: datetime,
        event_id: str | None = None,
    ) -> None:
        """Reduce amount_paid and recompute the status from what is still paid:
        0 -> issued, less than the total -> partially_paid, else paid. An uncollectible
        invoice keeps its status. A refund that cannot apply is recorded and flagged."""
        if amount <= 0:
            raise InvalidInvoice("a refund amount must be positive")
        flag: PaymentFlag | None = None
        if self._only_rejected(payment_id):
            flag = PaymentFlag.REFUND_OF_UNAPPLIED
        elif currency != self.currency:
            flag = PaymentFlag.CURRENCY_MISMATCH
        elif self.status not in REFUNDABLE:
            flag = PaymentFlag.NOT_REFUNDABLE
        elif amount > self.amount_paid:
            flag = PaymentFlag.REFUND_EXCEEDS_PAID
        if flag is not None:
            self._record(
                PaymentKind.REFUND,
                payment_id,
                amount,
                currency,
                at,
                event_id,
                applied=False,
                flag=flag,
                refund_id=refund_id,
            )
            return
        self.amount_paid -= amount
        self._record(
            PaymentKind.REFUND,
            payment_id,
            amount,
            currency,
            at,
            event_id,
            applied=True,
            refund_id=refund_id,
        )
        if self.status is InvoiceStatus.UNCOLLECTIBLE:
            return
        if self.amount_paid >= self.owed:
            # Also a refund credit note giving back what credit notes took off the total.
            target = InvoiceStatus.PAID
        elif self.amount_paid == 0:
            target = InvoiceStatus.ISSUED
        else:
            target = InvoiceStatus.PARTIALLY_PAID
        if target is not self.status:
            self._transition(target, at, reason=f"refund {refund_id}", event_id=event_id)
            if target is not InvoiceStatus.PAID:
                self.paid_at = None

    def _only_rejected(self, payment_id: str) -> bool:
        """The payment arrived and was recorded, but never applied."""
        received = [
            p for p in self.payments if p.kind is PaymentKind.PAYMENT and p.payment_id == payment_id
        ]
        return bool(received) and not any(p.applied for p in received)

    def rejected_payment(self, payment_id: str, event_id: str | None) -> PaymentRecord | None:
        """The record of a received payment this invoice refused to apply (not payable, other
        currency): money that was taken and must go back to the customer."""
        for record in reversed(self.payments):
            if (
                record.kind is PaymentKind.PAYMENT
                and record.payment_id == payment_id
                and record.event_id == event_id
                and not record.applied
                and record.flag in REJECTED_PAYMENT_FLAGS
            ):
                return record
        return None

    def record_payment_failure(
        self,
        *,
        payment_id: str,
        amount: Decimal,
        currency: str,
        failure_code: str,
        failure_message: str | None,
        at: datetime,
        event_id: str | None = None,
    ) -> None:
        """A failed payment changes no amount or status; it is kept in payments and history."""
        detail = f"{failure_code}: {failure_message}" if failure_message else failure_code
        self._record(
            PaymentKind.FAILURE,
            payment_id,
            amount,
            currency,
            at,
            event_id,
            applied=False,
            detail=detail,
        )
        self.history.append(
            StatusChange(
                self.status,
                self.status,
                at,
                f"payment {payment_id} failed: {detail}",
                None,
                event_id,
            )
        )

    def _record(
        self,
        kind: PaymentKind,
        payment_id: str,
        amount: Decimal,
        currency: str,
        at: datetime,
        event_id: str | None,
        *,
        applied: bool,
        flag: PaymentFlag | None = None,
        refund_id: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.payments.append(
            PaymentRecord(
                kind, payment_id, amount, currency, at, applied, event_id, refund_id, flag, detail
            )
        )
        self._touch(at)
