"""The calculation answer is written from the domain result (entrypoints.calculation_json),
not through CalculationOut, which stays its documented schema: the two must give the same
bytes for any calculation, or the API would answer what its OpenAPI does not say."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from billing_common.money import MINOR_UNITS, Money
from billing_common.web import model_response
from tax_service.domain.model import (
    AppliedTax,
    CalculationRequest,
    Customer,
    CustomerKind,
    Exemption,
    Jurisdiction,
    LineInput,
    LineResult,
    LineVat,
    PriceMode,
    Seller,
    TaxCalculation,
    TaxRounding,
    TaxStatus,
    Treatment,
    VatCategory,
    VatIdCheck,
)
from tax_service.entrypoints.calculation_json import calculation_json
from tax_service.entrypoints.schemas import CalculationOut

# Any text a request can carry, quotes, escapes and non-ASCII included.
texts = st.text(max_size=40)
optional_texts = st.none() | texts
jurisdictions = st.builds(
    Jurisdiction, st.sampled_from(["DE", "FR", "US", "CA", "GB"]), st.sampled_from([None, "BY"])
)
# Spellings a Decimal may have: exponents ("1E+2"), trailing zeros, many places.
amounts = st.decimals(min_value=0, max_value=Decimal(10**8), allow_nan=False) | st.decimals(
    min_value=-Decimal(10**8), max_value=Decimal(10**8), places=3
)
rates = st.decimals(min_value=0, max_value=1, places=8) | st.sampled_from(
    [Decimal("0.19"), Decimal("0.190"), Decimal("1E-1"), Decimal(0)]
)
offsets = st.timedeltas(min_value=-dt.timedelta(hours=23), max_value=dt.timedelta(hours=23))
datetimes = st.datetimes(
    timezones=st.none() | st.timezones() | st.builds(dt.timezone, offsets) | st.just(dt.UTC)
)


@st.composite
def customers(draw: st.DrawFn) -> Customer:
    status = draw(st.sampled_from(list(TaxStatus)))
    tax_id = draw(texts.filter(str.strip) if status is TaxStatus.REVERSE_CHARGE else optional_texts)
    return Customer(
        id=draw(optional_texts),
        tax_status=status,
        tax_id=tax_id,
        location=draw(st.none() | jurisdictions),
        kind=draw(st.none() | st.sampled_from(list(CustomerKind))),
        exemption_certificate=draw(optional_texts),
    )


@st.composite
def line_results(draw: st.DrawFn, currency: str, line_id: str) -> LineResult:
    def money() -> Money:
        return Money(draw(amounts), currency)

    line = LineInput(
        id=line_id,
        unit_price=Money(draw(st.decimals(min_value=0, max_value=10**6, places=4)), currency),
        quantity=draw(st.decimals(min_value=Decimal("0.000001"), max_value=10**6, places=6)),
        category=draw(st.sampled_from(["standard", "books", "food.reduced"])),
        description=draw(optional_texts),
    )
    taxes = draw(
        st.lists(
            st.builds(
                AppliedTax,
                rule_id=texts,
                name=texts,
                rate=rates,
                amount=st.builds(lambda: money()),
                compound=st.booleans(),
                zero_rated=st.booleans(),
            ),
            max_size=3,
        )
    )
    return LineResult(
        line=line,
        net=money(),
        tax=money(),
        gross=money(),
        exemption=draw(st.none() | st.sampled_from(list(Exemption))),
        taxes=tuple(taxes),
        vat=LineVat(
            category=draw(st.sampled_from(list(VatCategory))),
            treatment=draw(st.sampled_from(list(Treatment))),
            reason=draw(optional_texts),
            reason_code=draw(optional_texts),
        ),
    )


@st.composite
def calculations(draw: st.DrawFn) -> TaxCalculation:
    currency = draw(st.sampled_from(sorted(MINOR_UNITS)))
    ids = draw(
        st.lists(texts.filter(lambda t: 0 < len(t) <= 64), min_size=1, max_size=4, unique=True)
    )
    lines = tuple(draw(line_results(currency, line_id)) for line_id in ids)
    request = CalculationRequest(
        currency=currency,
        jurisdiction=draw(jurisdictions),
        customer=draw(customers()),
        price_mode=draw(st.sampled_from(list(PriceMode))),
        date=draw(st.dates()),
        lines=tuple(result.line for result in lines),
        reference=draw(optional_texts),
        seller=draw(st.none() | st.builds(Seller, jurisdictions, optional_texts)),
        rounding=draw(st.sampled_from(list(TaxRounding))),
    )
    evidence = draw(
        st.none()
        | st.builds(
            VatIdCheck,
            vat_id=texts,
            valid=st.booleans(),
            source=st.sampled_from(["vies", "sandbox", "format-only"]),
            checked_at=datetimes,
            request_id=optional_texts,
            detail=optional_texts,
        )
    )
    return TaxCalculation(
        id=draw(texts),
        request=request,
        lines=lines,
        total_net=Money(draw(amounts), currency),
        total_tax=Money(draw(amounts), currency),
        total_gross=Money(draw(amounts), currency),
        created_at=draw(datetimes),
        treatment=draw(st.sampled_from(list(Treatment))),
        evidence=evidence,
    )


# Two writers of one body compared: 100 examples reach every optional field and enum here
# (the structure is wide, not deep); 300 made this the slowest unit test of the suite.
@settings(max_examples=100, deadline=None)
@given(calculations())
def test_the_body_is_what_the_response_model_serialises(calculation: TaxCalculation) -> None:
    expected = model_response(CalculationOut.of(calculation), status_code=201).body
    assert calculation_json(calculation) == expected


def test_a_calculation_as_the_engine_gives_it() -> None:
    line = LineInput("1", Money(Decimal("100.00"), "EUR"), Decimal(2), "standard", "Widget")
    result = LineResult(
        line=line,
        net=Money(Decimal("200.00"), "EUR"),
        tax=Money(Decimal("38.00"), "EUR"),
        gross=Money(Decimal("238.00"), "EUR"),
        exemption=None,
        taxes=(AppliedTax("r1", "DE VAT", Decimal("0.19"), Money(Decimal("38.00"), "EUR")),),
        vat=LineVat(VatCategory.STANDARD, Treatment.DOMESTIC),
    )
    calculation = TaxCalculation.of(
        calculation_id="c1",
        request=CalculationRequest(
            currency="EUR",
            jurisdiction=Jurisdiction("DE"),
            customer=Customer("c-1"),
            price_mode=PriceMode.EXCLUSIVE,
            date=dt.date(2026, 11, 24),
            lines=(line,),
        ),
        lines=(result,),
        created_at=dt.datetime(2026, 11, 24, 9, 30, tzinfo=dt.UTC),
    )
    body = calculation_json(calculation)
    assert body == model_response(CalculationOut.of(calculation)).body
    assert b'"total_gross":"238.00"' in body
    assert b'"created_at":"2026-11-24T09:30:00Z"' in body
