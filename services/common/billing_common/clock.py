"""The one clock of the platform: every "now" a service stores or compares comes from here."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current instant, timezone-aware in UTC: a naive time would be read as local time by
    PostgreSQL's timestamptz and cannot be compared with the aware ones events carry."""
    return datetime.now(UTC)
