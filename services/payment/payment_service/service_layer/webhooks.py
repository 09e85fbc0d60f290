"""Verified gateway webhooks, applied exactly once (the event id is recorded with its effect)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from billing_common.uniqueness import UniqueViolation
from payment_service.domain.errors import PaymentNotFound
from payment_service.domain.gateway import WebhookKind, WebhookNotification
from payment_service.domain.model import Payment
from payment_service.service_layer.dependencies import Dependencies
from payment_service.service_layer.payments import settle
from payment_service.service_layer.ports import (
    PaymentLocation,
    PaymentUnitOfWork,
)
from payment_service.service_layer.refunds import complete_refund


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    duplicate: bool
    effect: str  # applied | none (already so) | ignored (not for us) | conflict (logged)
    payment_id: str | None = None


async def handle_webhook(
    gateway_name: str, notification: WebhookNotification, deps: Dependencies
) -> WebhookOutcome:
    async with deps.uow() as uow:
        if await uow.webhooks.seen(gateway_name, notification.event_id):
            return WebhookOutcome(duplicate=True, effect="none")
        now = deps.clock()
        location: PaymentLocation | None = None
        effect = "ignored"
        payment: Payment | None = None
        if notification.kind is not WebhookKind.IGNORED and notification.reference:
            location = await _locate(uow, gateway_name, notification)
            if location is None:
                # Not recorded, so the gateway's redelivery gets another chance once our
                # own record of the reference is committed.
                raise PaymentNotFound(
                    f"no payment or refund for {gateway_name} reference {notification.reference}"
                )
            repo = uow.payments(location.tenant)
            payment = await repo.get(location.payment_id, for_update=True)
            if payment is None:
                raise PaymentNotFound(f"payment {location.payment_id} not found")
            effect = _apply(uow, location, payment, notification, now)
            await repo.save(payment)
        uow.webhooks.record(
            gateway=gateway_name,
            event_id=notification.event_id,
            event_type=notification.event_type,
            outcome=effect,
            received_at=now,
            location=location,
        )
        try:
            await uow.commit()
        except UniqueViolation:
            return WebhookOutcome(duplicate=True, effect="none")
    return WebhookOutcome(
        duplicate=False, effect=effect, payment_id=payment.id if payment else None
    )


async def _locate(
    uow: PaymentUnitOfWork, gateway: str, notification: WebhookNotification
) -> PaymentLocation | None:
    assert notification.reference is not None
    tenant = notification.metadata.get("tenant")
    if notification.kind in (WebhookKind.REFUND_SUCCEEDED, WebhookKind.REFUND_FAILED):
        found = await uow.webhooks.refund_by_reference(gateway, notification.reference)
        refund_id = notification.metadata.get("refund_id")
        if found is None and tenant and refund_id:
            found = await uow.webhooks.refund_of_tenant(gateway, tenant, refund_id)
        return found
    found = await uow.webhooks.payment_by_reference(gateway, notification.reference)
    payment_id = notification.metadata.get("payment_id")
    if found is None and tenant and payment_id:
        # The webhook overtook our own record of the reference: our metadata finds it.
        found = await uow.webhooks.payment_of_tenant(gateway, tenant, payment_id)
    return found


def _apply(
    uow: PaymentUnitOfWork,
    location: PaymentLocation,
    payment: Payment,
    notification: WebhookNotification,
    now: datetime,
) -> str:
    reason = f"{payment.gateway} webhook {notification.event_type} {notification.event_id}"
    kind = notification.kind
    if kind is WebhookKind.PAYMENT_SUCCEEDED:
        return settle(uow, location.tenant, payment, True, notification, reason, now)
    if kind is WebhookKind.PAYMENT_FAILED:
        return settle(uow, location.tenant, payment, False, notification, reason, now)
    assert location.refund_id is not None
    if kind is WebhookKind.REFUND_SUCCEEDED:
        return complete_refund(
            uow, location.tenant, payment, location.refund_id, notification.reference, now
        )
    failed = payment.fail_refund(
        location.refund_id,
        notification.failure_code or "refund_failed",
        notification.failure_message,
        now,
    )
    return "applied" if failed else "none"
