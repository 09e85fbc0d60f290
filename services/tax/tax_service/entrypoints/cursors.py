"""The opaque cursor of the calculation history's pages: a calculation's position
(created_at, id), base64url-encoded JSON. A cursor that does not decode is InvalidCursor (400)."""

from __future__ import annotations

import base64
import binascii
import json

from billing_common.wire import parse_aware_timestamp
from tax_service.domain.errors import InvalidCursor
from tax_service.domain.model import TaxCalculation
from tax_service.service_layer.ports import CalculationPosition


def encode_cursor(calculation: TaxCalculation) -> str:
    raw = json.dumps([calculation.created_at.isoformat(), calculation.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> CalculationPosition:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, calculation_id = json.loads(raw)
        when = parse_aware_timestamp(created)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidCursor from exc
    if not isinstance(calculation_id, str):
        raise InvalidCursor
    return when, calculation_id
