"""Stripe adapter of the gateway port: PaymentIntents created and confirmed in one call.

* Amounts go as integers in Stripe's minor units (its own table: zero-decimal currencies such
  as JPY as is, ISK with two decimals, three-decimal currencies with the last digit 0);
  currencies lowercase.
* Every request carries an `Idempotency-Key`, so a retried charge never charges twice.
* `payment_method` tokens: `pm_...` (a PaymentMethod, e.g. `pm_card_visa` in test mode),
  `ctoken_...` (a ConfirmationToken from Stripe.js) or legacy `tok_...` card tokens.
* Card errors (HTTP 402) are declines; 5xx, rate limits, timeouts and authentication
  problems leave the outcome unknown (GatewayUnavailable, retried with the same key).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

import stripe
from loguru import logger

from billing_common.money import Money
from payment_service.adapters.stripe_name import STRIPE as STRIPE
from payment_service.domain.errors import MalformedWebhook
from payment_service.domain.gateway import (
    ChargeResult,
    ChargeStatus,
    GatewayUnavailable,
    RefundResult,
    WebhookKind,
    WebhookNotification,
)

# https://docs.stripe.com/currencies: Stripe's exponent differs from ISO 4217 for some.
_ZERO_DECIMAL = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
     "XAF", "XOF", "XPF"}
)  # fmt: skip
_THREE_DECIMAL = frozenset({"BHD", "JOD", "KWD", "OMR", "TND"})

_PENDING_STATUSES = frozenset({"processing", "requires_action", "requires_confirmation"})


class AmountNotSupported(ValueError):
    """An amount Stripe cannot express in its minor units."""


def stripe_minor_units(amount: Money) -> int:
    """Money -> the integer Stripe expects. Refuses rather than rounds."""
    code = amount.currency
    exponent = 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2
    scaled = amount.amount.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise AmountNotSupported(f"{amount} has more decimals than Stripe accepts for {code}")
    minor = int(scaled)
    if code in _THREE_DECIMAL and minor % 10:
        raise AmountNotSupported(f"Stripe needs {code} amounts to end in 0 (got {amount})")
    return minor


def from_stripe_minor_units(minor: int, currency: str) -> Money:
    code = currency.upper()
    exponent = 0 if code in _ZERO_DECIMAL else 3 if code in _THREE_DECIMAL else 2
    return Money.of(Decimal(minor).scaleb(-exponent), code)


def _payment_method_params(token: str) -> dict[str, Any]:
    if token.startswith("ctoken_"):
        return {"confirmation_token": token}
    if token.startswith("tok_"):
        return {"payment_method_data": {"type": "card", "card": {"token": token}}}
    return {"payment_method": token}


def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error")
    return error if isinstance(error, dict) else {}


def _decline_code(error: Mapping[str, Any], fallback: str) -> str:
    """Stripe says `card_declined` and puts the reason (`insufficient_funds`) in
    decline_code; the reason is what the platform reports."""
    return str(error.get("decline_code") or error.get("code") or fallback)


# stripe-python's ceiling on the pause between two network retries (_http_client.py).
STRIPE_MAX_RETRY_DELAY_SECONDS = 5.0


class StripeGateway:
    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        timeout_seconds: float = 20.0,
        max_network_retries: int = 2,
    ) -> None:
        self._http = stripe.HTTPXClient(timeout=timeout_seconds)
        # Every try may time out, and stripe-python waits up to its maximum retry delay
        # between tries.
        self._longest_call = timedelta(
            seconds=timeout_seconds * (max_network_retries + 1)
            + STRIPE_MAX_RETRY_DELAY_SECONDS * max_network_retries
        )
        base_addresses: Any = {"api": api_base} if api_base else None
        self._client = stripe.StripeClient(
            api_key,
            base_addresses=base_addresses,
            http_client=self._http,
            max_network_retries=max_network_retries,
        )

    @property
    def name(self) -> str:
        return STRIPE

    @property
    def longest_call(self) -> timedelta:
        return self._longest_call

    async def charge(
        self,
        *,
        amount: Money,
        token: str,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> ChargeResult:
        try:
            minor = stripe_minor_units(amount)
        except AmountNotSupported as exc:
            return ChargeResult(ChargeStatus.FAILED, None, "amount_not_supported", str(exc))
        params: dict[str, Any] = {
            "amount": minor,
            "currency": amount.currency.lower(),
            "confirm": True,
            # Server-side confirmation cannot follow redirects; 3-D Secure still works
            # (status requires_action, settled by webhook).
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
            "metadata": dict(metadata),
            **_payment_method_params(token),
        }
        try:
            intent = await self._client.v1.payment_intents.create_async(
                params=cast(Any, params), options={"idempotency_key": idempotency_key}
            )
        except stripe.CardError as exc:
            error = _error_body(exc)
            intent_body = error.get("payment_intent")
            reference = intent_body.get("id") if isinstance(intent_body, dict) else None
            return ChargeResult(
                ChargeStatus.FAILED,
                reference,
                _decline_code(error, "card_declined"),
                str(error.get("message") or exc.user_message or "card declined"),
            )
        except stripe.InvalidRequestError as exc:
            error = _error_body(exc)
            logger.warning("stripe rejected a payment intent: {}", exc.user_message)
            return ChargeResult(
                ChargeStatus.FAILED,
                None,
                str(error.get("code") or "invalid_request"),
                str(error.get("message") or exc.user_message or "invalid request"),
            )
        except stripe.StripeError as exc:
            raise GatewayUnavailable(
                "gateway_unavailable", f"stripe: {type(exc).__name__}: {exc.user_message}"
            ) from exc
        return _charge_result(intent.id, intent.status, getattr(intent, "last_payment_error", None))

    async def refund(
        self,
        *,
        charge_reference: str,
        amount: Money,
        idempotency_key: str,
        metadata: Mapping[str, str],
    ) -> RefundResult:
        try:
            minor = stripe_minor_units(amount)
        except AmountNotSupported as exc:
            return RefundResult(ChargeStatus.FAILED, None, "amount_not_supported", str(exc))
        params: dict[str, Any] = {
            "payment_intent": charge_reference,
            "amount": minor,
            "metadata": dict(metadata),
        }
        try:
            refund = await self._client.v1.refunds.create_async(
                params=cast(Any, params), options={"idempotency_key": idempotency_key}
            )
        except stripe.InvalidRequestError as exc:
            error = _error_body(exc)
            return RefundResult(
                ChargeStatus.FAILED,
                None,
                str(error.get("code") or "invalid_request"),
                str(error.get("message") or exc.user_message or "invalid request"),
            )
        except stripe.StripeError as exc:
            raise GatewayUnavailable(
                "gateway_unavailable", f"stripe: {type(exc).__name__}: {exc.user_message}"
            ) from exc
        return _refund_result(refund.id, refund.status, getattr(refund, "failure_reason", None))

    def parse_webhook(self, event: Mapping[str, Any]) -> WebhookNotification:
        """Stripe's own event format (`payment_intent.succeeded`, `refund.updated`, ...)."""
        event_id = event.get("id")
        event_type = event.get("type")
        data = event.get("data")
        obj = data.get("object") if isinstance(data, dict) else None
        if not isinstance(event_id, str) or not event_id or not isinstance(event_type, str):
            raise MalformedWebhook("a Stripe event needs a string id and type")
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise MalformedWebhook("a Stripe event needs data.object with an id")
        metadata_raw = obj.get("metadata")
        metadata = (
            {str(k): str(v) for k, v in metadata_raw.items()}
            if isinstance(metadata_raw, dict)
            else {}
        )
        kind = WebhookKind.IGNORED
        failure_code: str | None = None
        failure_message: str | None = None
        if event_type == "payment_intent.succeeded":
            kind = WebhookKind.PAYMENT_SUCCEEDED
        elif event_type in ("payment_intent.payment_failed", "payment_intent.canceled"):
            kind = WebhookKind.PAYMENT_FAILED
            error = obj.get("last_payment_error")
            error = error if isinstance(error, dict) else {}
            fallback = "canceled" if event_type.endswith("canceled") else "payment_failed"
            failure_code = _decline_code(error, fallback)
            failure_message = str(error.get("message") or obj.get("cancellation_reason") or "")
        elif event_type in ("refund.updated", "refund.failed", "charge.refund.updated"):
            status = obj.get("status")
            if status == "succeeded":
                kind = WebhookKind.REFUND_SUCCEEDED
            elif status in ("failed", "canceled"):
                kind = WebhookKind.REFUND_FAILED
                failure_code = str(obj.get("failure_reason") or status)
        return WebhookNotification(
            event_id=event_id,
            event_type=event_type,
            kind=kind,
            reference=str(obj["id"]),
            failure_code=failure_code,
            failure_message=failure_message or None,
            metadata=metadata,
        )

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]


def _charge_result(reference: str, status: str, last_error: Any) -> ChargeResult:
    if status == "succeeded":
        return ChargeResult(ChargeStatus.SUCCEEDED, reference)
    if status in _PENDING_STATUSES:
        return ChargeResult(ChargeStatus.PENDING, reference)
    error = last_error if isinstance(last_error, Mapping) else {}
    code = _decline_code(error, "canceled" if status == "canceled" else "payment_failed")
    message = error.get("message") or f"payment intent is {status}"
    return ChargeResult(ChargeStatus.FAILED, reference, code, str(message))


def _refund_result(reference: str, status: str | None, failure_reason: Any) -> RefundResult:
    if status == "succeeded":
        return RefundResult(ChargeStatus.SUCCEEDED, reference)
    if status in ("pending", "requires_action"):
        return RefundResult(ChargeStatus.PENDING, reference)
    code = str(failure_reason or status or "refund_failed")
    return RefundResult(ChargeStatus.FAILED, reference, code, f"refund is {status}")
