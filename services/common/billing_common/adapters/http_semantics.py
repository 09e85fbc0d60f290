"""What every HTTP-shaped invoker shares: outgoing headers and how answers are judged."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from billing_common.ports import InvocationResponse, PeerUnavailable
from billing_common.tracing import child_traceparent, current_request_id, current_traceparent


def build_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Caller's headers plus trace context, so one trace spans every hop."""
    merged = {"accept": "application/json"}
    traceparent = current_traceparent()
    if traceparent:
        merged["traceparent"] = child_traceparent(traceparent)
    request_id = current_request_id()
    if request_id:
        merged["x-request-id"] = request_id
    merged.update({k.lower(): v for k, v in (headers or {}).items()})
    return merged


def to_response(app_id: str, response: httpx.Response) -> InvocationResponse:
    """4xx is the peer's answer; 5xx means the peer cannot serve us right now."""
    if response.status_code >= 500:
        raise PeerUnavailable(app_id, f"answered {response.status_code}")
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = response.text
    return InvocationResponse(response.status_code, body, dict(response.headers))
