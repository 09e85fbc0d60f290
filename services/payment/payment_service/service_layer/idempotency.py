"""Idempotency-Keys of payments and refunds: the request fingerprint and the replay lookup,
and the keys this service sends to a gateway."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from billing_common.idempotency import request_fingerprint
from billing_common.money import format_amount
from payment_service.domain.errors import IdempotencyKeyReused
from payment_service.service_layer.ports import PaymentRepository


def normalised(amount: Decimal | None) -> str | None:
    return None if amount is None else format_amount(amount.normalize())


@dataclass(frozen=True, slots=True)
class RequestHash:
    """A request's fingerprint (the kernel's, stored with a new key) and the one this service
    stored before it used the kernel's (JSON with spaces): a request retried across the
    upgrade is still a replay, not a 409 that could make a client pay under a new key."""

    value: str
    earlier: str

    def matches(self, stored: str) -> bool:
        return stored in (self.value, self.earlier)


def request_hash(operation: str, fields: Mapping[str, str | None]) -> RequestHash:
    """Fingerprint of a request's meaning (not its bytes): "10.0" and "10.00" are the same."""
    canonical = {"operation": operation, **fields}
    earlier = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()
    return RequestHash(request_fingerprint(canonical), earlier)


async def replayed(
    repo: PaymentRepository, key: str, operation: str, fingerprint: RequestHash
) -> str | None:
    """The resource an earlier request with this key created, or None if the key is new."""
    record = await repo.idempotency_record(key)
    if record is None:
        return None
    if record.operation != operation or not fingerprint.matches(record.request_hash):
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different request; "
            "use a new key for a new request",
            first_used_at=record.created_at.isoformat(),
        )
    return record.resource_id


def gateway_idempotency_key(kind: str, resource_id: str) -> str:
    """Keys sent to the gateway derive from our ids: unique across tenants (one gateway
    account serves them all) and the same on every retry of one payment or refund."""
    return f"billing-{kind}-{resource_id}"
