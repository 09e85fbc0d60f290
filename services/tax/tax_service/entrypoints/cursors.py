"""The opaque cursor of the calculation history's pages: a calculation's position
(created_at, id) in the kernel's cursor (billing_common.cursors). A cursor that does not
decode is InvalidCursor (400)."""

from __future__ import annotations

from billing_common import cursors
from tax_service.domain.model import TaxCalculation
from tax_service.service_layer.ports import CalculationPosition


def encode_cursor(calculation: TaxCalculation) -> str:
    return cursors.encode_cursor(calculation.created_at, calculation.id)


def decode_cursor(cursor: str) -> CalculationPosition:
    return cursors.decode_timestamp_and_id(cursor)
