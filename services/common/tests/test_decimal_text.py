"""The wire kit's decimal strings (`billing_common.wire.DecimalText`: DecimalString,
Quantity, the services' rates) read every value exactly as the validator they had before
the shortcut for pattern-matching text: of any JSON value, in Python and in JSON mode, under
the model configurations the services use, the same accepted, the same Decimals given, the
same errors (what RFC 9457 problem bodies carry), the same JSON schema and serialisation.

The invoice's peer answers (adapters.peers) read their amounts as DecimalString again; this
test was theirs, when they had a type of their own."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Annotated, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

from billing_common.money import format_amount, to_decimal
from billing_common.wire import AMOUNT_PATTERN, DecimalText, fraction_pattern


@dataclass(frozen=True, slots=True)
class _OracleDecimalText:
    """DecimalText as it was before `reader` (commit 3bd88b3), copied: the oracle."""

    pattern: str
    example: str
    integers: bool = False

    def parse(self, value: Any) -> Decimal:
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

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self.parse,
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


# (pattern, example, integers) of every DecimalText the services declare: DecimalString,
# Quantity, the tax rate, the discount's percentage and cap fraction.
KINDS = {
    "amount": (AMOUNT_PATTERN, "100.00", False),
    "quantity": (AMOUNT_PATTERN, "2", True),
    "tax rate": (fraction_pattern(8, zero=True), "0.19", False),
    "discount rate": (fraction_pattern(6, zero=False), "0.10", False),
    "cap fraction": (fraction_pattern(12, zero=False), "0.50", False),
}
# The services' input models: plain, extra="forbid", and the invoice's str_strip_whitespace
# (which a pydantic-core str schema would apply to the decimal string too); strict for good
# measure.
CONFIGS = {
    "plain": ConfigDict(),
    "forbid, strip": ConfigDict(extra="forbid", str_strip_whitespace=True),
    "strict": ConfigDict(strict=True),
}


@cache
def _models(kind: str, config: str) -> tuple[type[BaseModel], type[BaseModel]]:
    """(model with the kit's type, model with the oracle's) for one kind and configuration."""
    pattern, example, integers = KINDS[kind]
    kit = Annotated[Decimal, DecimalText(pattern, example, integers)]
    oracle = Annotated[Decimal, _OracleDecimalText(pattern, example, integers)]
    return (
        type(
            "Kit",
            (BaseModel,),
            {"__annotations__": {"amount": kit}, "model_config": CONFIGS[config]},
        ),
        type(
            "Oracle",
            (BaseModel,),
            {"__annotations__": {"amount": oracle}, "model_config": CONFIGS[config]},
        ),
    )


def _outcome(model: type[BaseModel], value: Any, *, json_mode: bool) -> tuple[Any, ...]:
    """What validating {"amount": value} gives: the Decimal (class, str, repr) and its
    serialisations, or every error as a problem body shows it and more (type, location,
    message, input, context), or any other exception."""
    try:
        if json_mode:
            parsed = model.model_validate_json(json.dumps({"amount": value}))
        else:
            parsed = model.model_validate({"amount": value})
    except Exception as exc:
        errors = getattr(exc, "errors", None)
        if errors is None:
            return ("raised", type(exc).__name__, str(exc))
        return (
            "refused",
            [
                (
                    e["type"],
                    e["loc"],
                    e["msg"],
                    repr(e["input"]),
                    {k: (type(v).__name__, str(v)) for k, v in e.get("ctx", {}).items()},
                )
                for e in errors()
            ],
        )
    amount = parsed.amount  # type: ignore[attr-defined]
    return (
        "accepted",
        type(amount),
        str(amount),
        repr(amount),
        parsed.model_dump(mode="json"),
        parsed.model_dump_json(),
    )


def _text_like(digits: str) -> st.SearchStrategy[str]:
    return st.from_regex(rf"\A{digits}(\.[0-9]{{0,15}})?\Z")


texts = st.one_of(_text_like("[0-9]{1,14}"), _text_like("[01]"), _text_like("0"))
near_texts = st.builds(
    lambda text, junk, where: text[:where] + junk + text[where:],
    texts,
    st.sampled_from(["-", "+", " ", "\n", "\t", "e", "E5", "_", ",", "٣", "１", "NaN", ".", "0"]),
    st.integers(0, 18),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=4,
)
any_json = st.one_of(
    texts,
    near_texts,
    st.integers(-(10**14), 10**14),
    st.sampled_from([10**12, 10**12 + 1, -(10**12), 0, 1, -1]),
    json_values,
)


class _Text(str):
    pass


class _Code(enum.StrEnum):
    ONE = "1.00"


# What Python callers may pass besides JSON values: Decimals of any kind, str and int
# subclasses.
python_only = st.one_of(
    st.decimals(),
    st.sampled_from([Decimal("-0"), Decimal("-0.00"), Decimal("1E+3"), Decimal("sNaN")]),
    st.builds(_Text, st.one_of(texts, near_texts)),
    st.just(_Code.ONE),
    st.just(enum.IntEnum("N", {"TWO": 2}).TWO),  # type: ignore[attr-defined]
)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=200, deadline=None)
@given(value=any_json)
def test_json_values_read_as_before_in_json_mode(kind: str, value: Any) -> None:
    for config in CONFIGS:
        kit, oracle = _models(kind, config)
        assert _outcome(kit, value, json_mode=True) == _outcome(oracle, value, json_mode=True)


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=200, deadline=None)
@given(value=st.one_of(any_json, python_only))
def test_values_read_as_before_in_python_mode(kind: str, value: Any) -> None:
    for config in CONFIGS:
        kit, oracle = _models(kind, config)
        assert _outcome(kit, value, json_mode=False) == _outcome(oracle, value, json_mode=False)


@pytest.mark.parametrize("kind", KINDS)
def test_the_edges_read_as_before(kind: str) -> None:
    kit, oracle = _models(kind, "forbid, strip")
    accepted = ("0", "0.00", "1", "1.0", "0.5", "1000000000000", "1000000000000.000000000000")
    refused = ("1000000000000.01", "9999999999999", "1.0000000000000", "-0.00", "1e3", "", " 1")
    for value in (*accepted, *refused, "999999999999.99", 1, 0, True, 1.5, None, [], {}):
        for json_mode in (False, True):
            assert _outcome(kit, value, json_mode=json_mode) == _outcome(
                oracle, value, json_mode=json_mode
            )
    if kind == "amount":  # the cases are not vacuous: both kinds of answer are compared
        assert all(_outcome(kit, v, json_mode=True)[0] == "accepted" for v in accepted)
        assert all(_outcome(kit, v, json_mode=True)[0] == "refused" for v in refused)


@pytest.mark.parametrize("kind", KINDS)
def test_the_published_schema_is_as_before(kind: str) -> None:
    kit, oracle = _models(kind, "plain")
    for mode in ("validation", "serialization"):
        assert (
            kit.model_json_schema(mode=mode)["properties"]
            == oracle.model_json_schema(mode=mode)["properties"]
        )
