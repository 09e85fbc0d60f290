"""Property-based tests of the calculator (hypothesis): the invariants hold for any prices,
quantities, currencies and rule sets, not just the examples."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from billing_common.money import Money, quantum
from tax_service.domain.calculator import calculate, exclusive_group_taxes
from tax_service.domain.model import (
    CalculationRequest,
    Customer,
    Exemption,
    Jurisdiction,
    LineInput,
    PriceMode,
    TaxRounding,
    TaxRule,
    TaxStatus,
)

DAY = date(2026, 1, 1)
CURRENCIES = ["EUR", "JPY", "KWD", "USD"]


@dataclass(frozen=True)
class Case:
    currency: str
    rules: tuple[TaxRule, ...]
    lines: tuple[LineInput, ...]


rates = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("0.3"), places=5)


@st.composite
def rule_sets(draw: st.DrawFn, max_taxes: int = 3, allow_zero: bool = True) -> tuple[TaxRule, ...]:
    count = draw(st.integers(min_value=1, max_value=max_taxes))
    rules = []
    for index in range(count):
        zero = allow_zero and draw(st.booleans()) and draw(st.booleans())
        rate = Decimal(0) if zero else draw(rates)
        rules.append(
            TaxRule(
                id=f"r{index}",
                jurisdiction=Jurisdiction("DE", draw(st.sampled_from([None, "BY"]))),
                category="standard",
                name=f"tax {index}",
                rate=rate,
                valid_from=date(2020, 1, 1),
                zero_rated=zero,
                compound=draw(st.booleans()),
                priority=draw(st.integers(min_value=0, max_value=3)),
            )
        )
    return tuple(rules)


@st.composite
def cases(draw: st.DrawFn, max_taxes: int = 3, allow_zero: bool = True) -> Case:
    currency = draw(st.sampled_from(CURRENCIES))
    count = draw(st.integers(min_value=1, max_value=5))
    lines = tuple(
        LineInput(
            id=str(index),
            unit_price=Money(
                draw(st.decimals(min_value=0, max_value=Decimal(100_000), places=4)), currency
            ),
            quantity=draw(
                st.decimals(min_value=Decimal("0.001"), max_value=Decimal(1000), places=3).filter(
                    lambda q: q > 0
                )
            ),
            category="standard",
        )
        for index in range(count)
    )
    return Case(currency, draw(rule_sets(max_taxes, allow_zero)), lines)


def make_request(
    case: Case,
    mode: PriceMode,
    status: TaxStatus = TaxStatus.STANDARD,
    rounding: TaxRounding = TaxRounding.PER_BREAKDOWN,
) -> CalculationRequest:
    return CalculationRequest(
        currency=case.currency,
        jurisdiction=Jurisdiction("DE", "BY"),
        # A reverse charge holds only for a business elsewhere in the EU with a valid VAT id.
        customer=Customer("c", status, "FR40303265045", location=Jurisdiction("FR"))
        if status is TaxStatus.REVERSE_CHARGE
        else Customer("c", status),
        price_mode=mode,
        date=DAY,
        lines=case.lines,
        rounding=rounding,
    )


def on_minor_unit(money: Money) -> bool:
    step = quantum(money.currency)
    return (
        money.amount == money.amount.quantize(step)
        and money.amount.as_tuple().exponent == step.as_tuple().exponent
    )


def ordered(rules: tuple[TaxRule, ...]) -> list[TaxRule]:
    return sorted(rules, key=TaxRule.order_key)


@settings(max_examples=300, deadline=None)
@given(cases(), st.sampled_from(list(PriceMode)), st.sampled_from(list(TaxRounding)))
def test_net_plus_tax_is_gross_per_line_and_in_total(
    case: Case, mode: PriceMode, rounding: TaxRounding
) -> None:
    results = calculate(make_request(case, mode, rounding=rounding), case.rules)
    zero = Money.zero(case.currency)
    for result in results:
        assert result.net + result.tax == result.gross
        assert sum((t.amount for t in result.taxes), zero) == result.tax
        for money in (result.net, result.tax, result.gross, *(t.amount for t in result.taxes)):
            assert on_minor_unit(money)
            assert not money.is_negative
    total_net = sum((r.net for r in results), zero)
    total_tax = sum((r.tax for r in results), zero)
    total_gross = sum((r.gross for r in results), zero)
    assert total_net + total_tax == total_gross


def _line_amount(line: LineInput) -> Decimal:
    return (line.unit_price.amount * line.quantity).quantize(
        quantum(line.unit_price.currency), rounding=ROUND_HALF_UP
    )


@settings(max_examples=300, deadline=None)
@given(cases())
def test_per_line_exclusive_rounds_each_tax_exactly_once_half_up(case: Case) -> None:
    results = calculate(
        make_request(case, PriceMode.EXCLUSIVE, rounding=TaxRounding.PER_LINE), case.rules
    )
    step = quantum(case.currency)
    for result in results:
        net = _line_amount(result.line)
        assert result.net.amount == net
        charged = Decimal(0)
        with localcontext() as ctx:
            ctx.prec = 60
            for rule, tax in zip(ordered(case.rules), result.taxes, strict=True):
                base = net + charged if rule.compound else net
                expected = (base * rule.rate).quantize(step, rounding=ROUND_HALF_UP)
                assert tax.rule_id == rule.id
                assert tax.amount.amount == expected
                charged += expected


@settings(max_examples=300, deadline=None)
@given(cases(), st.sampled_from(list(TaxRounding)))
def test_inclusive_keeps_the_gross_and_each_tax_within_one_unit_of_its_exact_share(
    case: Case, rounding: TaxRounding
) -> None:
    results = calculate(make_request(case, PriceMode.INCLUSIVE, rounding=rounding), case.rules)
    step = quantum(case.currency)
    for result in results:
        gross = _line_amount(result.line)
        assert result.gross.amount == gross
        with localcontext() as ctx:
            ctx.prec = 60
            factors, cumulative = [], Decimal(0)
            for rule in ordered(case.rules):
                factor = rule.rate * (1 + cumulative) if rule.compound else rule.rate
                factors.append(factor)
                cumulative += factor
            for tax, factor in zip(result.taxes, factors, strict=True):
                exact = gross * factor / (1 + cumulative)
                assert abs(tax.amount.amount - exact) < step


@settings(max_examples=300, deadline=None)
@given(cases(max_taxes=2, allow_zero=False))
def test_per_line_inclusive_then_exclusive_round_trips_within_one_minor_unit(case: Case) -> None:
    inclusive = calculate(
        make_request(case, PriceMode.INCLUSIVE, rounding=TaxRounding.PER_LINE), case.rules
    )
    # Price each line again, exclusively, at the net the inclusive calculation backed out.
    net_lines = tuple(
        LineInput(id=r.line.id, unit_price=r.net, quantity=Decimal(1), category="standard")
        for r in inclusive
    )
    again = calculate(
        make_request(
            Case(case.currency, case.rules, net_lines),
            PriceMode.EXCLUSIVE,
            rounding=TaxRounding.PER_LINE,
        ),
        case.rules,
    )
    step = quantum(case.currency)
    for before, after in zip(inclusive, again, strict=True):
        assert after.net == before.net
        assert abs(after.gross.amount - before.gross.amount) <= step


@settings(max_examples=100, deadline=None)
@given(
    cases(),
    st.sampled_from(list(PriceMode)),
    st.sampled_from([TaxStatus.EXEMPT, TaxStatus.REVERSE_CHARGE]),
)
def test_exempt_customers_never_pay_tax(case: Case, mode: PriceMode, status: TaxStatus) -> None:
    for result in calculate(make_request(case, mode, status), case.rules):
        assert result.tax.is_zero
        assert result.net == result.gross == Money(_line_amount(result.line), case.currency)
        assert result.exemption in (Exemption.EXEMPT_CUSTOMER, Exemption.REVERSE_CHARGE)
        assert result.taxes == ()


# --- per_breakdown rounding (issue 13): one rounding per VAT breakdown ------------------


@st.composite
def breakdown_cases(draw: st.DrawFn) -> tuple[Case, tuple[TaxRule, ...]]:
    """Several lines over two or three product categories, some sharing a rate (so one
    breakdown has several lines), in currencies with 0, 2 and 3 decimals."""
    currency = draw(st.sampled_from(CURRENCIES))
    category_rates = {
        "a": draw(rates),
        "b": draw(st.sampled_from([Decimal("0.19"), Decimal("0.07"), Decimal("0.1")])),
        "c": draw(st.sampled_from([Decimal("0.19"), Decimal("0.07"), Decimal("0.1")])),
    }
    rules = tuple(
        TaxRule(
            id=f"r-{category}",
            jurisdiction=Jurisdiction("DE"),
            category=category,
            name=f"VAT {category}",
            rate=rate,
            valid_from=date(2020, 1, 1),
        )
        for category, rate in category_rates.items()
    )
    places = st.integers(min_value=0, max_value=4)
    lines = tuple(
        LineInput(
            id=str(index),
            unit_price=Money(Decimal(draw(st.integers(0, 10**7))).scaleb(-draw(places)), currency),
            quantity=Decimal(draw(st.integers(1, 5000))).scaleb(-draw(st.integers(0, 3))),
            category=draw(st.sampled_from(sorted(category_rates))),
        )
        for index in range(draw(st.integers(min_value=1, max_value=8)))
    )
    return Case(currency, rules, lines), rules


@settings(max_examples=300, deadline=None)
@given(breakdown_cases(), st.sampled_from(list(PriceMode)))
def test_per_breakdown_lines_add_up_to_the_group_tax_rounded_once(
    drawn: tuple[Case, tuple[TaxRule, ...]], mode: PriceMode
) -> None:
    case, rules = drawn
    results = calculate(make_request(case, mode), rules)
    step = quantum(case.currency)
    rate_of = {rule.category: rule.rate for rule in rules}
    groups: dict[Decimal, list[Any]] = {}
    for result in results:
        groups.setdefault(rate_of[result.line.category], []).append(result)
    with localcontext() as ctx:
        ctx.prec = 60
        for rate, members in groups.items():
            amounts = [_line_amount(r.line) for r in members]
            whole = sum(amounts, Decimal(0))
            if mode is PriceMode.EXCLUSIVE:
                exact_group = whole * rate
                exact_lines = [amount * rate for amount in amounts]
                assert [r.net.amount for r in members] == amounts
            else:
                exact_group = whole * rate / (1 + rate)
                exact_lines = [amount * rate / (1 + rate) for amount in amounts]
                assert [r.gross.amount for r in members] == amounts
            group_tax = sum((r.tax.amount for r in members), Decimal(0))
            # The group's tax is its exact tax rounded once, half up ...
            assert group_tax == exact_group.quantize(step, rounding=ROUND_HALF_UP)
            # ... the lines add up to it (and to the group's net and gross) exactly ...
            group_net = sum((r.net.amount for r in members), Decimal(0))
            assert group_net + group_tax == sum((r.gross.amount for r in members), Decimal(0))
            if mode is PriceMode.INCLUSIVE:
                assert group_net == whole - group_tax
            # ... and each line is within one minor unit of its own exact tax.
            for result, exact in zip(members, exact_lines, strict=True):
                assert abs(result.tax.amount - exact) < step
                assert not result.net.is_negative
                assert on_minor_unit(result.tax)
                [applied] = result.taxes
                assert applied.amount == result.tax


@settings(max_examples=200, deadline=None)
@given(breakdown_cases(), st.sampled_from(list(PriceMode)))
def test_a_breakdown_of_one_line_each_rounds_as_per_line_did(
    drawn: tuple[Case, tuple[TaxRule, ...]], mode: PriceMode
) -> None:
    """Exclusive prices: a line alone at its rate is taxed as before. Inclusive prices: the
    same, except on an exact tie of the net, where the tax (not the net) now rounds up."""
    case, rules = drawn
    rate_of = {rule.category: rule.rate for rule in rules}
    seen: set[Decimal] = set()
    lines = []
    for line in case.lines:
        if rate_of[line.category] not in seen:
            seen.add(rate_of[line.category])
            lines.append(line)
    single = Case(case.currency, rules, tuple(lines))
    per_breakdown = calculate(make_request(single, mode), rules)
    per_line = calculate(make_request(single, mode, rounding=TaxRounding.PER_LINE), rules)
    step = quantum(case.currency)
    for new, old in zip(per_breakdown, per_line, strict=True):
        assert new.gross == old.gross if mode is PriceMode.INCLUSIVE else new.net == old.net
        assert abs(new.tax.amount - old.tax.amount) <= (step if mode is PriceMode.INCLUSIVE else 0)


@settings(max_examples=300, deadline=None)
@given(
    currency=st.sampled_from(CURRENCIES),
    net=st.decimals(min_value=Decimal(0), max_value=Decimal("1000000"), places=3),
    taxes=st.lists(st.tuples(rates, st.booleans()), min_size=1, max_size=3),
)
def test_a_one_line_group_gets_what_the_split_gives_it(
    currency: str, net: Decimal, taxes: list[tuple[Decimal, bool]]
) -> None:
    """exclusive_group_taxes skips the split for a group of one line: each of its taxes is
    the group's rounded tax, exactly what splitting it over the one exact share gave."""
    line_net = Money(net, currency).rounded()
    rules = [
        TaxRule(
            id=f"r{i}",
            jurisdiction=Jurisdiction("DE"),
            category="standard",
            name=f"t{i}",
            rate=rate,
            valid_from=None,
            compound=compound,
        )
        for i, (rate, compound) in enumerate(taxes)
    ]
    with localcontext() as ctx:
        ctx.prec = 50
        expected: list[Money] = []
        charged = Decimal(0)
        total = sum((line_net.amount,), Decimal(0))
        for rule in rules:
            exact = (total + charged if rule.compound else total) * rule.rate
            tax = Money(exact, currency).rounded(ROUND_HALF_UP)
            share = (
                line_net.amount * rule.rate
                if not rule.compound
                else (exact * line_net.amount / total if total else Decimal(0))
            )
            expected.extend(tax.split_exact([share]))
            charged += tax.amount
        [found] = exclusive_group_taxes([line_net], rules)
    assert [(m.amount, m.amount.as_tuple()) for m in found] == [
        (m.amount, m.amount.as_tuple()) for m in expected
    ]
