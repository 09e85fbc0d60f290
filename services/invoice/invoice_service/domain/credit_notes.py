"""Credit notes: the only correction of a finalized invoice (which is immutable).

A credit note credits part or all of an invoice, by line (whole line), quantity or amount,
with a reason. Its tax is recomputed on the credited part with the rates the invoice's lines
stored when it was issued (never today's rules: the tax service is not asked), rounded once
per VAT breakdown of the credit note as the tax service rounds an invoice (issue 13). It never
exceeds what was invoiced, per line and in total, net and tax: `remaining` is what earlier
credit notes left, and a credit that takes the last of a line takes exactly its remaining
net and tax, so crediting an invoice in full gives back its total to the cent.

Lifecycle:

    issued ──> applied    (settlement "apply": reduces what the invoice still owes)
       │──> refunded      (settlement "refund": the payment service refunds captured money)
       └──> credited      (settlement "customer_balance": credited to the customer's balance)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Final

from billing_common.money import Money, quantum
from invoice_service.domain.errors import (
    CreditExceedsInvoiced,
    InvalidInvoice,
    InvoiceNotCreditable,
)
from invoice_service.domain.model import Invoice, InvoiceLine, InvoiceStatus, TaxComponent

DEFAULT_CREDIT_NOTE_SERIES: Final = "CN"
# A draft can still be changed and a void invoice owes nothing: neither is credited.
CREDITABLE: Final = frozenset(
    {
        InvoiceStatus.ISSUED,
        InvoiceStatus.PARTIALLY_PAID,
        InvoiceStatus.PAID,
        InvoiceStatus.CREDITED,
    }
)


class CreditNoteStatus(StrEnum):
    ISSUED = "issued"
    APPLIED = "applied"
    REFUNDED = "refunded"
    CREDITED = "credited"


class Settlement(StrEnum):
    APPLY = "apply"
    REFUND = "refund"
    CUSTOMER_BALANCE = "customer_balance"


@dataclass(frozen=True, slots=True)
class CreditRequestLine:
    """What to credit of one invoice line: all of it (neither given), a quantity, or a gross
    amount (what the customer gets back for it, tax included)."""

    position: int
    quantity: Decimal | None = None
    amount: Decimal | None = None

    def __post_init__(self) -> None:
        if self.quantity is not None and self.amount is not None:
            raise InvalidInvoice(f"line {self.position}: credit a quantity or an amount, not both")
        for value in (self.quantity, self.amount):
            if value is not None and value <= 0:
                raise InvalidInvoice(f"line {self.position}: a credit must be positive")


@dataclass(frozen=True, slots=True)
class CreditNoteLine:
    position: int  # the invoice line's position
    description: str
    quantity: Decimal | None
    net: Decimal
    tax: Decimal
    total: Decimal
    taxes: tuple[TaxComponent, ...] = ()
    vat_category: str | None = None


@dataclass(frozen=True, slots=True)
class LineBalance:
    """What of one invoice line has not been credited yet."""

    net: Decimal
    taxes: tuple[Decimal, ...]

    @property
    def tax(self) -> Decimal:
        return sum(self.taxes, Decimal(0))


@dataclass
class CreditNote:
    id: str
    tenant_id: str
    invoice_id: str
    invoice_number: str
    customer_id: str
    currency: str
    settlement: Settlement
    reason: str
    lines: list[CreditNoteLine]
    created_at: datetime
    series: str
    sequence: int
    number: str
    seller_id: str | None = None
    status: CreditNoteStatus = CreditNoteStatus.ISSUED
    settled_at: datetime | None = None
    # Refunds the payment service made for it (refund id -> amount).
    refunds: dict[str, Decimal] = field(default_factory=dict)

    @property
    def net_total(self) -> Decimal:
        return sum((line.net for line in self.lines), Decimal(0))

    @property
    def tax_total(self) -> Decimal:
        return sum((line.tax for line in self.lines), Decimal(0))

    @property
    def total(self) -> Decimal:
        return sum((line.total for line in self.lines), Decimal(0))

    @property
    def amount_refunded(self) -> Decimal:
        return sum(self.refunds.values(), Decimal(0).quantize(quantum(self.currency)))

    def settle(self, at: datetime) -> None:
        """Applied or credited to the balance, in the transaction that issues it."""
        if self.settlement is Settlement.REFUND:
            raise InvalidInvoice("a refund credit note is settled by its refunds")
        self.status = (
            CreditNoteStatus.APPLIED
            if self.settlement is Settlement.APPLY
            else CreditNoteStatus.CREDITED
        )
        self.settled_at = at

    def record_refund(self, refund_id: str, amount: Decimal, at: datetime) -> bool:
        """A refund the payment service made for this credit note; True when it completed
        the credit note (refunded in full)."""
        if refund_id in self.refunds or self.status is CreditNoteStatus.REFUNDED:
            return False
        self.refunds[refund_id] = amount
        if self.amount_refunded >= self.total:
            self.status = CreditNoteStatus.REFUNDED
            self.settled_at = at
            return True
        return False


def remaining_balances(invoice: Invoice, earlier: Iterable[CreditNote]) -> dict[int, LineBalance]:
    """Each invoice line's net and per-component tax not yet credited."""
    balances = {
        line.position: [line.net, [component.amount for component in line.taxes]]
        for line in invoice.lines
    }
    for note in earlier:
        for credited in note.lines:
            net_taxes = balances[credited.position]
            net_taxes[0] -= credited.net  # type: ignore[operator]
            taxes: list[Decimal] = net_taxes[1]  # type: ignore[assignment]
            for index, component in enumerate(credited.taxes):
                taxes[index] -= component.amount
    return {
        position: LineBalance(net, tuple(taxes))  # type: ignore[arg-type]
        for position, (net, taxes) in balances.items()
    }


