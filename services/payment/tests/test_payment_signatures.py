"""Webhook signatures: HMAC-SHA256 over "{t}.{body}", constant-time, 300 s replay window."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from payment_service.domain.errors import (
    InvalidSignatureHeader,
    SignatureExpired,
    SignatureMismatch,
)
from payment_service.domain.signatures import compute_signature, parse_header, sign, verify

SECRET = "whsec_test"
NOW = 1_800_000_000


def test_matches_the_documented_scheme() -> None:
    body = b'{"id":"evt_1"}'
    expected = hmac.new(SECRET.encode(), b"1800000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body, NOW) == f"t=1800000000,v1={expected}"
    assert verify(sign(SECRET, body, NOW), body, [SECRET], now=NOW) == NOW


def test_stripe_style_header_with_several_signatures_and_v0() -> None:
    body = b"{}"
    good = compute_signature(SECRET, NOW, body)
    header = f"t={NOW},v1={'0' * 64},v1={good},v0=deadbeef"
    assert verify(header, body, [SECRET], now=NOW) == NOW


def test_rotated_secrets_both_verify() -> None:
    body = b"{}"
    assert verify(sign("old", body, NOW), body, ["new", "old"], now=NOW) == NOW


@pytest.mark.parametrize("offset", [301, -301, 10_000])
def test_outside_the_replay_window_is_rejected(offset: int) -> None:
    body = b"{}"
    with pytest.raises(SignatureExpired):
        verify(sign(SECRET, body, NOW - offset), body, [SECRET], now=NOW)


@pytest.mark.parametrize("offset", [300, -300, 0])
def test_inside_the_replay_window_is_accepted(offset: int) -> None:
    body = b"{}"
    assert verify(sign(SECRET, body, NOW - offset), body, [SECRET], now=NOW) == NOW - offset


def test_a_fresh_timestamp_on_an_old_signature_does_not_help() -> None:
    body = b"{}"
    old = compute_signature(SECRET, NOW - 1000, body)
    with pytest.raises(SignatureMismatch):
        verify(f"t={NOW},v1={old}", body, [SECRET], now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "v1=" + "a" * 64,
        f"t={NOW}",
        f"t=abc,v1={'a' * 64}",
        f"t={NOW},v1=xyz",
        f"t={NOW},v1={'A' * 64}",
        "t=" + "9" * 5000,
    ],
)
def test_malformed_headers(header: str | None) -> None:
    with pytest.raises(InvalidSignatureHeader):
        parse_header(header)


def test_wrong_secret() -> None:
    with pytest.raises(SignatureMismatch):
        verify(sign("other", b"{}", NOW), b"{}", [SECRET], now=NOW)


@settings(max_examples=200, deadline=None)
@given(
    body=st.binary(min_size=1, max_size=512),
    secret=st.text(min_size=1, max_size=40),
    data=st.data(),
)
def test_verify_of_sign_holds_and_any_flipped_byte_breaks_it(
    body: bytes, secret: str, data: st.DataObject
) -> None:
    header = sign(secret, body, NOW)
    assert verify(header, body, [secret], now=NOW) == NOW
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=7))
    tampered = bytearray(body)
    tampered[index] ^= 1 << bit
    with pytest.raises(SignatureMismatch):
        verify(header, bytes(tampered), [secret], now=NOW)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=256), data=st.data())
def test_any_flipped_signature_digit_breaks_it(body: bytes, data: st.DataObject) -> None:
    signature = compute_signature(SECRET, NOW, body)
    index = data.draw(st.integers(min_value=0, max_value=63))
    replacement = data.draw(
        st.sampled_from([c for c in "0123456789abcdef" if c != signature[index]])
    )
    forged = signature[:index] + replacement + signature[index + 1 :]
    with pytest.raises(SignatureMismatch):
        verify(f"t={NOW},v1={forged}", body, [SECRET], now=NOW)
