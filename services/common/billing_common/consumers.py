"""A service's event subscriptions: event type -> the use case that handles it.

A service's `entrypoints/consumers.py` only lists its subscriptions and calls
`subscribe_use_cases` with its dependencies; what every delivery gets besides (one log line
and metric per event, the trace context) is `ServiceContext.subscribe`'s, and what makes a
redelivery harmless is the use case's `uow.claim_event` (the inbox, in the transaction of
the effect, so it cannot be done out here).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

from billing_common.events import CloudEvent
from billing_common.ports import EventHandler

D = TypeVar("D")

# A use case that handles an event: `async def on_x(event, deps) -> None`.
EventUseCase = Callable[[CloudEvent, D], Awaitable[None]]


class Subscriber(Protocol):
    """Where subscriptions go (billing_common.runtime.ServiceContext)."""

    def subscribe(
        self, event_type: str, handler: EventHandler, *, lane: str | None = None
    ) -> None: ...


def subscribe_use_cases(
    subscriber: Subscriber,
    use_cases: Mapping[str, EventUseCase[D]],
    deps: D,
    *,
    lanes: Mapping[str, str] | None = None,
) -> None:
    """Subscribe each use case to its event type, with `deps`; the types in `lanes` in
    their lane (billing_common.ports.EventBus.subscribe). Call before the context starts:
    the bus binds its queues at start."""
    for event_type, use_case in use_cases.items():
        lane = lanes.get(event_type) if lanes else None
        subscriber.subscribe(event_type, _bound(use_case, deps), lane=lane)


def _bound(use_case: EventUseCase[D], deps: D) -> EventHandler:
    async def handle(event: CloudEvent) -> None:
        await use_case(event, deps)

    handle.__name__ = use_case.__name__  # what the logs and the bus name the handler by
    return handle
