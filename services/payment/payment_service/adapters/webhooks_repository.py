"""The SQL repository webhooks use: the one place that looks across tenants, because a
gateway's webhook names a gateway reference, not a tenant."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from payment_service.adapters.orm import PaymentRow, RefundRow, WebhookEventRow
from payment_service.service_layer.ports import PaymentLocation


class SqlWebhookRepository:
    """Across tenants: webhooks carry gateway references, and the unique constraints on
    (gateway, gateway_reference) make each reference name exactly one payment or refund."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def seen(self, gateway: str, event_id: str) -> bool:
        return await self._session.get(WebhookEventRow, (gateway, event_id)) is not None

    def record(
        self,
        *,
        gateway: str,
        event_id: str,
        event_type: str,
        outcome: str,
        received_at: datetime,
        location: PaymentLocation | None,
    ) -> None:
        self._session.add(
            WebhookEventRow(
                gateway=gateway,
                event_id=event_id,
                event_type=event_type[:128],
                tenant_id=location.tenant if location else None,
                payment_id=location.payment_id if location else None,
                outcome=outcome,
                received_at=received_at,
            )
        )

    async def payment_by_reference(self, gateway: str, reference: str) -> PaymentLocation | None:
        row = (
            await self._session.exec(
                select(PaymentRow.tenant_id, PaymentRow.id).where(
                    PaymentRow.gateway == gateway, PaymentRow.gateway_reference == reference
                )
            )
        ).first()
        return PaymentLocation(row[0], row[1]) if row is not None else None

    async def refund_by_reference(self, gateway: str, reference: str) -> PaymentLocation | None:
        row = (
            await self._session.exec(
                select(RefundRow.tenant_id, RefundRow.payment_id, RefundRow.id).where(
                    RefundRow.gateway == gateway, RefundRow.gateway_reference == reference
                )
            )
        ).first()
        return PaymentLocation(row[0], row[1], row[2]) if row is not None else None

    async def payment_of_tenant(
        self, gateway: str, tenant: str, payment_id: str
    ) -> PaymentLocation | None:
        row = await self._session.get(PaymentRow, payment_id)
        if row is None or row.tenant_id != tenant or row.gateway != gateway:
            return None
        return PaymentLocation(row.tenant_id, row.id)

    async def refund_of_tenant(
        self, gateway: str, tenant: str, refund_id: str
    ) -> PaymentLocation | None:
        row = await self._session.get(RefundRow, refund_id)
        if row is None or row.tenant_id != tenant or row.gateway != gateway:
            return None
        return PaymentLocation(row.tenant_id, row.payment_id, row.id)
