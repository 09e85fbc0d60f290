"""Dapr-runtime key/value state: the KeyValueStore port on a Dapr state store (the chart's
`statestore`, a `state.postgresql` v2), through the sidecar's gRPC API.

Values are stored as JSON. Conditional writes and deletes send the etag with first-write
concurrency; the sidecar answers a stale etag with gRPC ABORTED, and one the store cannot
parse (PostgreSQL etags are numbers) with INVALID_ARGUMENT: neither can be the key's current
version, so both are EtagMismatch, as in the SQL store. Without an etag a write is an upsert
(last-write). `ttl_seconds` becomes the `ttlInSeconds` metadata, which the store enforces.
Dapr prefixes keys with the app id, so services never see each other's keys.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc
from dapr.clients.grpc._state import Concurrency, StateOptions

from billing_common.adapters.dapr_sidecar import (
    DaprSidecar,
    DaprUnavailable,
    describe,
    grpc_status,
)
from billing_common.ports import EtagMismatch, StateItem

T = TypeVar("T")

_STALE_ETAG = (grpc.StatusCode.ABORTED, grpc.StatusCode.INVALID_ARGUMENT)


class DaprStateStore:
    def __init__(
        self, sidecar: DaprSidecar, store_name: str, *, timeout_seconds: float = 5.0
    ) -> None:
        self._sidecar = sidecar
        self._store = store_name
        self._timeout = timeout_seconds

    async def get(self, key: str) -> StateItem | None:
        client = await self._sidecar.client()
        response = await self._call(key, None, client.get_state(self._store, key))
        if not response.data:  # Dapr answers a missing key with no data and no etag
            return None
        return StateItem(key, json.loads(response.data), response.etag)

    async def set(
        self, key: str, value: Any, *, etag: str | None = None, ttl_seconds: int | None = None
    ) -> str:
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        metadata = {"ttlInSeconds": str(ttl_seconds)} if ttl_seconds else {}
        client = await self._sidecar.client()
        await self._call(
            key,
            etag,
            client.save_state(
                self._store,
                key,
                json.dumps(value),
                etag=etag,
                options=_options(etag),
                state_metadata=metadata,
            ),
        )
        # SaveState does not return the new etag: read it back. Another writer may have
        # written in between; then the etag we return is already stale and the caller's next
        # conditional write fails with EtagMismatch, which is the port's contract anyway.
        response = await self._call(key, None, client.get_state(self._store, key))
        return str(response.etag)

    async def delete(self, key: str, *, etag: str | None = None) -> None:
        client = await self._sidecar.client()
        await self._call(
            key, etag, client.delete_state(self._store, key, etag=etag, options=_options(etag))
        )

    async def _call(self, key: str, etag: str | None, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except TimeoutError as exc:
            raise DaprUnavailable(
                f"state store {self._store} did not answer within {self._timeout}s"
            ) from exc
        except Exception as exc:  # classified below, never swallowed
            if etag is not None and grpc_status(exc) in _STALE_ETAG:
                raise EtagMismatch(key) from exc
            raise DaprUnavailable(f"state store {self._store}: {describe(exc)}") from exc


def _options(etag: str | None) -> StateOptions | None:
    return StateOptions(concurrency=Concurrency.first_write) if etag is not None else None
