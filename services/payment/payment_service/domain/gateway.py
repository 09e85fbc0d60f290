"""The payment gateway port and the values that cross it.

Adapters: the deterministic sandbox (default) and Stripe PaymentIntents. Amounts cross as
Money; each adapter converts to what its provider expects (Stripe: integer minor units).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from billing_common.money import Money


class ChargeStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Accepted, settles later (3-D Secure, async methods): a webhook reports the outcome.
    PENDING = "pending"


@dataclass(frozen=True, slots=True)
class ChargeResult:
    status: ChargeStatus
    reference: str | None
    failure_code: str | None = None
    failure_message: str | None = None


@dataclass(frozen=True, slots=True)
class RefundResult:
    status: ChargeStatus
    reference: str | None
    failure_code: str | None = None
    failure_message: str | None = None


class GatewayUnavailable(Exception):
    """The gateway could not say what happened (timeout, 5xx, processing error). The call
    may be repeated with the same idempotency key; the gateway then does not charge twice."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WebhookKind(StrEnum):
    PAYMENT_SUCCEEDED = "payment_succeeded"
    PAYMENT_FAILED = "payment_failed"
    REFUND_SUCCEEDED = "refund_succeeded"
    REFUND_FAILED = "refund_failed"
    IGNORED = "ignored"  # an event type this service does not act on


@dataclass(frozen=True, slots=True)
class WebhookNotification:
    event_id: str
    event_type: str  # the gateway's own name for it
    kind: WebhookKind
    reference: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    # What we sent with the charge (tenant, payment_id): finds the payment when the webhook
    # overtakes our own record of the gateway reference.
    metadata: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class PaymentGateway(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def longest_call(self) -> timedelta:
        """How long one charge or refund call can take, its own retries included: an
        attempt's lease must outlast it, so no second call starts while one is in flight."""

    async def charge(
        self,
        *,
        amount: Money,
        token: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> ChargeResult:
        """Charge `amount` to the payment method `token`. Raises GatewayUnavailable when the
        outcome is unknown; repeating the call with the same key never charges twice."""

    async def refund(
        self,
        *,
        charge_reference: str,
        amount: Money,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> RefundResult:
        """Return `amount` of the charge `charge_reference`. Same error contract as charge."""

    def parse_webhook(self, event: Mapping[str, Any]) -> WebhookNotification:
        """Read a verified webhook body (already JSON-decoded). Raises MalformedWebhook."""

    async def close(self) -> None: ...
