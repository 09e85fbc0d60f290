"""Money: an exact Decimal amount in an ISO 4217 currency.

Floats never enter: constructors accept Decimal, int or decimal strings only, and every
rounding names its mode. Arithmetic refuses to mix currencies.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Final

# ISO 4217 minor units for the currencies the platform accepts. A currency not listed here
# is rejected rather than guessed at: a wrong exponent silently mis-bills every invoice.
MINOR_UNITS: Final[dict[str, int]] = {
    "AED": 2, "ARS": 2, "AUD": 2, "BGN": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2,
    "CLP": 0, "CNY": 2, "COP": 2, "CZK": 2, "DKK": 2, "EGP": 2, "EUR": 2, "GBP": 2,
    "HKD": 2, "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0,
    "KRW": 0, "KWD": 3, "MAD": 2, "MXN": 2, "MYR": 2, "NGN": 2, "NOK": 2, "NZD": 2,
    "OMR": 3, "PEN": 2, "PHP": 2, "PKR": 2, "PLN": 2, "QAR": 2, "RON": 2, "RSD": 2,
    "SAR": 2, "SEK": 2, "SGD": 2, "THB": 2, "TND": 3, "TRY": 2, "TWD": 2, "UAH": 2,
    "USD": 2, "VND": 0, "ZAR": 2,
}  # fmt: skip

# Upper bound on any single amount: large enough for any real invoice, small enough that a
# typo or an attack cannot create numbers the database column cannot hold.
MAX_AMOUNT: Final = Decimal("1000000000000")
_ZERO: Final = Decimal(0)

# What Decimal() parses, but in ASCII only: Decimal() alone also takes "١٠٠" and "１００"
# (any script's digits), "1_000" and surrounding whitespace.
_DECIMAL_LITERAL: Final = re.compile(
    r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII
)


class MoneyError(ValueError):
    """An amount or currency that cannot be billed."""


class UnknownCurrency(MoneyError):
    def __init__(self, code: str) -> None:
        super().__init__(f"unknown currency {code!r}: use an ISO 4217 code such as EUR or USD")
        self.code = code


class CurrencyMismatch(MoneyError):
    def __init__(self, left: str, right: str) -> None:
        super().__init__(f"cannot combine amounts in {left} and {right}")


def check_currency(code: str) -> str:
    """Return the normalised ISO 4217 code, or raise UnknownCurrency."""
    normalised = code.strip().upper() if isinstance(code, str) else ""
    if normalised not in MINOR_UNITS:
        raise UnknownCurrency(str(code))
    return normalised


def minor_unit(currency: str) -> int:
    return MINOR_UNITS[check_currency(currency)]


# One quantum per currency, built once: rounding asks for it on every amount it rounds.
_QUANTA: Final[dict[str, Decimal]] = {
    code: Decimal(1).scaleb(-places) for code, places in MINOR_UNITS.items()
}


def quantum(currency: str) -> Decimal:
    """The smallest amount of the currency: Decimal('0.01') for EUR, Decimal('1') for JPY."""
    if currency.__class__ is str:
        known = _QUANTA.get(currency)
        if known is not None:
            return known
    return _QUANTA[check_currency(currency)]


def to_decimal(value: Decimal | int | str) -> Decimal:
    """Parse an amount exactly. Floats are refused: 0.1 as a float is not 0.1."""
    if isinstance(value, bool | float):
        raise MoneyError("amounts must be decimal strings or integers, never floats")
    if isinstance(value, str) and not _DECIMAL_LITERAL.fullmatch(value):
        raise MoneyError(f'not a decimal amount: {value!r} (ASCII digits, such as "12.50")')
    try:
        result = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise MoneyError(f"not a decimal amount: {value!r}") from exc
    if not result.is_finite():
        raise MoneyError(f"not a finite amount: {value!r}")
    if abs(result) > MAX_AMOUNT:
        raise MoneyError(f"amount {value} exceeds the maximum of {MAX_AMOUNT}")
    # "-0.00" is zero: normalised here so that no amount built from it is shown with a sign.
    return result.copy_abs() if result.is_zero() else result


_NEGATIVE_MAX: Final = -MAX_AMOUNT


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in one currency. Unrounded values are allowed in between steps;
    `rounded()` fixes the amount to the currency's minor unit."""

    amount: Decimal
    currency: str

    # Its own __init__ (the dataclass keeps it): what arithmetic and rounding build, a finite
    # Decimal within bounds in a code already normalised, takes to_decimal's and
    # check_currency's checks inline, without their type dispatch and calls (3 calls and 4
    # attribute writes per amount with the generated __init__ and __post_init__).
    def __init__(self, amount: Decimal, currency: str) -> None:
        if (
            amount.__class__ is Decimal
            and currency.__class__ is str
            and currency in MINOR_UNITS
            and amount.is_finite()  # first: a NaN would raise in the comparison
            and _NEGATIVE_MAX <= amount <= MAX_AMOUNT  # no abs(): one Decimal fewer
        ):
            _set_amount(self, amount.copy_abs() if amount.is_zero() else amount)
            _set_currency(self, currency)
            return
        _set_amount(self, to_decimal(amount))
        _set_currency(self, check_currency(currency))

    @classmethod
    def of(cls, amount: Decimal | int | str, currency: str) -> Money:
        # __init__ parses what is not a Decimal already: to_decimal once, not twice.
        return cls(amount, currency)  # type: ignore[arg-type]

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(_ZERO, currency)

    def _same_currency(self, other: Money) -> None:
        if not isinstance(other, Money):
            raise TypeError(f"expected Money, got {type(other).__name__}")
        if other.currency != self.currency:
            raise CurrencyMismatch(self.currency, other.currency)

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def __mul__(self, factor: Decimal | int) -> Money:
        if isinstance(factor, float | bool):
            raise MoneyError("multiply money by Decimal or int, never float")
        return Money(self.amount * factor, self.currency)

    __rmul__ = __mul__

    def __neg__(self) -> Money:
        negated = -self.amount
        if negated.is_zero():
            negated = negated.copy_abs()
        elif not _NEGATIVE_MAX <= negated <= MAX_AMOUNT:
            return Money(negated, self.currency)  # as near the bound as the checks allow
        return _validated(negated, self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount >= other.amount

    def min(self, other: Money) -> Money:
        return self if self <= other else other

    def max(self, other: Money) -> Money:
        return self if self >= other else other

    @property
    def is_zero(self) -> bool:
        return self.amount == 0

    @property
    def is_negative(self) -> bool:
        return self.amount < 0

    def rounded(self, rounding: str = ROUND_HALF_UP) -> Money:
        """Round to the currency's minor unit with an explicit mode (default ROUND_HALF_UP)."""
        rounded = self.amount.quantize(_QUANTA[self.currency], rounding=rounding)
        if rounded.is_zero():
            rounded = rounded.copy_abs()  # a rounded negative amount may be a signed zero
        elif not _NEGATIVE_MAX <= rounded <= MAX_AMOUNT:
            # An amount the checks let past the bound by their context's rounding, rounded
            # up: refused as the checks refuse it.
            return Money(rounded, self.currency)
        return _validated(rounded, self.currency)

    def allocate(self, weights: list[Decimal]) -> list[Money]:
        """Split a rounded amount over weights so the parts add up to the whole exactly.

        The remainder left by rounding each share down goes, one minor unit at a time, to the
        parts with the largest fractional remainders (largest remainder method)."""
        whole = self.rounded()
        total_weight = sum(weights, Decimal(0))
        if not weights or total_weight <= 0:
            raise MoneyError("allocation needs positive weights")
        step = quantum(self.currency)
        raw = [whole.amount * w / total_weight for w in weights]
        floors = [r.quantize(step, rounding="ROUND_DOWN") for r in raw]
        leftover = int((whole.amount - sum(floors, Decimal(0))) / step)
        order = sorted(range(len(raw)), key=lambda i: raw[i] - floors[i], reverse=True)
        for i in order[: abs(leftover)]:
            floors[i] += step if leftover > 0 else -step
        return [Money(f, self.currency) for f in floors]

    def split_exact(self, exact_shares: Sequence[Decimal]) -> list[Money]:
        """Split this rounded amount over exact (unrounded) shares that it is the rounding
        of (largest remainder method): VAT rounded once per breakdown, given back to lines.

        Every share is rounded down, then the minor units left over go one each to the
        shares with the largest remainders, the earlier share on a tie. The leftover never
        exceeds the number of shares with a remainder (the amount is the rounded sum of the
        shares, or a share of such an amount split this way), so no share gets a unit it has
        no claim to, and a zero share always gets exactly 0. Unlike `allocate`, the shares
        are not rescaled to the amount."""
        step = quantum(self.currency)
        floors = [share.quantize(step, rounding=ROUND_DOWN) for share in exact_shares]
        leftover = int((self.amount - sum(floors, Decimal(0))) / step)
        by_remainder = sorted(
            range(len(floors)), key=lambda i: (exact_shares[i] - floors[i], -i), reverse=True
        )
        for index in by_remainder[: max(leftover, 0)]:
            floors[index] += step
        return [Money(amount, self.currency) for amount in floors]

    def to_wire(self) -> dict[str, str]:
        """Decimal string on the wire, never a JSON number."""
        return {"amount": format_amount(self.amount), "currency": self.currency}

    def __str__(self) -> str:
        return f"{format_amount(self.amount)} {self.currency}"


# Money is frozen: its values are written through the slots' own descriptors, looked up
# once (cheaper than object.__setattr__ by name).
_set_amount: Final = Money.__dict__["amount"].__set__
_set_currency: Final = Money.__dict__["currency"].__set__
_new: Final = object.__new__


def _validated(amount: Decimal, currency: str) -> Money:
    """Money of an amount and a currency its caller has checked (a finite Decimal within
    MAX_AMOUNT, not a negative zero, in a known code), without __init__'s checks: for the
    results of rounding and negation, where only the bound needs checking again."""
    money: Money = _new(Money)
    _set_amount(money, amount)
    _set_currency(money, currency)
    return money


def format_amount(amount: Decimal) -> str:
    """A plain decimal string without exponent or a signed zero: Decimal('1E+2') -> '100',
    Decimal('-0.00') -> '0.00'."""
    text = format(amount.copy_abs() if amount.is_zero() else amount, "f")
    return text or "0"
