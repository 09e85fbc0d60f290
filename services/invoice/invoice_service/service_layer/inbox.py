"""Reading consumed CloudEvents: their tenant, typed data and time. An event that can never
apply raises PermanentEventError (dead-lettered, never retried forever)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from billing_common.events import CloudEvent
from billing_common.ports import PermanentEventError

# The consumer name of this service's inbox claims.
CONSUMER = "invoice"

SchemaT = TypeVar("SchemaT", bound=BaseModel)


def tenant_of(event: CloudEvent) -> str:
    if not event.tenant:
        raise PermanentEventError(f"event {event.id} has no tenant")
    return event.tenant


def event_data(event: CloudEvent, schema: type[SchemaT]) -> SchemaT:
    try:
        return event.data_as(schema)
    except ValidationError as exc:
        raise PermanentEventError(f"event {event.id} does not match {schema.__name__}") from exc


def event_time(event: CloudEvent) -> datetime:
    return event.time if event.time.tzinfo else event.time.replace(tzinfo=UTC)
