"""The sandbox gateway: deterministic, no network, the default.

Test card tokens (the outcome depends only on the token):

| token                   | outcome                                                       |
|-------------------------|---------------------------------------------------------------|
| `tok_visa`              | succeeds at once                                              |
| `tok_mastercard`        | succeeds at once                                              |
| `tok_declined`          | fails, `card_declined`                                        |
| `tok_insufficient_funds`| fails, `insufficient_funds`                                   |
| `tok_async`             | pending; settles when a signed webhook arrives                |
| `tok_processing_error`  | gateway error: outcome unknown, the payment stays pending     |
| anything else           | fails, `invalid_payment_method`                               |

Like Stripe, a call repeated with the same idempotency key returns the first call's result
without charging again; `charge_calls` counts every call (tests use it to prove there was
exactly one). References derive from the idempotency key, so they survive restarts.
Refunds always succeed.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from billing_common.money import Money
from payment_service.domain.errors import MalformedWebhook
from payment_service.domain.gateway import (
    ChargeResult,
    ChargeStatus,
    GatewayUnavailable,
    RefundResult,
    WebhookKind,
    WebhookNotification,
)

SANDBOX = "sandbox"

_DECLINES: dict[str, tuple[str, str]] = {
    "tok_declined": ("card_declined", "Your card was declined."),
    "tok_insufficient_funds": ("insufficient_funds", "Your card has insufficient funds."),
}
_SUCCEEDS = frozenset({"tok_visa", "tok_mastercard"})

WEBHOOK_TYPES: dict[str, WebhookKind] = {
    "payment.succeeded": WebhookKind.PAYMENT_SUCCEEDED,
    "payment.failed": WebhookKind.PAYMENT_FAILED,
    "refund.succeeded": WebhookKind.REFUND_SUCCEEDED,
    "refund.failed": WebhookKind.REFUND_FAILED,
}


class _WebhookData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    gateway_reference: str = Field(min_length=1, max_length=255)
    failure_code: str | None = Field(default=None, max_length=64)
    failure_message: str | None = Field(default=None, max_length=500)
    metadata: dict[str, str] = Field(default_factory=dict)


class _WebhookEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=128)
    created: int | None = None
    data: _WebhookData


def _reference(prefix: str, idempotency_key: str) -> str:
    return f"{prefix}_{hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]}"


# In process and instant; a second covers a test's simulated network latency.
SANDBOX_LONGEST_CALL = timedelta(seconds=1)


class SandboxGateway:
    def __init__(self) -> None:
        self.charge_calls = 0
        self.refund_calls = 0
        self._charges: dict[str, ChargeResult] = {}
        self._refunds: dict[str, RefundResult] = {}

    @property
    def name(self) -> str:
        return SANDBOX

    @property
    def longest_call(self) -> timedelta:
        return SANDBOX_LONGEST_CALL

    async def charge(
        self,
        *,
        amount: Money,
        token: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> ChargeResult:
        self.charge_calls += 1
        known = self._charges.get(idempotency_key)
        if known is not None:
            return known
        reference = _reference("sbx_ch", idempotency_key)
        if token == "tok_processing_error":
            # Not remembered: like a timeout, the gateway gives no result to replay.
            raise GatewayUnavailable(
                "processing_error", "An error occurred while processing the card (sandbox)."
            )
        if token in _SUCCEEDS:
            result = ChargeResult(ChargeStatus.SUCCEEDED, reference)
        elif token == "tok_async":
            result = ChargeResult(ChargeStatus.PENDING, reference)
        elif token in _DECLINES:
            code, message = _DECLINES[token]
            result = ChargeResult(ChargeStatus.FAILED, reference, code, message)
        else:
            result = ChargeResult(
                ChargeStatus.FAILED,
                reference,
                "invalid_payment_method",
                f"{token!r} is not a sandbox test token (see the payment service README)",
            )
        self._charges[idempotency_key] = result
        return result

    async def refund(
        self,
        *,
        charge_reference: str,
        amount: Money,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> RefundResult:
        self.refund_calls += 1
        known = self._refunds.get(idempotency_key)
        if known is None:
            known = RefundResult(ChargeStatus.SUCCEEDED, _reference("sbx_re", idempotency_key))
            self._refunds[idempotency_key] = known
        return known

    def parse_webhook(self, event: Mapping[str, Any]) -> WebhookNotification:
        try:
            parsed = _WebhookEvent.model_validate(event)
        except ValidationError as exc:
            problem = exc.errors()[0]
            raise MalformedWebhook(
                f"not a sandbox webhook event: {problem['msg']} at {list(problem['loc'])}"
            ) from exc
        data = parsed.data
        return WebhookNotification(
            event_id=parsed.id,
            event_type=parsed.type,
            kind=WEBHOOK_TYPES.get(parsed.type, WebhookKind.IGNORED),
            reference=data.gateway_reference,
            failure_code=data.failure_code,
            failure_message=data.failure_message,
            metadata=data.metadata,
        )

    async def close(self) -> None:
        return None


def sandbox_webhook_event(
    *,
    reference: str,
    outcome: Literal["succeeded", "failed"],
    created: int,
    failure_code: str | None = None,
    failure_message: str | None = None,
) -> dict[str, Any]:
    """The body the sandbox sends when a pending charge settles."""
    data: dict[str, Any] = {"gateway_reference": reference}
    if outcome == "failed":
        data["failure_code"] = failure_code or "card_declined"
        data["failure_message"] = failure_message or "Your card was declined."
    return {
        "id": f"evt_sbx_{uuid.uuid4().hex}",
        "type": f"payment.{outcome}",
        "created": created,
        "data": data,
    }


class SandboxWebhookBuilder:
    """The sandbox's settlement webhooks, for the sandbox confirm endpoint (the
    service_layer.ports.SandboxWebhooks port)."""

    name = SANDBOX

    def settlement_event(
        self,
        *,
        reference: str,
        outcome: Literal["succeeded", "failed"],
        created: int,
        failure_code: str | None = None,
    ) -> dict[str, Any]:
        return sandbox_webhook_event(
            reference=reference, outcome=outcome, created=created, failure_code=failure_code
        )
