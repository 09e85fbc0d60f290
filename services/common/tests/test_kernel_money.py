from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing_common.money import (
    CurrencyMismatch,
    Money,
    MoneyError,
    UnknownCurrency,
    format_amount,
    quantum,
)

amounts = st.decimals(
    min_value=Decimal("-1000000"), max_value=Decimal("1000000"), places=6, allow_nan=False
)
currencies = st.sampled_from(["EUR", "USD", "JPY", "KWD", "CAD"])


def test_rounding_is_half_up_to_the_minor_unit() -> None:
    assert Money.of("10.005", "EUR").rounded() == Money.of("10.01", "EUR")
    assert Money.of("10.0049", "EUR").rounded() == Money.of("10.00", "EUR")
    assert Money.of("-10.005", "EUR").rounded() == Money.of("-10.01", "EUR")
    assert Money.of("100.5", "JPY").rounded() == Money.of("101", "JPY")
    assert Money.of("1.0005", "KWD").rounded() == Money.of("1.001", "KWD")


def test_explicit_rounding_mode() -> None:
    assert Money.of("10.009", "EUR").rounded("ROUND_DOWN").amount == Decimal("10.00")


def test_floats_are_refused() -> None:
    with pytest.raises(MoneyError):
        Money.of(0.1, "EUR")  # type: ignore[arg-type]
    with pytest.raises(MoneyError):
        Money.of("1", "EUR") * 1.5  # type: ignore[operator]


def test_unknown_currency_and_mixing() -> None:
    with pytest.raises(UnknownCurrency):
        Money.of("1", "XXX")
    with pytest.raises(CurrencyMismatch):
        Money.of("1", "EUR") + Money.of("1", "USD")
    with pytest.raises(CurrencyMismatch):
        _ = Money.of("1", "EUR") < Money.of("1", "USD")


@pytest.mark.parametrize("bad", ["abc", "NaN", "Infinity", "", "1e400"])
def test_non_amounts_are_refused(bad: str) -> None:
    with pytest.raises(MoneyError):
        Money.of(bad, "EUR")


def test_wire_format_is_a_plain_decimal_string() -> None:
    assert Money.of(Decimal("1E+2"), "EUR").to_wire() == {"amount": "100", "currency": "EUR"}
    assert format_amount(Decimal("-0")) == "0"
    assert str(Money.of("12.50", "eur")) == "12.50 EUR"


@given(amounts, currencies)
def test_rounding_lands_on_the_minor_unit_within_half_a_unit(amount: Decimal, cur: str) -> None:
    rounded = Money.of(amount, cur).rounded()
    assert rounded.amount % quantum(cur) == 0
    assert abs(rounded.amount - amount) <= quantum(cur) / 2


@given(amounts, amounts, currencies)
def test_addition_is_exact_and_commutative(a: Decimal, b: Decimal, cur: str) -> None:
    assert Money.of(a, cur) + Money.of(b, cur) == Money.of(b, cur) + Money.of(a, cur)
    assert (Money.of(a, cur) + Money.of(b, cur)).amount == a + b


@given(
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2),
    st.lists(st.integers(min_value=1, max_value=1000), min_size=1, max_size=12),
)
def test_allocation_adds_up_exactly(total: Decimal, weights: list[int]) -> None:
    parts = Money.of(total, "EUR").allocate([Decimal(w) for w in weights])
    assert sum((p.amount for p in parts), Decimal(0)) == total
    assert all(p.amount >= 0 for p in parts)
    assert max(p.amount for p in parts) - min(p.amount for p in parts) <= total
