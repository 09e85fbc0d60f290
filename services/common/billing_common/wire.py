"""Wire types every service's schemas share (pydantic only, no web framework: peer clients
and use cases may speak them too).

- Decimal strings: amounts, rates and quantities are JSON strings matching a published
  pattern, read exactly as Decimal and written back as plain decimal strings; a JSON number
  (which a parser may already have turned into a binary float) is refused.
- Currencies: ISO 4217 codes the platform knows (billing_common.money).
- Timestamps a database can hold. Python's datetime stops at years 1 and 9999, so an aware
  value such as 0001-01-01T00:00:00+14:00 parses but has no UTC value: converting it (which
  every repository does) raises OverflowError, a 500. These types refuse it (422).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Final

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BeforeValidator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    WithJsonSchema,
)
from pydantic_core import core_schema

from billing_common.money import MAX_AMOUNT, check_currency, format_amount, to_decimal

# --- decimal strings --------------------------------------------------------------------
# The pattern a client reads in the schema is the one the service checks: a decimal string
# outside it is refused (422) before any arithmetic, and one inside it is well formed. ASCII
# digits only ([0-9], not \d: \d also matches "١٠٠", which Decimal() reads as 100), no sign,
# no exponent, no spaces.

AMOUNT_PATTERN: Final = r"^[0-9]{1,13}(\.[0-9]{1,12})?$"


def fraction_pattern(places: int, *, zero: bool) -> str:
    """A fraction 0..1 (or 0 < f <= 1 without `zero`) with at most `places` decimals."""
    # Up to the last non-zero digit at most `places` decimals, then only (a few) zeros.
    nonzero = rf"0\.[0-9]{{0,{places - 1}}}[1-9]0{{0,{places}}}"
    one = rf"1(\.0{{1,{places}}})?"
    if zero:
        return rf"^(0(\.[0-9]{{1,{places}}})?|{one})$"
    return rf"^({nonzero}|{one})$"


@dataclass(frozen=True, slots=True)
class DecimalText:
    """`Annotated[Decimal, DecimalText(pattern, example)]`: a Decimal read from (and written
    as) a JSON string matching `pattern`, which the schema publishes. With `integers`, a JSON
    integer (exact) is accepted too and published as the alternative.

    `pattern` admits only ASCII digits with at most one point (as AMOUNT_PATTERN and
    fraction_pattern do): `reader` relies on it to skip `parse`'s checks for such text."""

    pattern: str
    example: str
    integers: bool = False

    def parse(self, value: Any) -> Decimal:
        """Any value to a Decimal, or ValueError: what the schema validates with, in full."""
        if isinstance(value, Decimal):
            return to_decimal(value)
        # bool is an int subclass; true is not a quantity.
        if self.integers and isinstance(value, int) and not isinstance(value, bool):
            return to_decimal(value)
        if not isinstance(value, str):
            raise ValueError(
                'amounts and rates are decimal strings such as "12.50", never JSON numbers'
                + (" (or JSON integers)" if self.integers else "")
            )
        if not re.fullmatch(self.pattern, value):
            raise ValueError(f"{value!r} is not a decimal string matching {self.pattern}")
        return to_decimal(value)

    def reader(self) -> Callable[[Any], Decimal]:
        """`parse` with a shortcut for what nearly every request holds, a str matching the
        pattern within MAX_AMOUNT: a request carries many amounts, and `parse` costs ~3x the
        shortcut (the re module's cache lookup, to_decimal's type checks and second regex,
        which such text passes by the pattern's contract). Anything else takes `parse`, so
        what is accepted, the Decimal given and every error are `parse`'s."""
        fullmatch = re.compile(self.pattern).fullmatch
        parse = self.parse

        def read(value: Any) -> Decimal:
            # `is str`, the cheapest test: a str subclass takes parse, which reads it alike.
            if value.__class__ is str and fullmatch(value) is not None:
                amount = Decimal(value)  # digits and one point: exact, finite, unsigned
                if amount <= MAX_AMOUNT:
                    return amount
            return parse(value)

        return read

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # A plain validator, not pydantic-core's str_schema(pattern=...): that one would take
        # the model's str_strip_whitespace (" 1.00 " accepted) and give its own errors, where
        # problem bodies carry parse's messages.
        return core_schema.no_info_plain_validator_function(
            self.reader(),
            serialization=core_schema.plain_serializer_function_ser_schema(
                format_amount, return_schema=core_schema.str_schema()
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        text = {"type": "string", "pattern": self.pattern}
        if self.integers:
            return {"anyOf": [text, {"type": "integer"}], "examples": [self.example]}
        return {**text, "examples": [self.example]}


DecimalString = Annotated[Decimal, DecimalText(AMOUNT_PATTERN, "100.00")]
"""An amount: a non-negative decimal string such as "100.00"."""

Quantity = Annotated[Decimal, DecimalText(AMOUNT_PATTERN, "2", integers=True)]
"""A quantity: a decimal string such as "1.5", or a JSON integer (exact)."""

DecimalOut = Annotated[
    Decimal,
    PlainSerializer(format_amount, return_type=str),
    WithJsonSchema({"type": "string", "format": "decimal"}),
]
"""A Decimal a response carries, written as a plain decimal string ("100", never 1E+2)."""

Currency = Annotated[
    str, Field(min_length=3, max_length=3, examples=["EUR"]), AfterValidator(check_currency)
]
"""An ISO 4217 code the platform knows, normalised to upper case."""


# --- timestamps -------------------------------------------------------------------------


def check_representable(value: datetime) -> datetime:
    """`value` unchanged if its UTC value lies in years 1-9999; else ValueError."""
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError as exc:
            raise ValueError(
                f"{value.isoformat()} is outside the years 1-9999 once converted to UTC"
            ) from exc
    return value


def parse_aware_timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp with an offset, in UTC; ValueError for anything else (naive,
    malformed, or outside the years 1-9999 in UTC). For values such as cursors that come back
    from clients, who may have crafted them."""
    value = datetime.fromisoformat(text)
    if value.utcoffset() is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return check_representable(value).astimezone(UTC)


AwareTimestamp = Annotated[AwareDatetime, AfterValidator(check_representable)]
"""An aware datetime (an offset is required) whose UTC value exists."""

Timestamp = Annotated[datetime, AfterValidator(check_representable)]
"""A datetime, naive or aware; when aware, its UTC value exists. For query filters that take a
naive value as UTC."""

_ISO_DATE_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ]")


def date_time_text(value: Any) -> Any:
    """Before pydantic reads a datetime: only an ISO 8601 date-time string (or a datetime
    from Python code) is one; pydantic alone would also read 0.5 or "0.5" as seconds."""
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE_TIME.match(value):
        raise ValueError("a date-time string such as 2026-01-01T00:00:00Z")
    return value


DateTimeText = Annotated[AwareTimestamp, BeforeValidator(date_time_text)]
"""An ISO 8601 date-time string with an offset whose UTC value exists."""

DateTimeFilter = Annotated[Timestamp, BeforeValidator(date_time_text)]
"""An ISO 8601 date-time string, naive (taken as UTC) or aware, for query filters."""
