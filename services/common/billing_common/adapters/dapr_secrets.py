"""Dapr-runtime secrets: the SecretStore port on a Dapr secret store.

`get_secret(name)` reads the secret `name` and returns its key `name`: on Kubernetes
(`secretstores.kubernetes`) that is the Secret `jwt-signing-key` with the value under the key
`jwt-signing-key`, as the chart creates them; a `secretstores.local.file` store (`dapr run`)
answers a top-level entry the same way. Values are cached for `cache_seconds` so start-up
and per-request reads do not each cost a sidecar round trip, and a rotated secret is picked up
within that time.

A secret that does not exist is None, like a missing variable in the env store. Dapr reports it
as an error (NOT_FOUND, or INTERNAL with the store's "not found" message, depending on the store
and version), so those are told apart from the sidecar being unreachable, which raises: a
service must not start as if an optional secret were absent when it could not look.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc

from billing_common.adapters.dapr_sidecar import (
    DaprSidecar,
    DaprUnavailable,
    describe,
    grpc_status,
)


class DaprSecretStore:
    def __init__(
        self,
        sidecar: DaprSidecar,
        store_name: str,
        *,
        cache_seconds: float = 30.0,
        timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sidecar = sidecar
        self._store = store_name
        self._cache_seconds = cache_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def get_secret(self, name: str) -> str | None:
        cached = self._cache.get(name)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        value = await self._fetch(name)
        self._cache[name] = (self._clock() + self._cache_seconds, value)
        return value

    async def _fetch(self, name: str) -> str | None:
        # Outside the timeout: at start-up the first read waits for the sidecar to come up
        # (DAPR_HEALTH_TIMEOUT), as the SDK's own client would, instead of crash-looping.
        client = await self._sidecar.client()
        try:
            async with asyncio.timeout(self._timeout):
                response = await client.get_secret(self._store, name)
        except TimeoutError as exc:
            raise DaprUnavailable(
                f"secret store {self._store} did not answer within {self._timeout}s"
            ) from exc
        except Exception as exc:  # classified below, never swallowed
            if _not_found(exc):
                return None
            raise DaprUnavailable(
                f"secret store {self._store} refused {name!r}: {describe(exc)}"
            ) from exc
        value = response.secret.get(name)
        return value or None


def _not_found(exc: BaseException) -> bool:
    code = grpc_status(exc)
    if code == grpc.StatusCode.NOT_FOUND:
        return True
    return code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) and (
        "not found" in str(exc).lower() or "not found" in _details(exc).lower()
    )


def _details(exc: BaseException) -> str:
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, grpc.aio.AioRpcError):
            return current.details() or ""
        current = current.__cause__
    return ""
