"""The connection to the Dapr sidecar that the dapr runtime's adapters share.

Where the sidecar is comes from the variables daprd's injector (or `dapr run`) sets, read by
the Dapr SDK's own settings: DAPR_HTTP_PORT / DAPR_HTTP_ENDPOINT, DAPR_GRPC_PORT /
DAPR_GRPC_ENDPOINT, DAPR_API_TOKEN, DAPR_HEALTH_TIMEOUT.

The SDK's asyncio client checks the sidecar's health in its constructor with a *blocking*
urllib loop (up to DAPR_HEALTH_TIMEOUT, 60 s by default) that would freeze the event loop while
the sidecar starts. So we wait for `/v1.0/healthz/outbound` asynchronously first; once it has
answered, the constructor's own probe returns after one local round trip. The client is made
on first use (the secret store is read before the service starts its bus) and shared by the
bus, the state store and the secret store; `close` drops it and the next use reconnects.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
from dapr.aio.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.http.helpers import get_api_url
from dapr.conf import settings as dapr_settings
from loguru import logger

API_TOKEN_HEADER = "dapr-api-token"


class DaprUnavailable(ConnectionError):
    """The sidecar could not be reached, did not answer in time, or refused the call."""


def sidecar_http_url() -> str:
    """The sidecar's HTTP API base, e.g. http://127.0.0.1:3500/v1.0."""
    return get_api_url().rstrip("/")


def api_token() -> str | None:
    """The token the sidecar expects from the app (DAPR_API_TOKEN), if it expects one."""
    token = dapr_settings.DAPR_API_TOKEN
    return str(token) if token else None


def grpc_status(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC status behind an SDK error. The SDK is not consistent: some calls raise
    DaprGrpcError, some the raw AioRpcError, and `save_state` a DaprInternalError that keeps
    only the message, with the AioRpcError as its cause."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, DaprGrpcError):
            code = current.code()  # type: ignore[no-untyped-call]
            return code if isinstance(code, grpc.StatusCode) else None
        if isinstance(current, grpc.aio.AioRpcError):
            return current.code()
        current = current.__cause__
    return None


def describe(exc: BaseException) -> str:
    detail = str(exc)
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class DaprSidecar:
    def __init__(
        self,
        *,
        grpc_address: str | None = None,
        health_timeout_seconds: float | None = None,
        health_poll_seconds: float = 0.25,
    ) -> None:
        # None: the SDK's settings, read when connecting (they follow the environment). The
        # HTTP endpoint always comes from the settings: the SDK's constructor probes it too.
        self._grpc_address = grpc_address
        self._health_timeout = health_timeout_seconds
        self._health_poll = health_poll_seconds
        self._client: DaprClient | None = None
        self._lock = asyncio.Lock()

    @property
    def http_url(self) -> str:
        return sidecar_http_url()

    async def client(self) -> DaprClient:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                await self.wait_until_ready()
                self._client = DaprClient(address=self._grpc_address)
                logger.info("connected to the Dapr sidecar at {}", self.http_url)
        return self._client

    async def wait_until_ready(self) -> None:
        """Poll the sidecar's outbound health endpoint until it answers 2xx."""
        timeout = (
            self._health_timeout
            if self._health_timeout is not None
            else float(dapr_settings.DAPR_HEALTH_TIMEOUT)
        )
        url = f"{self.http_url}/healthz/outbound"
        headers = {API_TOKEN_HEADER: token} if (token := api_token()) else {}
        deadline = time.monotonic() + timeout
        last_error = "no answer"
        async with httpx.AsyncClient(timeout=max(self._health_poll, 1.0)) as http:
            while True:
                try:
                    response = await http.get(url, headers=headers)
                    if response.is_success:
                        return
                    last_error = f"answered {response.status_code}"
                except httpx.HTTPError as exc:
                    last_error = describe(exc)
                if time.monotonic() >= deadline:
                    raise DaprUnavailable(
                        f"the Dapr sidecar at {url} is not ready after {timeout:.0f}s: {last_error}"
                    )
                await asyncio.sleep(self._health_poll)

    async def close(self) -> None:
        async with self._lock:
            client, self._client = self._client, None
        if client is not None:
            await client.close()  # type: ignore[no-untyped-call]