def _round(value: Decimal, currency: str) -> Decimal:
    return value.quantize(quantum(currency), rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class _Credited:
    """One requested line's credited net, before its tax."""

    line: InvoiceLine
    request: CreditRequestLine
    remaining: LineBalance
    net: Decimal
    quantity: Decimal | None

    @property
    def closes_line(self) -> bool:
        return self.net == self.remaining.net


def _allocate(total: Decimal, exact: Sequence[Decimal], currency: str) -> list[Decimal]:
    """`total` over exact shares, as the tax service allocates (Money.split_exact)."""
    return [part.amount for part in Money(total, currency).split_exact(exact)]


def _taxes_at_original_rates(
    credited: Sequence[_Credited], currency: str
) -> list[tuple[TaxComponent, ...]]:
    """Each credited line's stored tax components on its credited net, rounded the way the
    tax service rounds an invoice: once per VAT breakdown (the lines of this credit note
    with the same VAT category, rates and compound flags), each component round(Σ net x
    rate) (a compound one on Σ net + the group's taxes before it), allocated back to the
    lines by largest remainder and capped at what is left of each line. A line whose last
    net is credited takes the last of its taxes, so the sums reconcile to the cent."""
    result: list[tuple[TaxComponent, ...] | None] = [None] * len(credited)
    groups: dict[tuple[object, ...], list[int]] = {}
    for index, item in enumerate(credited):
        if item.closes_line:
            result[index] = _components(item.line, item.remaining.taxes)
            continue
        key = (item.line.vat_category, tuple((t.rate, t.compound) for t in item.line.taxes))
        groups.setdefault(key, []).append(index)
    for members in groups.values():
        items = [credited[i] for i in members]
        total_net = sum((item.net for item in items), Decimal(0))
        amounts: list[list[Decimal]] = [[] for _ in items]
        charged = Decimal(0)
        for position, component in enumerate(items[0].line.taxes):
            base = total_net + charged if component.compound else total_net
            exact = base * component.rate
            if not component.compound:
                shares = [item.net * component.rate for item in items]
            elif total_net:
                shares = [exact * item.net / total_net for item in items]
            else:
                shares = [Decimal(0) for _ in items]
            group_tax = _round(exact, currency)
            for row, item, amount in zip(
                amounts, items, _allocate(group_tax, shares, currency), strict=True
            ):
                row.append(min(amount, item.remaining.taxes[position]))
            charged += group_tax
        for index, item, row in zip(members, items, amounts, strict=True):
            result[index] = _components(item.line, row)
    return [components for components in result if components is not None]


def _components(line: InvoiceLine, amounts: Sequence[Decimal]) -> tuple[TaxComponent, ...]:
    return tuple(
        TaxComponent(original.rule_id, original.name, original.rate, amount, original.compound)
        for original, amount in zip(line.taxes, amounts, strict=True)
    )


def _credited_net(
    line: InvoiceLine, request: CreditRequestLine, remaining: LineBalance, currency: str
) -> _Credited:
    """The credited net of one line. Raises CreditExceedsInvoiced past what is left."""
    if request.quantity is None and request.amount is None:
        net = remaining.net  # the whole line (what is left of it)
        quantity: Decimal | None = None
    elif request.quantity is not None:
        if request.quantity > line.quantity:
            raise CreditExceedsInvoiced(
                f"line {line.position}: {request.quantity} credited, {line.quantity} invoiced",
                position=line.position,
            )
        quantity = request.quantity
        net = (
            line.net
            if quantity == line.quantity
            else _round(line.net * quantity / line.quantity, currency)
        )
    else:
        assert request.amount is not None
        quantity = None
        # The gross amount split into net and tax as the line was: at its own net/total ratio.
        net = _round(request.amount * line.net / line.total, currency) if line.total else Decimal(0)
    if net > remaining.net or net < 0:
        raise CreditExceedsInvoiced(
            f"line {line.position}: {net} {currency} net to credit, {remaining.net} left",
            position=line.position,
            remaining_net=str(remaining.net),
        )
    return _Credited(line, request, remaining, net, quantity)


def _credit_line(
    credited: _Credited, taxes: tuple[TaxComponent, ...], currency: str
) -> CreditNoteLine:
    line, request, remaining, net = (
        credited.line,
        credited.request,
        credited.remaining,
        credited.net,
    )
    tax = sum((component.amount for component in taxes), Decimal(0).quantize(quantum(currency)))
    if request.amount is not None and net + tax != request.amount:
        # Rounding the split may miss the requested gross by a cent: the net takes it.
        net = request.amount - tax
        if net > remaining.net or net < 0:
            raise CreditExceedsInvoiced(
                f"line {line.position}: {request.amount} {currency} is more than is left",
                position=line.position,
            )
    if net + tax == 0:
        raise CreditExceedsInvoiced(
            f"line {line.position}: nothing is left to credit", position=line.position
        )
    return CreditNoteLine(
        position=line.position,
        description=line.description,
        quantity=credited.quantity,
        net=net,
        tax=tax,
        total=net + tax,
        taxes=taxes,
        vat_category=line.vat_category,
    )


def check_creditable(invoice: Invoice) -> None:
    if invoice.status not in CREDITABLE:
        raise InvoiceNotCreditable(invoice.id, invoice.status.value)


def credit_lines(
    invoice: Invoice, requested: Sequence[CreditRequestLine], earlier: Iterable[CreditNote]
) -> list[CreditNoteLine]:
    """The lines of a new credit note: `requested` (empty: everything still creditable)."""
    check_creditable(invoice)
    remaining = remaining_balances(invoice, earlier)
    by_position = {line.position: line for line in invoice.lines}
    if not requested:
        requested = [
            CreditRequestLine(position)
            for position, left in remaining.items()
            if left.net + left.tax > 0
        ]
        if not requested:
            raise CreditExceedsInvoiced(f"invoice {invoice.id} is credited in full already")
    seen: set[int] = set()
    credited: list[_Credited] = []
    for request in requested:
        if request.position in seen:
            raise InvalidInvoice(f"line {request.position} is named twice")
        seen.add(request.position)
        line = by_position.get(request.position)
        if line is None:
            raise InvalidInvoice(f"invoice {invoice.id} has no line {request.position}")
        credited.append(_credited_net(line, request, remaining[request.position], invoice.currency))
    taxes = _taxes_at_original_rates(credited, invoice.currency)
    return [
        _credit_line(item, components, invoice.currency)
        for item, components in zip(credited, taxes, strict=True)
    ]


def check_settlement(
    invoice: Invoice, settlement: Settlement, total: Decimal, earlier: Iterable[CreditNote]
) -> None:
    """`apply` cannot reduce below nothing owed; `refund` cannot give back more than is paid
    and not yet promised to earlier refund credit notes."""
    if settlement is Settlement.APPLY and total > invoice.amount_due:
        raise CreditExceedsInvoiced(
            f"{total} {invoice.currency} cannot be applied: {invoice.amount_due} is owed; "
            "refund it or credit it to the customer's balance",
            amount_due=str(invoice.amount_due),
        )
    promised = sum(
        (
            note.total - note.amount_refunded
            for note in earlier
            if note.settlement is Settlement.REFUND and note.status is CreditNoteStatus.ISSUED
        ),
        Decimal(0),
    )
    refundable = invoice.amount_paid - promised
    if settlement is Settlement.REFUND and total > refundable:
        raise CreditExceedsInvoiced(
            f"{total} {invoice.currency} cannot be refunded: {refundable} is paid and not "
            "yet being refunded",
            refundable=str(refundable),
        )
