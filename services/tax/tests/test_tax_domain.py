"""Unit tests of the pure tax domain: rule invariants, rule selection, exclusive and inclusive
prices, several and compound taxes, exemptions, validity dates and rounding boundaries."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from billing_common.money import Money, MoneyError, UnknownCurrency
from tax_service.domain.calculator import calculate, exclusive_taxes, inclusive_taxes
from tax_service.domain.errors import (
    InvalidCalculationRequest,
    InvalidJurisdiction,
    InvalidRule,
    TaxIdRequired,
    UnknownCategory,
    UnknownJurisdiction,
)
from tax_service.domain.model import (
    CalculationRequest,
    Customer,
    Exemption,
    Jurisdiction,
    LineInput,
    PriceMode,
    TaxCalculation,
    TaxStatus,
)

DAY = date(2026, 11, 24)


def line(
    price: str,
    quantity: str = "1",
    category: str = "standard",
    currency: str = "EUR",
    line_id: str = "1",
) -> LineInput:
    return LineInput(
        id=line_id,
        unit_price=Money.of(price, currency),
        quantity=Decimal(quantity),
        category=category,
    )


def request(
    *lines: LineInput,
    country: str = "DE",
    region: str | None = None,
    currency: str = "EUR",
    mode: PriceMode = PriceMode.EXCLUSIVE,
    customer: Customer | None = None,
    on: date = DAY,
) -> CalculationRequest:
    return CalculationRequest(
        currency=currency,
        jurisdiction=Jurisdiction(country, region),
        customer=customer or Customer("c-1"),
        price_mode=mode,
        date=on,
        lines=lines or (line("100.00", "2", currency=currency),),
    )


def amounts(result: Any) -> tuple[str, str, str]:
    return (str(result.net.amount), str(result.tax.amount), str(result.gross.amount))


@pytest.fixture
def quebec(make_rule: Any) -> list[Any]:
    return [
        make_rule("CA", "standard", "0.05", name="GST", priority=20),
        make_rule("CA", "standard", "0.09975", region="QC", name="QST", priority=10),
        make_rule("CA", "books", "0.05", name="GST books", priority=20),
        make_rule("CA", "books", "0", region="QC", name="QST books zero", priority=10),
    ]


# --- the contract example and basic modes -------------------------------------------------


def test_exclusive_contract_example(make_rule: Any) -> None:
    [result] = calculate(request(), [make_rule()])
    assert amounts(result) == ("200.00", "38.00", "238.00")
    assert result.exemption is None
    [tax] = result.taxes
    assert (tax.name, tax.rate, tax.amount.amount, tax.compound) == (
        "DE standard 0.19",
        Decimal("0.19"),
        Decimal("38.00"),
        False,
    )


def test_inclusive_backs_out_the_tax(make_rule: Any) -> None:
    [result] = calculate(request(line("119.00"), mode=PriceMode.INCLUSIVE), [make_rule()])
    assert amounts(result) == ("100.00", "19.00", "119.00")


def test_inclusive_rounds_the_net_and_keeps_net_plus_tax_equal_to_gross(make_rule: Any) -> None:
    # 10.00 / 1.19 = 8.4033... -> net 8.40, tax is what is left: 1.60.
    [result] = calculate(request(line("10.00"), mode=PriceMode.INCLUSIVE), [make_rule()])
    assert amounts(result) == ("8.40", "1.60", "10.00")


def test_fractional_quantity_rounds_the_line_amount_once(make_rule: Any) -> None:
    # 9.99 x 1.5 = 14.985 -> 14.99 (half up), then 19 % of 14.99 = 2.8481 -> 2.85.
    [result] = calculate(request(line("9.99", "1.5")), [make_rule()])
    assert amounts(result) == ("14.99", "2.85", "17.84")


def test_totals_are_the_sums_of_the_lines(make_rule: Any) -> None:
    req = request(line("10.00", line_id="a"), line("0.99", "3", "food", line_id="b"))
    lines = calculate(req, [make_rule(), make_rule(category="food", rate="0.07")])
    calc = TaxCalculation.of(calculation_id="x", request=req, lines=lines, created_at=None)  # type: ignore[arg-type]
    # a: 10.00 + 1.90; b: 2.97 + 0.2079 -> 0.21
    assert calc.total_net.amount == Decimal("12.97")
    assert calc.total_tax.amount == Decimal("2.11")
    assert calc.total_gross.amount == Decimal("15.08")


# --- rounding boundaries (ROUND_HALF_UP per tax amount) ---------------------------------


@pytest.mark.parametrize(
    ("price", "rate", "expected_tax"),
    [
        ("0.10", "0.25", "0.03"),  # 0.025 -> 0.03 (half-even would give 0.02)
        ("0.50", "0.09", "0.05"),  # 0.045 -> 0.05 (half-even would give 0.04)
        ("0.05", "0.10", "0.01"),  # 0.005 -> 0.01
        ("0.04", "0.10", "0.00"),  # 0.004 -> 0.00
        ("100.00", "0.09975", "9.98"),  # 9.975 -> 9.98
        ("1.00", "0.0725", "0.07"),  # 0.0725 -> 0.07
        ("1.10", "0.05", "0.06"),  # 0.055 -> 0.06
    ],
)
def test_each_tax_rounds_half_up(make_rule: Any, price: str, rate: str, expected_tax: str) -> None:
    [result] = calculate(request(line(price)), [make_rule(rate=rate)])
    assert result.tax.amount == Decimal(expected_tax)
    assert result.tax.amount.as_tuple().exponent == -2


def test_line_amount_rounds_half_up_before_tax(make_rule: Any) -> None:
    # 0.125 x 1 = 0.125 -> 0.13; 0.13 x 0.19 = 0.0247 -> 0.02
    [result] = calculate(request(line("0.125")), [make_rule()])
    assert amounts(result) == ("0.13", "0.02", "0.15")


@pytest.mark.parametrize(
    ("currency", "price", "rate", "expected"),
    [
        ("JPY", "105", "0.10", ("105", "11", "116")),  # 10.5 -> 11, no minor unit
        ("KWD", "1.005", "0.05", ("1.005", "0.050", "1.055")),  # 0.05025 -> 0.050
        ("KWD", "0.010", "0.05", ("0.010", "0.001", "0.011")),  # 0.0005 -> 0.001
    ],
)
def test_rounding_follows_the_currency_minor_unit(
    make_rule: Any, currency: str, price: str, rate: str, expected: tuple[str, str, str]
) -> None:
    req = request(line(price, currency=currency), currency=currency)
    [result] = calculate(req, [make_rule(rate=rate)])
    assert amounts(result) == expected


# --- several taxes, compound -------------------------------------------------------------


def test_federal_and_regional_taxes_both_apply(quebec: list[Any]) -> None:
    req = request(line("100.00", currency="CAD"), country="CA", region="QC", currency="CAD")
    [result] = calculate(req, quebec)
    assert [(t.name, t.amount.amount) for t in result.taxes] == [
        ("GST", Decimal("5.00")),
        ("QST", Decimal("9.98")),
    ]
    assert amounts(result) == ("100.00", "14.98", "114.98")


def test_regional_rule_does_not_apply_in_another_region(quebec: list[Any]) -> None:
    req = request(line("100.00", currency="CAD"), country="CA", region="AB", currency="CAD")
    [result] = calculate(req, quebec)
    assert [t.name for t in result.taxes] == ["GST"]
    assert result.tax.amount == Decimal("5.00")


def test_country_request_without_region_gets_only_country_wide_rules(quebec: list[Any]) -> None:
    req = request(line("100.00", currency="CAD"), country="CA", currency="CAD")
    [result] = calculate(req, quebec)
    assert [t.name for t in result.taxes] == ["GST"]


def test_compound_tax_is_charged_on_net_plus_earlier_taxes(make_rule: Any) -> None:
    rules = [
        make_rule("CA", rate="0.05", name="GST", priority=20),
        make_rule("CA", rate="0.095", region="QC", name="QST", priority=10, compound=True),
    ]
    req = request(line("200.00", currency="CAD"), country="CA", region="QC", currency="CAD")
    [result] = calculate(req, rules)
    # GST 10.00; QST on 210.00 = 19.95 (it would be 19.00 if not compound).
    assert [t.amount.amount for t in result.taxes] == [Decimal("10.00"), Decimal("19.95")]
    assert [t.compound for t in result.taxes] == [False, True]
    assert amounts(result) == ("200.00", "29.95", "229.95")


def test_priority_orders_the_taxes_not_the_rule_list(make_rule: Any) -> None:
    # The compound tax has the higher priority, so it comes first and compounds on nothing.
    rules = [
        make_rule(rate="0.10", name="second", priority=1),
        make_rule(rate="0.10", name="first", priority=5, compound=True),
    ]
    [result] = calculate(request(line("100.00")), rules)
    assert [(t.name, t.amount.amount) for t in result.taxes] == [
        ("first", Decimal("10.00")),
        ("second", Decimal("10.00")),
    ]


def test_on_equal_priority_the_country_wide_tax_comes_first(make_rule: Any) -> None:
    rules = [
        make_rule("CA", rate="0.10", region="QC", name="a regional", compound=True),
        make_rule("CA", rate="0.10", name="z national"),
    ]
    req = request(line("100.00", currency="CAD"), country="CA", region="QC", currency="CAD")
    [result] = calculate(req, rules)
    assert [(t.name, t.amount.amount) for t in result.taxes] == [
        ("z national", Decimal("10.00")),
        ("a regional", Decimal("11.00")),
    ]


def test_inclusive_with_several_and_compound_taxes(make_rule: Any) -> None:
    rules = [
        make_rule("CA", rate="0.05", name="GST", priority=20),
        make_rule("CA", rate="0.095", region="QC", name="QST", priority=10, compound=True),
    ]
    req = request(
        line("114.98", currency="CAD"),
        country="CA",
        region="QC",
        currency="CAD",
        mode=PriceMode.INCLUSIVE,
    )
    [result] = calculate(req, rules)
    # 114.98 / (1 + 0.05 + 0.095 x 1.05) = 100.0043 -> 100.00; 14.98 split 5.00 / 9.98.
    assert amounts(result) == ("100.00", "14.98", "114.98")
    assert [t.amount.amount for t in result.taxes] == [Decimal("5.00"), Decimal("9.98")]


def test_inclusive_split_gives_leftover_units_to_the_largest_remainders(make_rule: Any) -> None:
    rules = [make_rule(rate="0.10", name="a"), make_rule(rate="0.10", name="b")]
    net, taxes = inclusive_taxes(Money.of("1.00", "EUR"), rules)
    # 1.00 / 1.2 = 0.8333 -> 0.83; 0.17 over two equal shares of 0.08333: 0.09 + 0.08.
    assert net.amount == Decimal("0.83")
    assert [t.amount for t in taxes] == [Decimal("0.09"), Decimal("0.08")]


def test_exclusive_taxes_of_compound_chain() -> None:
    from tax_service.domain.model import TaxRule

    rules = [
        TaxRule("1", Jurisdiction("CA"), "x", "a", Decimal("0.10"), date(2020, 1, 1)),
        TaxRule(
            "2", Jurisdiction("CA"), "x", "b", Decimal("0.10"), date(2020, 1, 1), compound=True
        ),
        TaxRule(
            "3", Jurisdiction("CA"), "x", "c", Decimal("0.10"), date(2020, 1, 1), compound=True
        ),
    ]
    taxes = exclusive_taxes(Money.of("100.00", "CAD"), rules)
    assert [t.amount for t in taxes] == [Decimal("10.00"), Decimal("11.00"), Decimal("12.10")]


# --- exemptions --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(PriceMode))
def test_exempt_customer_pays_no_tax(make_rule: Any, mode: PriceMode) -> None:
    customer = Customer("charity", TaxStatus.EXEMPT)
    [result] = calculate(request(line("119.00"), mode=mode, customer=customer), [make_rule()])
    assert amounts(result) == ("119.00", "0.00", "119.00")
    assert result.exemption is Exemption.EXEMPT_CUSTOMER
    assert result.taxes == ()


def test_reverse_charge_charges_nothing_and_says_so(make_rule: Any) -> None:
    # The claim holds: a seller in DE (the jurisdiction), a business in FR with a valid id.
    customer = Customer(
        "b2b", TaxStatus.REVERSE_CHARGE, "FR40303265045", location=Jurisdiction("FR")
    )
    [result] = calculate(request(customer=customer), [make_rule()])
    assert amounts(result) == ("200.00", "0.00", "200.00")
    assert result.exemption is Exemption.REVERSE_CHARGE


@pytest.mark.parametrize("tax_id", [None, "", "   "])
def test_reverse_charge_needs_a_tax_id(tax_id: str | None) -> None:
    with pytest.raises(TaxIdRequired):
        Customer("b2b", TaxStatus.REVERSE_CHARGE, tax_id)


def test_zero_rated_category_names_the_rule(make_rule: Any) -> None:
    rules = [make_rule("GB", "books", "0", name="GB VAT zero rate (books)")]
    [result] = calculate(request(line("12.00", category="books"), country="GB"), rules)
    assert amounts(result) == ("12.00", "0.00", "12.00")
    assert result.exemption is Exemption.ZERO_RATED
    [tax] = result.taxes
    assert (tax.name, tax.amount.amount, tax.zero_rated) == (
        "GB VAT zero rate (books)",
        Decimal("0.00"),
        True,
    )


def test_zero_rated_at_one_level_only_is_not_a_zero_rated_line(quebec: list[Any]) -> None:
    req = request(
        line("20.00", category="books", currency="CAD"),
        country="CA",
        region="QC",
        currency="CAD",
    )
    [result] = calculate(req, quebec)
    assert result.exemption is None
    assert [t.amount.amount for t in result.taxes] == [Decimal("1.00"), Decimal("0.00")]


def test_customer_exemption_still_checks_the_category(make_rule: Any) -> None:
    customer = Customer("charity", TaxStatus.EXEMPT)
    with pytest.raises(UnknownCategory):
        calculate(request(line("1.00", category="bogus"), customer=customer), [make_rule()])


# --- unknown jurisdiction / category, validity dates -------------------------------------


def test_unknown_country_is_refused(make_rule: Any) -> None:
    with pytest.raises(UnknownJurisdiction) as raised:
        calculate(request(country="IT"), [make_rule()])
    assert raised.value.problem_extensions == {"jurisdiction": "IT", "date": "2026-11-24"}


@pytest.mark.parametrize("region", [None, "NY"])
def test_region_without_rules_is_unknown(make_rule: Any, region: str | None) -> None:
    rules = [make_rule("US", rate="0.0725", region="CA")]
    req = request(line("1.00", currency="USD"), country="US", region=region, currency="USD")
    with pytest.raises(UnknownJurisdiction):
        calculate(req, rules)


def test_unknown_category_is_refused_never_zero(make_rule: Any) -> None:
    req = request(line("1.00"), line("1.00", category="Reduced ", line_id="2"))
    with pytest.raises(UnknownCategory) as raised:
        calculate(req, [make_rule()])
    assert raised.value.problem_extensions["category"] == "reduced"
    assert raised.value.problem_extensions["line_id"] == "2"


def test_only_rules_valid_on_the_date_apply(make_rule: Any) -> None:
    rules = [
        make_rule(rate="0.19", valid_from=date(2007, 1, 1), valid_to=date(2020, 7, 1)),
        make_rule(rate="0.16", valid_from=date(2020, 7, 1), valid_to=date(2021, 1, 1)),
        make_rule(rate="0.19", valid_from=date(2021, 1, 1)),
    ]
    for day, tax in [
        (date(2020, 6, 30), "38.00"),
        (date(2020, 7, 1), "32.00"),  # valid_from is inclusive, valid_to exclusive
        (date(2020, 12, 31), "32.00"),
        (date(2021, 1, 1), "38.00"),
    ]:
        [result] = calculate(request(on=day), rules)
        assert result.tax.amount == Decimal(tax), day


def test_no_rule_valid_on_the_date_is_an_unknown_jurisdiction(make_rule: Any) -> None:
    rules = [make_rule(valid_from=date(2024, 1, 1), valid_to=date(2025, 1, 1))]
    [result] = calculate(request(on=date(2024, 12, 31)), rules)
    assert result.tax.amount == Decimal("38.00")
    with pytest.raises(UnknownJurisdiction):
        calculate(request(on=date(2025, 1, 1)), rules)
    with pytest.raises(UnknownJurisdiction):
        calculate(request(on=date(2023, 12, 31)), rules)


def test_rule_without_valid_from_is_valid_always(make_rule: Any) -> None:
    rules = [make_rule(valid_from=None, valid_to=date(2000, 1, 1))]
    [result] = calculate(request(on=date(1, 1, 1)), rules)
    assert result.tax.amount == Decimal("38.00")
    with pytest.raises(UnknownJurisdiction):
        calculate(request(on=date(2000, 1, 1)), rules)


def test_category_valid_only_on_other_dates_is_unknown(make_rule: Any) -> None:
    rules = [make_rule(), make_rule(category="food", rate="0.07", valid_from=date(2027, 1, 1))]
    with pytest.raises(UnknownCategory):
        calculate(request(line("1.00", category="food")), rules)


# --- rule invariants ---------------------------------------------------------------------


def test_rule_normalises_codes_and_rate(make_rule: Any) -> None:
    made = make_rule("de", " Food ", "0.0700", region="by", name=" Bavarian food ")
    assert (made.jurisdiction.country, made.jurisdiction.region) == ("DE", "BY")
    assert made.category == "food"
    assert str(made.rate) == "0.07"
    assert made.name == "Bavarian food"
    assert made.same_definition(make_rule("DE", "food", "0.07", region="BY", name="Bavarian food"))
    assert not made.same_definition(make_rule("DE", "food", "0.07", region="BY", name="other"))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rate": "0", "zero_rated": False}, "zero_rated"),
        ({"rate": "0.10", "zero_rated": True}, "rate"),
        ({"rate": "-0.01"}, "rate"),
        ({"rate": "1.5"}, "rate"),
        ({"rate": "0.123456789"}, "rate"),
        ({"valid_from": date(2024, 2, 1), "valid_to": date(2024, 1, 31)}, "valid_to"),
        ({"valid_from": date(2024, 2, 1), "valid_to": date(2024, 2, 1)}, "valid_to"),
        ({"key": "Not A Key"}, "key"),
        ({"key": "-leading-dash"}, "key"),
        ({"category": "has space"}, "category"),
        ({"name": "   "}, "name"),
        ({"priority": 10**7}, "priority"),
    ],
)
def test_invalid_rules_are_refused(make_rule: Any, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRule) as raised:
        make_rule(**kwargs)
    assert raised.value.problem_extensions["field"] == field


@pytest.mark.parametrize(
    ("country", "region"),
    [("UK", None), ("XX", None), ("DEU", None), ("", None), ("US", "CALIFORNIA"), ("US", "C-A")],
)
def test_invalid_jurisdictions_are_refused(country: str, region: str | None) -> None:
    with pytest.raises(InvalidJurisdiction):
        Jurisdiction(country, region)


def test_jurisdiction_coverage() -> None:
    assert Jurisdiction("CA").covers(Jurisdiction("CA", "QC"))
    assert Jurisdiction("CA", "QC").covers(Jurisdiction("CA", "QC"))
    assert not Jurisdiction("CA", "QC").covers(Jurisdiction("CA", "ON"))
    assert not Jurisdiction("CA", "QC").covers(Jurisdiction("CA"))
    assert not Jurisdiction("CA").covers(Jurisdiction("US"))
    assert str(Jurisdiction("ca", "qc")) == "CA-QC"
    assert Jurisdiction("CA", "") == Jurisdiction("CA")


# --- request invariants ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: line("1.00", "0"), InvalidCalculationRequest),
        (lambda: line("1.00", "-1"), InvalidCalculationRequest),
        (lambda: line("1.00", "0.0000001"), InvalidCalculationRequest),
        (lambda: line("1.00", "1000000001"), InvalidCalculationRequest),
        (lambda: line("-1.00"), InvalidCalculationRequest),
        (lambda: line("0.00000000001"), InvalidCalculationRequest),
        (lambda: line("1.00", category="bad category"), InvalidCalculationRequest),
        (
            lambda: request(line("1", line_id="a"), line("2", line_id="a")),
            InvalidCalculationRequest,
        ),
        (lambda: request(line("1.00", currency="USD")), InvalidCalculationRequest),
        (lambda: request(line("1.00"), currency="XXX"), UnknownCurrency),
        (lambda: line("1000000000000.01"), MoneyError),
    ],
)
def test_invalid_requests_are_refused(build: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        build()


def test_line_amount_over_the_maximum_is_refused(make_rule: Any) -> None:
    req = request(line("1000000000.00", "10000"))
    with pytest.raises(MoneyError):
        calculate(req, [make_rule()])


def test_empty_request_is_refused() -> None:
    with pytest.raises(InvalidCalculationRequest):
        CalculationRequest("EUR", Jurisdiction("DE"), Customer(), PriceMode.EXCLUSIVE, DAY, ())
