"""Across tenants: the recovery sweep's view of attempts whose lease ran out."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from payment_service.adapters.orm import PaymentRow, RefundRow
from payment_service.domain.model import PaymentStatus, RefundStatus
from payment_service.service_layer.ports import PaymentLocation


class SqlStalledAttempts:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def payments(self, now: datetime, limit: int) -> list[PaymentLocation]:
        async with self._sessions() as session:
            rows = (
                await session.exec(
                    select(PaymentRow.tenant_id, PaymentRow.id)
                    .where(col(PaymentRow.lease_until) <= now)
                    .where(col(PaymentRow.status) == PaymentStatus.PENDING.value)
                    .where(col(PaymentRow.gateway_reference).is_(None))
                    .order_by(col(PaymentRow.lease_until))
                    .limit(limit)
                )
            ).all()
        return [PaymentLocation(tenant, payment_id) for tenant, payment_id in rows]

    async def refunds(self, now: datetime, limit: int) -> list[PaymentLocation]:
        async with self._sessions() as session:
            rows = (
                await session.exec(
                    select(RefundRow.tenant_id, RefundRow.payment_id, RefundRow.id)
                    .where(col(RefundRow.lease_until) <= now)
                    .where(col(RefundRow.status) == RefundStatus.PENDING.value)
                    .where(col(RefundRow.gateway_reference).is_(None))
                    .order_by(col(RefundRow.lease_until))
                    .limit(limit)
                )
            ).all()
        return [
            PaymentLocation(tenant, payment_id, refund_id) for tenant, payment_id, refund_id in rows
        ]
