"""Money's own __init__ takes a fast path for a Decimal in a normalised code: whatever it is
given, it must build what to_decimal and check_currency say, or raise what they raise."""

from __future__ import annotations

from decimal import Decimal, localcontext
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from billing_common.money import (
    MAX_AMOUNT,
    MINOR_UNITS,
    Money,
    MoneyError,
    check_currency,
    quantum,
    to_decimal,
)

EDGES = [
    Decimal(0),
    Decimal("-0"),
    Decimal("-0.000"),
    Decimal("0E+5"),
    MAX_AMOUNT,
    -MAX_AMOUNT,
    MAX_AMOUNT + Decimal("0.01"),
    -MAX_AMOUNT - Decimal("0.01"),
    # More digits than the default context holds: abs() rounds it to MAX_AMOUNT.
    Decimal("1000000000000.0000000000000001"),
    Decimal("NaN"),
    Decimal("-sNaN"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
    Decimal("1E+2"),
    Decimal("12.3456789"),
]
amounts = st.one_of(
    st.sampled_from(EDGES),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(min_value=-MAX_AMOUNT * 2, max_value=MAX_AMOUNT * 2, places=4),
    st.integers(min_value=-(10**13), max_value=10**13),
    st.sampled_from(["12.50", "-0.00", "1e400", "abc", " 1", "1_0", "NaN", ""]),
    st.sampled_from([0.1, True, None, b"1"]),
)
currencies = st.one_of(
    st.sampled_from(sorted(MINOR_UNITS)),
    st.sampled_from(["eur", " EUR ", "XXX", "", "EURO"]),
    st.sampled_from([None, 978, ["EUR"], b"EUR"]),
)


def _reference(amount: Any, currency: Any) -> tuple[Decimal, str] | tuple[type, str]:
    """What the generated dataclass __init__ with __post_init__ built (or raised)."""
    try:
        return to_decimal(amount), check_currency(currency)
    except MoneyError as exc:
        return type(exc), str(exc)


def _built(amount: Any, currency: Any) -> tuple[Decimal, str] | tuple[type, str]:
    try:
        money = Money(amount, currency)
    except MoneyError as exc:
        return type(exc), str(exc)
    return money.amount, money.currency


def _same(left: object, right: object) -> bool:
    # Decimals compared by their exact representation: 1.0 and 1.00, 0 and -0 differ here.
    if isinstance(left, Decimal) and isinstance(right, Decimal):
        return left.as_tuple() == right.as_tuple()
    return type(left) is type(right) and left == right


@given(amounts, currencies)
def test_construction_builds_or_refuses_as_the_checks_do(amount: Any, currency: Any) -> None:
    expected = _reference(amount, currency)
    built = _built(amount, currency)
    assert all(_same(b, e) for b, e in zip(built, expected, strict=True)), (built, expected)


@given(amounts, currencies)
def test_of_builds_or_refuses_as_the_constructor_did(amount: Any, currency: Any) -> None:
    try:
        money = Money.of(amount, currency)
    except MoneyError as exc:
        built: tuple[object, object] = (type(exc), str(exc))
    else:
        built = (money.amount, money.currency)
    expected = _reference(amount, currency)
    assert all(_same(b, e) for b, e in zip(built, expected, strict=True)), (built, expected)


def test_the_fast_path_checks_within_a_narrower_context() -> None:
    # abs() rounds to the context's precision, as to_decimal's bound check always did.
    with localcontext() as ctx:
        ctx.prec = 6
        for amount in EDGES:
            built, expected = _built(amount, "EUR"), _reference(amount, "EUR")
            assert all(_same(b, e) for b, e in zip(built, expected, strict=True)), amount


def test_zero_is_unsigned_and_results_are_checked() -> None:
    assert str(Money(Decimal("-0.00"), "EUR").amount) == "0.00"
    assert str((Money(Decimal("1.00"), "EUR") - Money(Decimal("1.00"), "EUR")).amount) == "0.00"
    assert str((-Money(Decimal(0), "EUR")).amount) == "0"
    with pytest.raises(MoneyError, match="exceeds the maximum"):
        Money(MAX_AMOUNT, "EUR") + Money(Decimal("0.01"), "EUR")


@pytest.mark.parametrize("code", sorted(MINOR_UNITS))
def test_quantum_per_currency(code: str) -> None:
    assert quantum(code) == Decimal(1).scaleb(-MINOR_UNITS[code])
    assert quantum(code.lower()).as_tuple() == Decimal(1).scaleb(-MINOR_UNITS[code]).as_tuple()


@pytest.mark.parametrize("bad", ["XXX", "", None, 978])
def test_quantum_of_an_unknown_currency_is_refused(bad: Any) -> None:
    with pytest.raises(MoneyError):
        quantum(bad)


ROUNDINGS = ["ROUND_HALF_UP", "ROUND_HALF_EVEN", "ROUND_DOWN", "ROUND_UP", "ROUND_CEILING"]
valid_amounts = st.one_of(
    st.sampled_from([d for d in EDGES if d.is_finite() and abs(d) <= MAX_AMOUNT]),
    st.decimals(min_value=-MAX_AMOUNT, max_value=MAX_AMOUNT, places=4),
    st.sampled_from([Decimal("-0.001"), Decimal("-0.004"), MAX_AMOUNT - Decimal("0.001")]),
)


@given(valid_amounts, st.sampled_from(sorted(MINOR_UNITS)), st.sampled_from(ROUNDINGS))
# Let past the bound by abs()'s rounding: rounded up, it is refused.
@example(Decimal("1000000000000.0000000000000001"), "EUR", "ROUND_UP")
@example(Decimal("-0.004"), "EUR", "ROUND_HALF_UP")
def test_rounding_and_negation_build_what_the_checked_constructor_builds(
    amount: Decimal, currency: str, rounding: str
) -> None:
    # rounded() and negation build their result without Money's checks (they cannot take a
    # valid amount out of bounds): it must be exactly what the checks would have built.
    money = Money(amount, currency)
    try:
        expected = Money(amount.quantize(quantum(currency), rounding=rounding), currency)
    except MoneyError as refused:
        with pytest.raises(MoneyError, match=str(refused)):
            money.rounded(rounding)
        return
    rounded = money.rounded(rounding)
    assert type(rounded) is Money
    assert (rounded.amount.as_tuple(), rounded.currency) == (
        expected.amount.as_tuple(),
        expected.currency,
    )
    assert rounded == expected
    negated = -money
    assert negated.amount.as_tuple() == Money(-money.amount, currency).amount.as_tuple()
    assert str(Money(Decimal("-0.004"), "EUR").rounded().amount) == "0.00"
