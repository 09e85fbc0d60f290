"""Reading consumed CloudEvents: their tenant and time (their data: `CloudEvent.parse`). An
event that can never apply raises PermanentEventError (dead-lettered, never retried forever)."""

from __future__ import annotations

from datetime import UTC, datetime

from billing_common.events import CloudEvent
from billing_common.ports import PermanentEventError

# The consumer name of this service's inbox claims.
CONSUMER = "invoice"


def tenant_of(event: CloudEvent) -> str:
    if not event.tenant:
        raise PermanentEventError(f"event {event.id} has no tenant")
    return event.tenant


def event_time(event: CloudEvent) -> datetime:
    return event.time if event.time.tzinfo else event.time.replace(tzinfo=UTC)
