"""Request-scoped trace context (W3C traceparent) carried into logs, events and calls."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

_traceparent: ContextVar[str | None] = ContextVar("traceparent", default=None)
_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
# The trace id of `_traceparent`, parsed once by `bind` (every log line reads it).
_trace_id: ContextVar[str | None] = ContextVar("trace_id", default=None)


def new_traceparent(trace_id: str | None = None) -> str:
    if trace_id:
        return f"00-{trace_id}-{secrets.token_hex(8)}-01"
    # A new trace: its id and its first span's from one draw of the random source.
    ids = secrets.token_hex(24)
    return f"00-{ids[:32]}-{ids[32:]}-01"


def parse_trace_id(traceparent: str | None) -> str | None:
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.strip().lower())
    return match.group(1) if match else None


def child_traceparent(traceparent: str | None) -> str:
    """Same trace, new span: what an outgoing call or a published event carries."""
    return new_traceparent(parse_trace_id(traceparent))


def current_traceparent() -> str | None:
    return _traceparent.get()


def current_trace_id() -> str | None:
    return _trace_id.get()


def current_request_id() -> str | None:
    return _request_id.get()


def bind(traceparent: str | None, request_id: str | None = None) -> None:
    """Set the trace context for the current task (a request or an event delivery)."""
    trace_id = parse_trace_id(traceparent)
    if trace_id is None:
        traceparent = new_traceparent()
        trace_id = traceparent[3:35]
    _traceparent.set(traceparent)
    _trace_id.set(trace_id)
    _request_id.set(request_id)
