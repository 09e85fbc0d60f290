"""The peer answers' amounts (`adapters.peers.PeerAmount`) read exactly as the wire kit's
DecimalString reads them: of any JSON value, the same accepted, the same Decimals given."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from billing_common.wire import DecimalString
from invoice_service.adapters.peers import PeerAmount


class _Wire(BaseModel):
    amount: DecimalString


class _Peer(BaseModel):
    amount: PeerAmount


def _read(model: type[BaseModel], value: Any) -> tuple[str, str] | None:
    """(str, repr) of the Decimal read, or None when refused."""
    try:
        amount = model.model_validate({"amount": value}).amount  # type: ignore[attr-defined]
    except ValidationError:
        return None
    assert isinstance(amount, Decimal)
    return str(amount), repr(amount)


amounts = st.from_regex(r"\A[0-9]{1,14}(\.[0-9]{0,13})?\Z")
near_amounts = st.builds(
    lambda text, junk, where: text[:where] + junk + text[where:],
    amounts,
    st.sampled_from(["-", "+", " ", "\n", "e", "E5", "_", ",", "٣", "NaN", "."]),
    st.integers(0, 16),
)
# What a JSON answer can hold there (a peer's body is parsed JSON, never a Decimal).
other_values = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
)


@settings(max_examples=600)
@given(st.one_of(amounts, near_amounts, other_values))
def test_peer_amounts_read_as_decimal_string_reads_them(value: Any) -> None:
    assert _read(_Peer, value) == _read(_Wire, value)


def test_the_edges_of_the_amount_range() -> None:
    for text in ("0", "0.00", "1000000000000", "1000000000000.000000000000", "999999999999.99"):
        assert _read(_Peer, text) == _read(_Wire, text) is not None
    for text in ("1000000000000.01", "9999999999999", "1.0000000000000", "-0.00", "1e3", ""):
        assert _read(_Peer, text) is _read(_Wire, text) is None
