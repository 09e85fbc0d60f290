"""Pricing an invoice: line subtotals, the discount spread over the lines, and the lines
assembled from the tax service's answer. Discount comes before tax: the tax base of each
line is its subtotal minus its share of the discount."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from billing_common.money import Money, quantum
from invoice_service.domain.errors import InvalidInvoice, PeerContractViolation
from invoice_service.domain.model import (
    AppliedDiscount,
    InvoiceLine,
    PriceMode,
    TaxComponent,
    VatBreakdown,
)

MAX_QUANTITY_PLACES = 6
MAX_UNIT_PRICE_PLACES = 6


@dataclass(frozen=True, slots=True)
class LineDraft:
    """A line as the client sent it, before discount and tax."""

    description: str
    quantity: Decimal
    unit_price: Decimal
    category: str

    def __post_init__(self) -> None:
        if not self.description.strip():
            raise InvalidInvoice("a line needs a description")
        if not self.quantity.is_finite() or self.quantity <= 0:
            raise InvalidInvoice(f"quantity must be positive, got {self.quantity}")
        if not self.unit_price.is_finite() or self.unit_price < 0:
            raise InvalidInvoice(f"unit_price cannot be negative, got {self.unit_price}")
        if _places(self.quantity) > MAX_QUANTITY_PLACES:
            raise InvalidInvoice(f"quantity allows at most {MAX_QUANTITY_PLACES} decimal places")
        if _places(self.unit_price) > MAX_UNIT_PRICE_PLACES:
            raise InvalidInvoice(
                f"unit_price allows at most {MAX_UNIT_PRICE_PLACES} decimal places"
            )

    def subtotal(self, currency: str) -> Decimal:
        """quantity × unit_price, rounded half-up to the currency's minor unit (unit prices
        may carry sub-cent precision, e.g. metered usage)."""
        return Money.of(self.quantity * self.unit_price, currency).rounded(ROUND_HALF_UP).amount


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


@dataclass(frozen=True, slots=True)
class DiscountResult:
    """The discount service's answer (quote or redemption)."""

    total_discount: Decimal
    applied: tuple[AppliedDiscount, ...]
    rejected: tuple[tuple[str, str], ...] = ()
    redemption_id: str | None = None


@dataclass(frozen=True, slots=True)
class TaxLineResult:
    id: str
    net: Decimal
    tax: Decimal
    gross: Decimal
    taxes: tuple[TaxComponent, ...]
    exemption: str | None = None
    vat_category: str | None = None
    vat_exemption_reason: str | None = None
    vat_exemption_reason_code: str | None = None


@dataclass(frozen=True, slots=True)
class TaxResult:
    calculation_id: str
    lines: tuple[TaxLineResult, ...]
    treatment: str | None = None
    breakdown: tuple[VatBreakdown, ...] = ()


def check_breakdown(tax: TaxResult) -> None:
    """A breakdown, when the tax service gives one, accounts for exactly the lines' tax."""
    if not tax.breakdown:
        return
    in_breakdown = sum((entry.tax_amount for entry in tax.breakdown), Decimal(0))
    on_lines = sum((line.tax for line in tax.lines), Decimal(0))
    if in_breakdown != on_lines:
        raise PeerContractViolation(
            f"the tax breakdown adds up to {in_breakdown}, the lines' tax to {on_lines}"
        )


def line_id(position: int) -> str:
    """The id a line carries in the tax request: its 1-based position."""
    return str(position)


def allocate_discount(subtotals: list[Decimal], discount: Decimal, currency: str) -> list[Decimal]:
    """Spread `discount` over the lines in proportion to their subtotals, in exact minor
    units (largest remainder), so the shares add up to the discount to the cent and no line
    gets more than its own subtotal."""
    step = quantum(currency)
    whole = sum(subtotals, Decimal(0))
    if discount < 0 or discount > whole:
        raise InvalidInvoice(f"a discount of {discount} cannot apply to an amount of {whole}")
    if discount % step != 0:
        raise InvalidInvoice(f"discount {discount} is not in whole minor units of {currency}")
    if discount == 0:
        return [Decimal(0).quantize(step) for _ in subtotals]
    shares = Money.of(discount, currency).allocate(subtotals)
    return [share.amount for share in shares]


def build_lines(
    drafts: list[LineDraft],
    discount_shares: list[Decimal],
    tax: TaxResult,
    *,
    currency: str,
    price_mode: PriceMode,
) -> list[InvoiceLine]:
    """Assemble invoice lines from the drafts, their discount shares and the tax answer,
    which was computed on (subtotal − share) per line. Refuses an answer that is not about
    the amounts we sent, so the invoice's totals always add up."""
    check_breakdown(tax)
    if len(drafts) != len(discount_shares):
        raise ValueError("one discount share per line is required")
    by_id = {line.id: line for line in tax.lines}
    if len(by_id) != len(tax.lines) or len(by_id) != len(drafts):
        raise PeerContractViolation(
            f"the tax calculation has {len(tax.lines)} lines for {len(drafts)} invoice lines"
        )
    step = quantum(currency)
    lines: list[InvoiceLine] = []
    for position, (draft, share) in enumerate(zip(drafts, discount_shares, strict=True), 1):
        answer = by_id.get(line_id(position))
        if answer is None:
            raise PeerContractViolation(f"the tax calculation has no line {position}")
        for name, amount in (("net", answer.net), ("tax", answer.tax), ("gross", answer.gross)):
            if amount < 0 or amount % step != 0:
                raise PeerContractViolation(
                    f"tax line {position}: {name} {amount} is not a rounded {currency} amount"
                )
        if answer.net + answer.tax != answer.gross:
            raise PeerContractViolation(f"tax line {position}: net + tax != gross")
        subtotal = draft.subtotal(currency)
        taxable = subtotal - share
        if price_mode is PriceMode.EXCLUSIVE:
            if answer.net != taxable:
                raise PeerContractViolation(
                    f"tax line {position} was computed on {answer.net}, not {taxable}"
                )
            net, total = taxable, taxable + answer.tax
        else:
            if answer.gross != taxable:
                raise PeerContractViolation(
                    f"tax line {position} was computed on {answer.gross}, not {taxable}"
                )
            net, total = taxable - answer.tax, taxable
        lines.append(
            InvoiceLine(
                position=position,
                description=draft.description,
                quantity=draft.quantity,
                unit_price=draft.unit_price,
                category=draft.category,
                subtotal=subtotal,
                discount=share,
                net=net,
                tax=answer.tax,
                total=total,
                taxes=answer.taxes,
                exemption=answer.exemption,
                vat_category=answer.vat_category,
                vat_exemption_reason=answer.vat_exemption_reason,
                vat_exemption_reason_code=answer.vat_exemption_reason_code,
            )
        )
    return lines


def check_discount(result: DiscountResult, amount: Decimal, currency: str) -> None:
    """The discount service's answer must be a rounded amount within [0, amount] and the sum
    of its applied parts."""
    step = quantum(currency)
    total = result.total_discount
    if total < 0 or total > amount or total % step != 0:
        raise PeerContractViolation(f"discount {total} is not valid for an amount of {amount}")
    parts = sum((a.amount for a in result.applied), Decimal(0))
    if parts != total:
        raise PeerContractViolation(
            f"applied discounts add up to {parts}, not to the total discount {total}"
        )
