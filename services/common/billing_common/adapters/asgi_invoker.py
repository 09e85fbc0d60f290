"""Embedded service invocation: HTTP semantics, delivered straight to the peer's ASGI app in
the same process. Same headers, status codes and JSON bodies as a network call, no socket."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from billing_common.adapters.http_semantics import build_headers, to_response
from billing_common.ports import InvocationResponse, PeerUnavailable

ASGIApp = Any


class AsgiServiceInvoker:
    def __init__(self, apps: Mapping[str, ASGIApp], *, timeout_seconds: float = 5.0) -> None:
        # `apps` is read at call time so the launcher can register peers built later.
        self._apps = apps
        self._timeout = timeout_seconds
        self._clients: dict[str, httpx.AsyncClient] = {}

    def _client(self, app_id: str) -> httpx.AsyncClient:
        client = self._clients.get(app_id)
        if client is None:
            app = self._apps.get(app_id)
            if app is None:
                raise PeerUnavailable(app_id, "no such service in this process")
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                base_url=f"http://{app_id}",
                timeout=self._timeout,
            )
            self._clients[app_id] = client
        return client

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
        client = self._client(app_id)
        try:
            response = await client.request(method, path, json=json, headers=build_headers(headers))
        except httpx.HTTPError as exc:
            raise PeerUnavailable(app_id, str(exc) or type(exc).__name__) from exc
        return to_response(app_id, response.status_code, response.content, response.headers)

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
