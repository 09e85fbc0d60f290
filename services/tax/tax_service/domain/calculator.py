"""The tax calculation: which rules apply to a line, and how much each one charges.

Rounding (ROUND_HALF_UP to the currency's minor unit) happens per line:
- the line amount (unit_price x quantity) is rounded once;
- exclusive prices: each tax is its base x rate, rounded on its own; a compound tax's base
  is the net plus the (rounded) taxes ordered before it; gross = net + taxes;
- inclusive prices: the net is backed out of the gross with the combined factor of every
  tax and rounded; the tax is gross - net exactly, split over the rules in proportion to
  their exact shares (largest remainder), so net + tax == gross to the minor unit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, localcontext

from billing_common.money import Money, quantum
from tax_service.domain import vat_treatment
from tax_service.domain.errors import UnknownCategory, UnknownJurisdiction
from tax_service.domain.model import (
    AppliedTax,
    CalculationRequest,
    Exemption,
    LineInput,
    LineResult,
    LineVat,
    PriceMode,
    Supply,
    TaxRule,
    VatIdCheck,
)

# Inputs have bounded digits (see model), so every product below is exact at this precision
# and a division is off by far less than could move a rounding at the minor unit.
_PRECISION = 50


def applicable_rules(
    request: CalculationRequest, rules: Iterable[TaxRule]
) -> dict[str, list[TaxRule]]:
    """The rules of the request's jurisdiction valid on its date, by category, each list in
    application order. Raises UnknownJurisdiction / UnknownCategory rather than let a line
    go untaxed for want of a rule."""
    by_category: dict[str, list[TaxRule]] = defaultdict(list)
    for rule in rules:
        if rule.applies(request.jurisdiction, request.date):
            by_category[rule.category].append(rule)
    if not by_category:
        raise UnknownJurisdiction(str(request.jurisdiction), request.date)
    for line in request.lines:
        if line.category not in by_category:
            raise UnknownCategory(line.category, str(request.jurisdiction), request.date, line.id)
    return {
        category: sorted(found, key=TaxRule.order_key) for category, found in by_category.items()
    }


def supply_of(rules: Sequence[TaxRule]) -> Supply:
    """A category is goods when any of its applicable rules says so (they should agree)."""
    return Supply.GOODS if any(rule.supply is Supply.GOODS for rule in rules) else Supply.SERVICES


def calculate(
    request: CalculationRequest,
    rules: Iterable[TaxRule],
    vat_id_check: VatIdCheck | None = None,
) -> tuple[LineResult, ...]:
    """Tax every line of `request` with `rules` (any superset of the relevant ones), with
    the VAT treatment vat_treatment decides (`vat_id_check`: the VIES answer, if asked)."""
    by_category = applicable_rules(request, rules)
    decision = vat_treatment.decide(request, vat_id_check)
    # Once per category, not per line: the relief depends on the category's supply kind only.
    reliefs = {
        category: decision.for_supply(supply_of(found)) for category, found in by_category.items()
    }
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        return tuple(
            _line(line, by_category[line.category], request.price_mode, reliefs[line.category])
            for line in request.lines
        )


def _line(
    line: LineInput,
    rules: Sequence[TaxRule],
    mode: PriceMode,
    relief: LineVat | None,
) -> LineResult:
    currency = line.unit_price.currency
    amount = (line.unit_price * line.quantity).rounded(ROUND_HALF_UP)
    if relief is not None:
        # Exempt, reverse-charged, exported or out of scope: nothing is charged and no rule
        # is named, whichever price mode (an inclusive price then simply is the net).
        return LineResult(
            line=line,
            net=amount,
            tax=Money.zero(currency).rounded(),
            gross=amount,
            exemption=vat_treatment.EXEMPTION_OF[relief.category],
            taxes=(),
            vat=relief,
        )
    if mode is PriceMode.EXCLUSIVE:
        amounts = exclusive_taxes(amount, rules)
        net = amount
    else:
        net, amounts = inclusive_taxes(amount, rules)
    taxes = tuple(
        AppliedTax(
            rule_id=rule.id,
            name=rule.name,
            rate=rule.rate,
            amount=tax,
            compound=rule.compound,
            zero_rated=rule.zero_rated,
        )
        for rule, tax in zip(rules, amounts, strict=True)
    )
    tax_total = sum(amounts, Money.zero(currency).rounded())
    zero_rated = all(rule.zero_rated for rule in rules)
    return LineResult(
        line=line,
        net=net,
        tax=tax_total,
        gross=net + tax_total,
        exemption=Exemption.ZERO_RATED if zero_rated else None,
        taxes=taxes,
        vat=vat_treatment.taxed(all_zero_rated=zero_rated),
    )


def exclusive_taxes(net: Money, rules: Sequence[TaxRule]) -> list[Money]:
    """Each rule's tax on a rounded net, in order; compound rules include earlier taxes."""
    taxes: list[Money] = []
    charged = Money.zero(net.currency)
    for rule in rules:
        base = net + charged if rule.compound else net
        tax = (base * rule.rate).rounded(ROUND_HALF_UP)
        taxes.append(tax)
        charged = charged + tax
    return taxes


def inclusive_taxes(gross: Money, rules: Sequence[TaxRule]) -> tuple[Money, list[Money]]:
    """Back the net and each rule's tax out of a rounded gross, so net + taxes == gross."""
    # Each rule's tax as a multiple of the net: a compound rule's rate also applies to the
    # multiples of the rules before it.
    factors: list[Decimal] = []
    cumulative = Decimal(0)
    for rule in rules:
        factor = rule.rate * (1 + cumulative) if rule.compound else rule.rate
        factors.append(factor)
        cumulative += factor
    divisor = 1 + cumulative
    net = Money(gross.amount / divisor, gross.currency).rounded(ROUND_HALF_UP)
    total_tax = gross - net
    exact_shares = [gross.amount * factor / divisor for factor in factors]
    return net, _split(total_tax, exact_shares)


def _split(total: Money, exact_shares: Sequence[Decimal]) -> list[Money]:
    """Split a rounded total over exact shares (largest remainder method).

    Every share is rounded down, then the minor units left over go one each to the shares
    with the largest remainders (earlier rules first on a tie). The leftover never exceeds
    the number of shares with a remainder, so no share gets a unit it has no claim to, and
    a zero-rated rule (share 0) always gets exactly 0."""
    step = quantum(total.currency)
    floors = [share.quantize(step, rounding=ROUND_DOWN) for share in exact_shares]
    leftover = int((total.amount - sum(floors, Decimal(0))) / step)
    by_remainder = sorted(
        range(len(floors)), key=lambda i: (exact_shares[i] - floors[i], -i), reverse=True
    )
    for index in by_remainder[: max(leftover, 0)]:
        floors[index] += step
    return [Money(amount, total.currency) for amount in floors]
