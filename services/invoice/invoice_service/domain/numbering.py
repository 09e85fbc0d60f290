"""Invoice numbers: gapless and sequential per (tenant, series), drawn at finalization.

Format: "<SERIES>-<sequence padded to 6 digits>", e.g. INV-000001. The counter never resets;
a yearly sequence is a yearly series (series "INV2026" gives INV2026-000001).
"""

from __future__ import annotations

import re
from typing import Final

from invoice_service.domain.errors import InvalidInvoice

SERIES_PATTERN: Final = re.compile(r"^[A-Z0-9][A-Z0-9-]{0,15}$")
DEFAULT_SERIES: Final = "INV"
SEQUENCE_DIGITS: Final = 6


def check_series(series: str) -> str:
    normalised = series.strip().upper()
    if not SERIES_PATTERN.fullmatch(normalised):
        raise InvalidInvoice(
            f"series {series!r} must be 1-16 characters: letters, digits and '-', "
            "starting with a letter or digit"
        )
    return normalised


def format_number(series: str, sequence: int) -> str:
    if sequence < 1:
        raise ValueError("invoice sequences start at 1")
    return f"{series}-{sequence:0{SEQUENCE_DIGITS}d}"
