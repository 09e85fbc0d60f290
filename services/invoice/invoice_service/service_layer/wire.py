"""Decimal amounts on the wire: decimal strings in, decimal strings out, never a float.

Both outer rings speak it: the API schemas (entrypoints) and the peer clients (adapters).
It sits below them so that neither imports the other."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

from billing_common.money import format_amount, to_decimal
from billing_common.openapi import AMOUNT_PATTERN

_DECIMAL_TEXT = re.compile(AMOUNT_PATTERN)


def parse_decimal(value: Any) -> Decimal:
    """Accept a decimal string (or a Decimal from Python code); refuse JSON numbers, which a
    JSON parser may already have turned into binary floats."""
    if isinstance(value, Decimal):
        return to_decimal(value)
    if not isinstance(value, str):
        raise ValueError('amounts are decimal strings such as "12.50", never JSON numbers')
    text = value
    if not _DECIMAL_TEXT.fullmatch(text):
        raise ValueError(f"{value!r} is not a decimal number")
    return to_decimal(text)


def parse_quantity(value: Any) -> Decimal:
    """Quantities may also be JSON integers (exact); fractional ones must be strings."""
    if isinstance(value, int) and not isinstance(value, bool):
        return to_decimal(value)
    return parse_decimal(value)


DecimalString = Annotated[
    Decimal,
    PlainValidator(parse_decimal),
    PlainSerializer(format_amount, return_type=str),
    WithJsonSchema({"type": "string", "pattern": AMOUNT_PATTERN, "examples": ["100.00"]}),
]

QuantityValue = Annotated[
    Decimal,
    PlainValidator(parse_quantity),
    PlainSerializer(format_amount, return_type=str),
    WithJsonSchema(
        {
            "oneOf": [{"type": "string", "pattern": AMOUNT_PATTERN}, {"type": "integer"}],
            "examples": ["2", "1.5"],
        }
    ),
]
