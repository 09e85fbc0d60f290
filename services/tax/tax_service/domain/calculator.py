"""The tax calculation: which rules apply to a line, and how much each one charges.

Every amount is rounded ROUND_HALF_UP to the currency's minor unit. The line amount
(unit_price x quantity) is rounded once per line; it is the net (exclusive prices) or the
gross (inclusive prices). Where the taxes are rounded is the request's `rounding`:

per_breakdown (the default; EN 16931 BT-117 = BT-116 x rate, rule BR-CO-17): the taxed
lines are grouped by their tax structure (the rates in application order and which are
compound -- so by VAT category and rate; a calculation has one jurisdiction), and each
group's tax is rounded once, on the group's summed amounts:
- exclusive prices: each tax is round(base x rate) on the group's summed net (a compound
  tax's base also holds the group's rounded taxes before it); it is allocated back to the
  lines by largest remainder of their exact shares, so the lines add up to the group's
  figure exactly and each line is within one minor unit of its own exact tax;
- inclusive prices: the group's tax is round(G - G / (1 + f)) on its summed gross G (f: the
  combined multiple of the net of every tax, see _factors), its net G - tax; the tax is
  allocated to the lines by largest remainder of their exact taxes, each line's net is its
  gross minus its tax, and a line with several taxes splits its tax over them as below.
Ties between equal remainders go to the earlier line (request order).

per_line (the rounding before issue 13, kept as an explicit option):
- exclusive prices: each tax is its base x rate, rounded on its own; a compound tax's base
  is the net plus the (rounded) taxes ordered before it; gross = net + taxes;
- inclusive prices: the net is backed out of the gross with the combined factor of every
  tax and rounded; the tax is gross - net exactly, split over the rules in proportion to
  their exact shares (largest remainder), so net + tax == gross to the minor unit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal, localcontext

from billing_common.money import Money
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
    TaxRounding,
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
    # Once per category of the lines (not per line, nor for the jurisdiction's others): the
    # relief depends on the category's supply kind only.
    reliefs: dict[str, LineVat | None] = {}
    for line in request.lines:
        if line.category not in reliefs:
            reliefs[line.category] = decision.for_supply(supply_of(by_category[line.category]))
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        results: dict[int, LineResult] = {}
        groups: dict[tuple[tuple[Decimal, bool], ...], list[int]] = {}
        for index, line in enumerate(request.lines):
            found = by_category[line.category]
            relief = reliefs[line.category]
            if relief is not None:
                results[index] = _relieved(line, relief)
            elif request.rounding is TaxRounding.PER_LINE:
                results[index] = _line(line, found, request.price_mode)
            else:
                groups.setdefault(breakdown_key(found), []).append(index)
        for members in groups.values():
            taxed = _group(
                [request.lines[i] for i in members],
                [by_category[request.lines[i].category] for i in members],
                request.price_mode,
            )
            results.update(zip(members, taxed, strict=True))
        return tuple(results[index] for index in range(len(request.lines)))


def breakdown_key(rules: Sequence[TaxRule]) -> tuple[tuple[Decimal, bool], ...]:
    """A taxed line's rounding group: its taxes' rates in application order and which of
    them are compound. Equal keys mean the same VAT category (S, or Z when every rate is 0)
    and the same rate; a calculation has one jurisdiction, so lines of different product
    categories at the same rates (DE standard and digital, 19 %) are one VAT breakdown."""
    # A compound flag on the first tax changes nothing (there is nothing before it).
    return tuple((rule.rate, rule.compound and index > 0) for index, rule in enumerate(rules))


def _amount(line: LineInput) -> Money:
    return (line.unit_price * line.quantity).rounded(ROUND_HALF_UP)


def _relieved(line: LineInput, relief: LineVat) -> LineResult:
    # Exempt, reverse-charged, exported or out of scope: nothing is charged and no rule
    # is named, whichever price mode (an inclusive price then simply is the net).
    amount = _amount(line)
    return LineResult(
        line=line,
        net=amount,
        tax=Money.zero(amount.currency).rounded(),
        gross=amount,
        exemption=vat_treatment.EXEMPTION_OF[relief.category],
        taxes=(),
        vat=relief,
    )


def _line(line: LineInput, rules: Sequence[TaxRule], mode: PriceMode) -> LineResult:
    """One line rounded on its own (per_line)."""
    amount = _amount(line)
    if mode is PriceMode.EXCLUSIVE:
        return _taxed(line, rules, amount, exclusive_taxes(amount, rules))
    net, amounts = inclusive_taxes(amount, rules)
    return _taxed(line, rules, net, amounts)


def _group(
    lines: Sequence[LineInput], rules: Sequence[Sequence[TaxRule]], mode: PriceMode
) -> list[LineResult]:
    """The lines of one rounding group (per_breakdown), in request order."""
    amounts = [_amount(line) for line in lines]
    # Every line of a group has the same rates and compound flags (its key), so the first
    # line's rules stand for the group's; each line still names its own rules.
    if mode is PriceMode.EXCLUSIVE:
        nets, taxes = amounts, exclusive_group_taxes(amounts, rules[0])
    else:
        nets, taxes = inclusive_group_taxes(amounts, rules[0])
    return [
        _taxed(line, found, net, line_taxes)
        for line, found, net, line_taxes in zip(lines, rules, nets, taxes, strict=True)
    ]


def _taxed(
    line: LineInput, rules: Sequence[TaxRule], net: Money, amounts: Sequence[Money]
) -> LineResult:
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
    # Summed as Decimals: the amounts are rounded to the minor unit and share the net's
    # sign, so the total has the same value and exponent as their Money sum from a rounded
    # zero (a category always has a rule, so `amounts` is never empty).
    tax_total = Money(sum((tax.amount for tax in amounts), Decimal(0)), net.currency)
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


def exclusive_group_taxes(nets: Sequence[Money], rules: Sequence[TaxRule]) -> list[list[Money]]:
    """Each rule's tax rounded once on the group's summed net (a compound rule on the net
    plus the group's rounded taxes before it), allocated back to the lines: per line, its
    taxes in rule order; each rule's taxes over the lines add up to the group's tax."""
    currency = nets[0].currency
    total_net = sum((net.amount for net in nets), Decimal(0))
    columns: list[list[Money]] = []
    charged = Decimal(0)
    for rule in rules:
        base = total_net + charged if rule.compound else total_net
        exact = base * rule.rate
        tax = Money(exact, currency).rounded(ROUND_HALF_UP)
        charged += tax.amount
        if len(nets) == 1:
            # A group of one line: its one share is the group's exact tax (the same
            # product, or exact * net / net), so the split would give it `tax` itself.
            columns.append([tax])
            continue
        if not rule.compound:
            shares = [net.amount * rule.rate for net in nets]
        elif total_net:
            shares = [exact * net.amount / total_net for net in nets]
        else:
            shares = [Decimal(0) for _ in nets]
        columns.append(_split(tax, shares))
    return [list(row) for row in zip(*columns, strict=True)]


def inclusive_group_taxes(
    grosses: Sequence[Money], rules: Sequence[TaxRule]
) -> tuple[list[Money], list[list[Money]]]:
    """The group's tax rounded once on its summed gross and allocated back to the lines;
    each line's net is its gross minus its tax (never negative: a line gets at most its
    exact tax rounded up, and that is below its gross), and its tax is split over its
    rules. Returns the nets and, per line, its taxes in rule order."""
    currency = grosses[0].currency
    factors = _factors(rules)
    cumulative = sum(factors, Decimal(0))
    divisor = 1 + cumulative
    total_gross = sum((gross.amount for gross in grosses), Decimal(0))
    total_tax = Money(total_gross * cumulative / divisor, currency).rounded(ROUND_HALF_UP)
    line_taxes = _split(total_tax, [gross.amount * cumulative / divisor for gross in grosses])
    nets = [gross - tax for gross, tax in zip(grosses, line_taxes, strict=True)]
    split = [
        _split(tax, [gross.amount * factor / divisor for factor in factors])
        for gross, tax in zip(grosses, line_taxes, strict=True)
    ]
    return nets, split


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
    factors = _factors(rules)
    divisor = 1 + sum(factors, Decimal(0))
    net = Money(gross.amount / divisor, gross.currency).rounded(ROUND_HALF_UP)
    total_tax = gross - net
    exact_shares = [gross.amount * factor / divisor for factor in factors]
    return net, _split(total_tax, exact_shares)


def _factors(rules: Sequence[TaxRule]) -> list[Decimal]:
    """Each rule's tax as a multiple of the net: a compound rule's rate also applies to the
    multiples of the rules before it."""
    factors: list[Decimal] = []
    cumulative = Decimal(0)
    for rule in rules:
        factor = rule.rate * (1 + cumulative) if rule.compound else rule.rate
        factors.append(factor)
        cumulative += factor
    return factors


def _split(total: Money, exact_shares: Sequence[Decimal]) -> list[Money]:
    """A rounded total back over the exact shares it rounds (Money.split_exact): earlier
    rules, or lines in request order, first on a tie."""
    return total.split_exact(exact_shares)
