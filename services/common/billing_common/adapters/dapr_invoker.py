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

from billing_common.adapters.dapr_sidecar import API_TOKEN_HEADER, api_token, sidecar_http_url
from billing_common.adapters.http_semantics import (
    BrokenAnswer,
    PooledHttpClient,
    TransportFailure,
    build_headers,
    to_response,
)
from billing_common.ports import InvocationResponse, PeerUnavailable


class DaprServiceInvoker:
    def __init__(
        self,
        *,
        sidecar_url: str | None = None,
        token: str | None = None,
        timeout_seconds: float = 5.0,
    ) -> None:
        # None: DAPR_HTTP_ENDPOINT / DAPR_HTTP_PORT and DAPR_API_TOKEN, as the SDK reads them.
        self._sidecar_url = sidecar_url
        self._token = token if token is not None else api_token()
        self._client = PooledHttpClient(timeout_seconds=timeout_seconds)
        self._method_prefixes: dict[str, str] = {}  # app id -> `<sidecar>/invoke/<id>/method/`

    def url(self, app_id: str, path: str) -> str:
        prefix = self._method_prefixes.get(app_id)
        if prefix is None:
            # Read at the first call, not per call: the SDK's settings read the environment
            # on every access (~25 us of a ~170 us call), and the sidecar does not move while
            # the process runs. App ids are the few peers the code names.
            base = (self._sidecar_url or sidecar_http_url()).rstrip("/")
            prefix = f"{base}/invoke/{quote(app_id, safe='')}/method/"
            self._method_prefixes[app_id] = prefix
        return prefix + path.lstrip("/")

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
            response = await self._client.request(
                method.upper(), self.url(app_id, path), json=json, headers=outgoing
            )
        except (TransportFailure, BrokenAnswer) as exc:
            raise PeerUnavailable(app_id, f"via Dapr: {exc}") from exc
        return to_response(app_id, response.status, response.content, response.headers)

    async def close(self) -> None:
        await self._client.close()
