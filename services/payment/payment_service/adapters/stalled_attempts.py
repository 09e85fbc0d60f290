"""Across tenants: the recovery sweep's view of attempts whose lease ran out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
        rows = await self._stalled(
            PaymentRow, PaymentStatus.PENDING, now, limit, PaymentRow.tenant_id, PaymentRow.id
        )
        return [PaymentLocation(tenant, payment_id) for tenant, payment_id in rows]

    async def refunds(self, now: datetime, limit: int) -> list[PaymentLocation]:
        rows = await self._stalled(
            RefundRow,
            RefundStatus.PENDING,
            now,
            limit,
            RefundRow.tenant_id,
            RefundRow.payment_id,
            RefundRow.id,
        )
        return [
            PaymentLocation(tenant, payment_id, refund_id) for tenant, payment_id, refund_id in rows
        ]

    async def _stalled(
        self,
        table: type[PaymentRow] | type[RefundRow],
        pending: PaymentStatus | RefundStatus,
        now: datetime,
        limit: int,
        *columns: Any,
    ) -> list[Any]:
        """Pending rows, not waiting for a webhook (no gateway reference), whose lease ended:
        the same rule for payments and refunds (GatewayAttempts.stalled)."""
        async with self._sessions() as session:
            rows = await session.exec(
                select(*columns)
                .where(col(table.lease_until) <= now)
                .where(col(table.status) == pending.value)
                .where(col(table.gateway_reference).is_(None))
                .order_by(col(table.lease_until))
                .limit(limit)
            )
            return list(rows.all())
