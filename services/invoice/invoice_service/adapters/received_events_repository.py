"""Peer events kept with the invoices they reference (tax.calculated, discount.applied), in
SQL. Built for one tenant; every query filters by it."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from invoice_service.adapters.orm import ReceivedEventRow
from invoice_service.service_layer.ports import ReceivedEvent

_INSERT = insert(ReceivedEventRow.__table__)  # type: ignore[attr-defined]


class SqlReceivedEventLog:
    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self._session = session
        self._tenant = tenant

    def row(self, event: ReceivedEvent) -> dict[str, Any]:
        """The stored row of `event`, column by column."""
        return {
            "event_id": event.event_id,
            "tenant_id": self._tenant,
            "event_type": event.event_type,
            "reference": event.reference,
            "subject": event.subject,
            "source": event.source,
            "occurred_at": event.occurred_at,
            "received_at": event.received_at,
            "data": json.dumps(event.data, sort_keys=True),
        }

    async def add(self, event: ReceivedEvent) -> None:
        # A core INSERT of a constant statement: every peer event of every invoice lands here.
        await (await self._session.connection()).execute(_INSERT, self.row(event))

    async def for_reference(self, reference: str) -> list[ReceivedEvent]:
        rows = (
            await self._session.exec(
                select(ReceivedEventRow)
                .where(
                    ReceivedEventRow.tenant_id == self._tenant,
                    ReceivedEventRow.reference == reference,
                )
                .order_by(col(ReceivedEventRow.received_at), col(ReceivedEventRow.event_id))
            )
        ).all()
        return [
            ReceivedEvent(
                event_id=row.event_id,
                event_type=row.event_type,
                source=row.source,
                reference=row.reference,
                subject=row.subject,
                occurred_at=row.occurred_at,
                received_at=row.received_at,
                data=json.loads(row.data),
            )
            for row in rows
        ]
