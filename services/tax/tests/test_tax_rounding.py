"""Rounding per VAT breakdown (issue 13): a calculation rounds each group of lines with the
same taxes (VAT category and rate) once, on the group's summed amounts, and allocates the
rounded figure back to the lines by largest remainder (ties: the earlier line). `per_line`
keeps the rounding of each line on its own, as an explicit option."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from billing_common.money import Money
from tax_service.domain.calculator import calculate
from tax_service.domain.model import (
    CalculationRequest,
    Customer,
    Jurisdiction,
    LineInput,
    PriceMode,
    TaxCalculation,
    TaxRounding,
    TaxStatus,
    VatCategory,
)

DAY = date(2026, 11, 24)


def line(
    line_id: str,
    price: str,
    quantity: str = "1",
    category: str = "standard",
    *,
    currency: str = "EUR",
) -> LineInput:
    return LineInput(line_id, Money.of(price, currency), Decimal(quantity), category)


def request(
    *lines: LineInput,
    currency: str = "EUR",
    mode: PriceMode = PriceMode.EXCLUSIVE,
    rounding: TaxRounding = TaxRounding.PER_BREAKDOWN,
    country: str = "DE",
    region: str | None = None,
    customer: Customer | None = None,
) -> CalculationRequest:
    return CalculationRequest(
        currency=currency,
        jurisdiction=Jurisdiction(country, region),
        customer=customer or Customer("c-1"),
        price_mode=mode,
        date=DAY,
        lines=lines,
        rounding=rounding,
    )


def taxes(results: tuple[Any, ...]) -> list[str]:
    return [str(result.tax.amount) for result in results]


def nets(results: tuple[Any, ...]) -> list[str]:
    return [str(result.net.amount) for result in results]


def test_the_default_is_per_breakdown() -> None:
    assert request(line("1", "1.00")).rounding is TaxRounding.PER_BREAKDOWN


def test_exclusive_rounds_the_breakdown_once_and_ties_go_to_the_earlier_line(
    make_rule: Any,
) -> None:
    # 2 x 0.50 at 19 %: per line 0.095 -> 0.10 twice = 0.20; the breakdown: 1.00 x 19 % =
    # 0.19. Both lines have the remainder 0.005: the first gets the cent.
    req = request(line("1", "0.50"), line("2", "0.50"))
    results = calculate(req, [make_rule()])
    assert taxes(results) == ["0.10", "0.09"]
    per_line = calculate(request(*req.lines, rounding=TaxRounding.PER_LINE), [make_rule()])
    assert taxes(per_line) == ["0.10", "0.10"]


def test_exclusive_leftover_goes_to_the_largest_remainders(make_rule: Any) -> None:
    # 10 %: exact 0.104, 0.108, 0.109 -> group 3.21 x 10 % = 0.321 -> 0.32; floors 0.10 x 3,
    # the two cents left go to 0.109 and 0.108.
    req = request(line("a", "1.04"), line("b", "1.08"), line("c", "1.09"))
    results = calculate(req, [make_rule(rate="0.10")])
    assert taxes(results) == ["0.10", "0.11", "0.11"]
    assert nets(results) == ["1.04", "1.08", "1.09"]


def test_inclusive_jpy_breakdown_of_issue_13(make_rule: Any) -> None:
    # 9.30 x 5 = 46.5 -> 47 yen and 2 x 882 = 1764 yen gross at 19 %. Per line: 47 -> 39 + 8,
    # 1764 -> 1482 + 282: 290 yen of tax on a net of 1521 (1521 x 19 % = 288.99, more than
    # one yen off: BR-CO-17 fails). Per breakdown: 1811 x 0.19 / 1.19 = 289.15 -> 289 tax,
    # net 1522 (x 19 % = 289.18); exact 7.50 + 281.65: floors 7 + 281, the yen left to 0.65.
    lines = (line("a", "9.30", "5", currency="JPY"), line("b", "882", "2", currency="JPY"))
    rules = [make_rule(rate="0.19")]
    results = calculate(request(*lines, currency="JPY", mode=PriceMode.INCLUSIVE), rules)
    assert taxes(results) == ["7", "282"]
    assert nets(results) == ["40", "1482"]
    assert [str(r.gross.amount) for r in results] == ["47", "1764"]
    old = calculate(
        request(*lines, currency="JPY", mode=PriceMode.INCLUSIVE, rounding=TaxRounding.PER_LINE),
        rules,
    )
    assert taxes(old) == ["8", "282"]


def test_categories_at_the_same_rate_are_one_breakdown(make_rule: Any) -> None:
    # DE standard and digital are both 19 %: one breakdown S 19 %, rounded once.
    rules = [make_rule(), make_rule(category="digital"), make_rule(category="food", rate="0.07")]
    req = request(
        line("1", "0.50"), line("2", "0.50", category="digital"), line("3", "0.50", "1", "food")
    )
    results = calculate(req, rules)
    assert taxes(results) == ["0.10", "0.09", "0.04"]
    calc = TaxCalculation.of(calculation_id="x", request=req, lines=results, created_at=None)  # type: ignore[arg-type]
    assert [(e.rate, str(e.taxable.amount), str(e.tax.amount)) for e in calc.breakdown] == [
        (Decimal("0.19"), "1.00", "0.19"),
        (Decimal("0.07"), "0.50", "0.04"),
    ]
    # The rules the lines name are their own, not the group's first.
    assert results[1].taxes[0].rule_id == rules[1].id


def test_relieved_and_zero_rated_lines_are_not_in_a_taxed_group(make_rule: Any) -> None:
    rules = [make_rule(), make_rule(category="food", rate="0")]
    req = request(line("1", "0.50"), line("2", "0.50", category="food"), line("3", "0.50"))
    results = calculate(req, rules)
    assert taxes(results) == ["0.10", "0.00", "0.09"]
    assert results[1].vat.category is VatCategory.ZERO_RATED
    exempt = calculate(request(*req.lines, customer=Customer("c-1", TaxStatus.EXEMPT)), rules)
    assert taxes(exempt) == ["0.00", "0.00", "0.00"]


def test_several_taxes_each_round_once_per_breakdown(make_rule: Any) -> None:
    # CA-QC: GST 5 % and QST 9.975 % on 2 x 0.10 CAD. Per line: 0.005 -> 0.01 and
    # 0.009975 -> 0.01, each twice: 0.04. Per breakdown: GST 0.20 x 5 % = 0.01, QST
    # 0.20 x 9.975 % = 0.01995 -> 0.02: 0.03 in all.
    rules = [
        make_rule("CA", rate="0.05", name="GST", priority=20),
        make_rule("CA", rate="0.09975", region="QC", name="QST", priority=10),
    ]
    lines = (line("1", "0.10", currency="CAD"), line("2", "0.10", currency="CAD"))
    results = calculate(request(*lines, currency="CAD", country="CA", region="QC"), rules)
    assert [[str(t.amount.amount) for t in r.taxes] for r in results] == [
        ["0.01", "0.01"],
        ["0.00", "0.01"],
    ]
    assert taxes(results) == ["0.02", "0.01"]


def test_compound_tax_rounds_on_the_groups_net_plus_its_rounded_taxes(make_rule: Any) -> None:
    # QST 2012, 9.5 % compound on GST: 3 x 33.33 CAD. Group GST 99.99 x 5 % = 4.9995 ->
    # 5.00; QST (99.99 + 5.00) x 9.5 % = 9.97405 -> 9.97. Per line it would be 1.67 x 3 =
    # 5.01 and 3.33 x 3 = 9.99 (on 33.33 + 1.67 = 35.00 each).
    rules = [
        make_rule("CA", rate="0.05", name="GST", priority=20),
        make_rule("CA", rate="0.095", region="QC", name="QST", priority=10, compound=True),
    ]
    lines = tuple(line(str(i), "33.33", currency="CAD") for i in range(3))
    results = calculate(request(*lines, currency="CAD", country="CA", region="QC"), rules)
    gst = [t.amount.amount for r in results for t in r.taxes if t.name == "GST"]
    qst = [t.amount.amount for r in results for t in r.taxes if t.name == "QST"]
    assert sum(gst) == Decimal("5.00") and sum(qst) == Decimal("9.97")
    assert [str(a) for a in gst] == ["1.67", "1.67", "1.66"]
    assert [str(a) for a in qst] == ["3.33", "3.32", "3.32"]


def test_inclusive_several_taxes_keep_each_lines_gross(make_rule: Any) -> None:
    rules = [
        make_rule("CA", rate="0.05", name="GST", priority=20),
        make_rule("CA", rate="0.09975", region="QC", name="QST", priority=10),
    ]
    lines = tuple(line(str(i), "1.15", currency="CAD") for i in range(3))
    req = request(*lines, currency="CAD", country="CA", region="QC", mode=PriceMode.INCLUSIVE)
    results = calculate(req, rules)
    # 3.45 x 0.14975 / 1.14975 = 0.4493 -> 0.45 in all (per line: 0.15 each, also 0.45),
    # each line 0.15 = GST 0.05 + QST 0.10, net 1.00.
    assert [str(r.gross.amount) for r in results] == ["1.15"] * 3
    assert taxes(results) == ["0.15", "0.15", "0.15"]
    assert [[str(t.amount.amount) for t in r.taxes] for r in results] == [["0.05", "0.10"]] * 3


@pytest.mark.parametrize("mode", list(PriceMode))
def test_a_tiny_line_never_gets_a_negative_net(make_rule: Any, mode: PriceMode) -> None:
    # 0.01 gross at 19 % has an exact tax of 0.0016: it may get at most the cent it has.
    req = request(line("1", "0.01"), line("2", "0.01"), line("3", "0.01"), mode=mode)
    for result in calculate(req, [make_rule()]):
        assert not result.net.is_negative
        assert result.net + result.tax == result.gross
