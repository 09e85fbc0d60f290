"""CloudEvents 1.0 envelope and the registry of billing event types.

Every event type has exactly one data schema (see `event_schemas`). Producers build envelopes
with `new_event`; consumers read the data with `CloudEvent.parse(schema)`, validated against
the schema registered for the event's type.
"""

from __future__ import annotations

import builtins
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from billing_common.tracing import current_traceparent

SPEC_VERSION = "1.0"

SchemaT = TypeVar("SchemaT", bound=BaseModel)


class PermanentEventError(Exception):
    """Raised by a handler for an event that can never succeed (bad schema, unknown
    reference). The bus dead-letters it at once instead of retrying."""


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 structured-mode envelope (JSON format)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    specversion: str = SPEC_VERSION
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str | None = None
    datacontenttype: str = "application/json"
    data: dict[str, Any] = Field(default_factory=dict)
    # W3C trace context extension (CloudEvents distributed-tracing extension).
    traceparent: str | None = None
    # Tenant the event belongs to: consumers never apply an event to another tenant's data.
    tenant: str | None = None

    @field_validator("specversion")
    @classmethod
    def _only_1_0(cls, value: str) -> str:
        if value != SPEC_VERSION:
            raise ValueError(f"unsupported CloudEvents specversion {value!r}")
        return value

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> CloudEvent:
        return cls.model_validate_json(raw)

    def data_as(self, schema: builtins.type[SchemaT]) -> SchemaT:
        return schema.model_validate(self.data)

    def parse(self, schema: builtins.type[SchemaT]) -> SchemaT:
        """The event's data as `schema`, which must be the schema registered for its type
        (a consumer reading an event as another type's data is a bug: TypeError). Data that
        does not match the schema can never be applied, however often it is redelivered:
        PermanentEventError, which the bus dead-letters."""
        registered = schema_for(self.type)
        if registered is not schema:
            raise TypeError(f"{self.type} carries {registered.__name__}, not {schema.__name__}")
        try:
            return schema.model_validate(self.data)
        except ValidationError as exc:
            raise PermanentEventError(
                f"{self.type} {self.id} does not match {schema.__name__}: "
                f"{exc.error_count()} error(s)"
            ) from exc


def stored_envelope(raw: str | bytes) -> tuple[str, str, datetime, str | None]:
    """(id, type, time, traceparent) of an envelope as `CloudEvent.to_json` wrote it, read
    without building the envelope: what a bus puts beside the body it sends as it is (the
    outbox relay's publish). ValueError if those fields are not there as an envelope has
    them."""
    fields = pydantic_core.from_json(raw)
    if not isinstance(fields, dict):
        raise ValueError("a CloudEvent is a JSON object")
    event_id, event_type = fields.get("id"), fields.get("type")
    if not (isinstance(event_id, str) and event_id and isinstance(event_type, str) and event_type):
        raise ValueError("a CloudEvent has a non-empty id and type")
    time = fields.get("time")
    traceparent = fields.get("traceparent")
    return (
        event_id,
        event_type,
        datetime.now(UTC) if time is None else datetime.fromisoformat(time),
        traceparent if isinstance(traceparent, str) and traceparent else None,
    )


_SCHEMAS: dict[str, type[BaseModel]] = {}


def register_event_type(event_type: str, schema: type[BaseModel]) -> None:
    existing = _SCHEMAS.get(event_type)
    if existing is not None and existing is not schema:
        raise ValueError(f"event type {event_type} already has a schema")
    _SCHEMAS[event_type] = schema


def schema_for(event_type: str) -> type[BaseModel]:
    try:
        return _SCHEMAS[event_type]
    except KeyError:
        raise LookupError(f"no schema registered for event type {event_type}") from None


def registered_event_types() -> list[str]:
    return sorted(_SCHEMAS)


def new_event(
    *,
    source: str,
    event_type: str,
    data: BaseModel,
    subject: str | None = None,
    tenant: str | None = None,
) -> CloudEvent:
    """Build an envelope, validating `data` against the type's registered schema."""
    schema = schema_for(event_type)
    if not isinstance(data, schema):
        raise TypeError(f"{event_type} carries {schema.__name__}, not {type(data).__name__}")
    return CloudEvent(
        source=source,
        type=event_type,
        subject=subject,
        data=data.model_dump(mode="json"),
        traceparent=current_traceparent(),
        tenant=tenant,
    )
