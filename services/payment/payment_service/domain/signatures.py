"""Webhook signatures: HMAC-SHA256 over the timestamp and the raw body, with a replay window.

Header (ours: `Billing-Signature`; Stripe's `Stripe-Signature` uses the same scheme)::

    t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{raw body}")>

Several `v1=` entries may appear (secret rotation); any one matching is enough. Entries of
other schemes (Stripe's `v0`) are ignored. The timestamp is inside the signature, so an old
request cannot be replayed with a fresh timestamp.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from payment_service.domain.errors import (
    InvalidSignatureHeader,
    SignatureExpired,
    SignatureMismatch,
)

SCHEME = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
_MAX_HEADER_LENGTH = 4096
_HEX_DIGITS = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    timestamp: int
    signatures: tuple[str, ...]


def compute_signature(secret: str, timestamp: int, payload: bytes) -> str:
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, payload: bytes, timestamp: int) -> str:
    """The header value for `payload` signed at `timestamp`."""
    return f"t={timestamp},{SCHEME}={compute_signature(secret, timestamp, payload)}"


def parse_header(header: str | None) -> ParsedSignature:
    if not header:
        raise InvalidSignatureHeader("the webhook signature header is missing")
    if len(header) > _MAX_HEADER_LENGTH:
        raise InvalidSignatureHeader("the webhook signature header is too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise InvalidSignatureHeader(f"malformed signature element {part.strip()!r}")
        if key == "t":
            if not value.isascii() or not value.isdigit() or len(value) > 12:
                raise InvalidSignatureHeader("the signature timestamp must be unix seconds")
            timestamp = int(value)
        elif key == SCHEME:
            if len(value) != 64 or not set(value) <= _HEX_DIGITS:
                raise InvalidSignatureHeader("a v1 signature must be 64 lowercase hex digits")
            signatures.append(value)
    if timestamp is None:
        raise InvalidSignatureHeader("the signature header has no timestamp (t=...)")
    if not signatures:
        raise InvalidSignatureHeader("the signature header has no v1 signature")
    return ParsedSignature(timestamp, tuple(signatures))


def verify(
    header: str | None,
    payload: bytes,
    secrets: Sequence[str],
    *,
    now: int,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> int:
    """Check `header` against the raw `payload`; return the signed timestamp.

    Comparison is constant-time. A valid signature whose timestamp is more than
    `tolerance_seconds` away from `now` (in the past or the future) is a replay."""
    parsed = parse_header(header)
    expected = [compute_signature(secret, parsed.timestamp, payload) for secret in secrets]
    # Compare every pair (no early exit) so timing does not reveal which part matched.
    matched = False
    for candidate in parsed.signatures:
        for wanted in expected:
            matched |= hmac.compare_digest(candidate, wanted)
    if not matched:
        raise SignatureMismatch("the webhook signature does not match the body")
    if abs(now - parsed.timestamp) > tolerance_seconds:
        raise SignatureExpired(
            f"the webhook was signed at {parsed.timestamp}, outside the "
            f"{tolerance_seconds} s replay window"
        )
    return parsed.timestamp
