"""Dapr-runtime service invocation: HTTP through the sidecar's invoke API,
`<sidecar>/v1.0/invoke/<app-id>/method/<path>`.

Same semantics as the other invokers (`http_semantics`): 4xx answers come back as responses;
connection failures, timeouts and 5xx (the peer's own, or the sidecar's when it cannot reach
the peer or its circuit breaker is open) raise PeerUnavailable. No retries and no breaker
here: the sidecar applies the Resiliency policy (`invocationRetry`, one breaker per app id),
and a second layer would multiply the attempts. The timeout therefore bounds the whole call,
the sidecar's retries included. mTLS, access control and tracing spans are the sidecar's;
we forward the caller's trace context so the trace spans every hop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from billing_common.adapters.dapr_sidecar import (
    API_TOKEN_HEADER,
    api_token,
    describe,
    sidecar_http_url,
)
from billing_common.adapters.http_semantics import build_headers, to_response
from billing_common.ports import InvocationResponse, PeerUnavailable


class DaprServiceInvoker:
    def __init__(
        self,
        *,
        sidecar_url: str | None = None,
        token: str | None = None,
        timeout_seconds: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        # None: DAPR_HTTP_ENDPOINT / DAPR_HTTP_PORT and DAPR_API_TOKEN, as the SDK reads them.
        self._sidecar_url = sidecar_url
        self._token = token if token is not None else api_token()
        self._timeout = timeout_seconds
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def url(self, app_id: str, path: str) -> str:
        base = (self._sidecar_url or sidecar_http_url()).rstrip("/")
        return f"{base}/invoke/{quote(app_id, safe='')}/method/{path.lstrip('/')}"

    def _http(self) -> httpx.AsyncClient:
        # Made on first use (and again after close) so a restarted lifespan can call again.
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout),
                transport=self._transport,
                follow_redirects=False,
            )
        return self._client

    async def invoke(
        self,
        app_id: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = False,
    ) -> InvocationResponse:
        outgoing = build_headers(headers)
        if self._token:
            outgoing[API_TOKEN_HEADER] = self._token
        try:
            response = await self._http().request(
                method.upper(), self.url(app_id, path), json=json, headers=outgoing
            )
        except httpx.HTTPError as exc:
            raise PeerUnavailable(app_id, f"via Dapr: {describe(exc)}") from exc
        return to_response(app_id, response)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
