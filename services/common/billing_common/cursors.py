"""The one page cursor of every service: a keyset position (the last item's sort key, e.g.
its created_at and id) as an opaque URL-safe string, base64url of a compact JSON array.

Clients pass `next_cursor` back as is. A cursor that does not decode to a position of the
expected shape (altered, from another list, or around a timestamp with no UTC value) is
InvalidCursor: 400 `/problems/invalid-cursor`, as for any malformed query parameter.
No web framework: use cases may build and read cursors.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from billing_common.errors import DomainError
from billing_common.wire import parse_aware_timestamp

CursorPart = str | datetime


class InvalidCursor(DomainError):
    status = 400

    def __init__(self, message: str = "the cursor is not one this service handed out") -> None:
        super().__init__(message)


def encode_cursor(*position: CursorPart) -> str:
    """The opaque cursor of `position`; datetimes are kept with their offset."""
    parts = [p.isoformat() if isinstance(p, datetime) else p for p in position]
    raw = json.dumps(parts, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parts(cursor: str, arity: int) -> list[str]:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
        parts = json.loads(raw)
    except (binascii.Error, UnicodeError, ValueError) as exc:
        raise InvalidCursor from exc
    if (
        not isinstance(parts, list)
        or len(parts) != arity
        or not all(isinstance(p, str) for p in parts)
    ):
        raise InvalidCursor
    return parts


def decode_key(cursor: str) -> str:
    """The position of a list ordered by one unique text key (e.g. a coupon code)."""
    (key,) = _parts(cursor, 1)
    return key


def decode_timestamp_and_id(cursor: str) -> tuple[datetime, str]:
    """The position of a list ordered by (created_at, id): the timestamp in UTC."""
    moment, item_id = _parts(cursor, 2)
    try:
        return parse_aware_timestamp(moment), item_id
    except ValueError as exc:
        raise InvalidCursor from exc
