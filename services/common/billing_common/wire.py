"""Wire types every service's request schemas share: timestamps a database can hold.

Python's datetime stops at years 1 and 9999, so an aware value such as
0001-01-01T00:00:00+14:00 parses but has no UTC value: converting it (which every
repository does) raises OverflowError, a 500. These types refuse it at the boundary (422).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime


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
