"""Ports: the only ways a service talks to the world outside its own database.

A runtime (embedded, direct, dapr) is a choice of adapters for these protocols, made once in
each service's composition root. Use cases and handlers never know which one they got.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from billing_common.events import CloudEvent
from billing_common.events import PermanentEventError as PermanentEventError

EventHandler = Callable[[CloudEvent], Awaitable[None]]
"""Handles one event. Returning means done (ack); raising means redeliver later.
Handlers must be idempotent: delivery is at least once."""


@runtime_checkable
class EventBus(Protocol):
    async def publish(self, event: CloudEvent) -> None:
        """Return only once the bus has accepted the event durably (or raise)."""

    def subscribe(
        self, consumer: str, event_type: str, handler: EventHandler, *, lane: str | None = None
    ) -> None:
        """Register `handler` for `event_type` on behalf of `consumer` (a service name).
        Each consumer gets its own copy of each event. Call before `start`. A `lane` (one
        word) asks for the type to be delivered apart from the consumer's other types, so it
        never waits behind them; a bus that never queues one type behind another ignores
        it. Only types whose order relative to the others does not matter go in a lane."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class PeerUnavailable(Exception):
    """The peer service could not be reached or answered 5xx: the caller returns 503."""

    def __init__(self, app_id: str, reason: str) -> None:
        super().__init__(f"{app_id} is unavailable: {reason}")
        self.app_id = app_id
        self.reason = reason


@dataclass(frozen=True)
class InvocationResponse:
    status_code: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status_code < 300


@runtime_checkable
class ServiceInvoker(Protocol):
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
        """Call `method path` on the service `app_id` with HTTP semantics.

        4xx answers come back as responses; connection failures, timeouts and 5xx raise
        PeerUnavailable. Only `idempotent` calls may be retried by the adapter."""

    async def close(self) -> None: ...


@dataclass(frozen=True)
class StateItem:
    key: str
    value: Any
    etag: str


class EtagMismatch(Exception):
    """A conditional state write lost a race: someone changed the key since it was read."""


@runtime_checkable
class KeyValueStore(Protocol):
    async def get(self, key: str) -> StateItem | None: ...

    async def set(
        self,
        key: str,
        value: Any,
        *,
        etag: str | None = None,
        ttl_seconds: int | None = None,
    ) -> str:
        """Store a JSON-serialisable value; with `etag`, only if unchanged. Returns new etag."""

    async def delete(self, key: str, *, etag: str | None = None) -> None: ...


@runtime_checkable
class SecretStore(Protocol):
    async def get_secret(self, name: str) -> str | None: ...
