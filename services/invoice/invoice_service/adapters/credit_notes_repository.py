"""Credit notes and the customer balance ledger in SQL (tenant-scoped)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from invoice_service.adapters.orm import CreditNoteRow, CustomerBalanceEntryRow
from invoice_service.domain.credit_notes import (
    CreditNote,
    CreditNoteLine,
    CreditNoteStatus,
    Settlement,
)
from invoice_service.domain.errors import ConcurrentModification
from invoice_service.domain.model import TaxComponent
from invoice_service.service_layer.ports import BalanceEntry, StoredCreditNote


def _line_to_json(line: CreditNoteLine) -> dict[str, Any]:
    return {
        "position": line.position,
        "description": line.description,
        "quantity": None if line.quantity is None else str(line.quantity),
        "net": str(line.net),
        "tax": str(line.tax),
        "total": str(line.total),
        "vat_category": line.vat_category,
        "taxes": [
            {
                "rule_id": t.rule_id,
                "name": t.name,
                "rate": str(t.rate),
                "amount": str(t.amount),
                "compound": t.compound,
            }
            for t in line.taxes
        ],
    }


def _line_of_json(data: dict[str, Any]) -> CreditNoteLine:
    return CreditNoteLine(
        position=int(data["position"]),
        description=data["description"],
        quantity=None if data["quantity"] is None else Decimal(data["quantity"]),
        net=Decimal(data["net"]),
        tax=Decimal(data["tax"]),
        total=Decimal(data["total"]),
        vat_category=data.get("vat_category"),
        taxes=tuple(
            TaxComponent(
                t["rule_id"], t["name"], Decimal(t["rate"]), Decimal(t["amount"]), t["compound"]
            )
            for t in data["taxes"]
        ),
    )


def _note_of(row: CreditNoteRow) -> CreditNote:
    return CreditNote(
        id=row.id,
        tenant_id=row.tenant_id,
        invoice_id=row.invoice_id,
        invoice_number=row.invoice_number,
        customer_id=row.customer_id,
        currency=row.currency,
        settlement=Settlement(row.settlement),
        reason=row.reason,
        lines=[_line_of_json(item) for item in json.loads(row.lines)],
        created_at=row.created_at,
        series=row.series,
        sequence=row.sequence,
        number=row.number,
        seller_id=row.seller_id or None,
        status=CreditNoteStatus(row.status),
        settled_at=row.settled_at,
        refunds={key: Decimal(value) for key, value in json.loads(row.refunds).items()},
    )


def _changing(note: CreditNote) -> dict[str, Any]:
    return {
        "status": note.status.value,
        "settled_at": note.settled_at,
        "refunds": json.dumps({key: str(value) for key, value in note.refunds.items()}),
    }


class SqlCreditNoteRepository:
    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self._session = session
        self._tenant = tenant
        self._versions: dict[str, int] = {}

    async def _row(self, credit_note_id: str, for_update: bool = False) -> CreditNoteRow | None:
        statement = select(CreditNoteRow).where(
            CreditNoteRow.tenant_id == self._tenant, CreditNoteRow.id == credit_note_id
        )
        if for_update:
            statement = statement.with_for_update()
        return (await self._session.exec(statement)).first()

    async def get(self, credit_note_id: str, *, for_update: bool = False) -> CreditNote | None:
        row = await self._row(credit_note_id, for_update)
        if row is None:
            return None
        self._versions[row.id] = row.version
        return _note_of(row)

    async def for_invoice(self, invoice_id: str) -> list[CreditNote]:
        statement = (
            select(CreditNoteRow)
            .where(CreditNoteRow.tenant_id == self._tenant, CreditNoteRow.invoice_id == invoice_id)
            .order_by(col(CreditNoteRow.created_at), col(CreditNoteRow.sequence))
        )
        rows = (await self._session.exec(statement)).all()
        for row in rows:
            self._versions[row.id] = row.version
        return [_note_of(row) for row in rows]

    async def find_by_idempotency_key(self, key: str) -> StoredCreditNote | None:
        statement = select(CreditNoteRow).where(
            CreditNoteRow.tenant_id == self._tenant, CreditNoteRow.idempotency_key == key
        )
        row = (await self._session.exec(statement)).first()
        return None if row is None else StoredCreditNote(_note_of(row), row.request_hash)

    async def add(self, note: CreditNote, *, idempotency_key: str, request_hash: str) -> None:
        if note.tenant_id != self._tenant:
            raise ValueError("a credit note of another tenant cannot be written here")
        self._session.add(
            CreditNoteRow(
                id=note.id,
                tenant_id=self._tenant,
                idempotency_key=idempotency_key,
                request_hash=request_hash,
                invoice_id=note.invoice_id,
                invoice_number=note.invoice_number,
                seller_id=note.seller_id or "",
                customer_id=note.customer_id,
                currency=note.currency,
                series=note.series,
                sequence=note.sequence,
                number=note.number,
                settlement=note.settlement.value,
                reason=note.reason,
                net_total=note.net_total,
                tax_total=note.tax_total,
                total=note.total,
                lines=json.dumps([_line_to_json(line) for line in note.lines]),
                created_at=note.created_at,
                **_changing(note),
            )
        )
        await self._session.flush()
        self._versions[note.id] = 1

    async def save(self, note: CreditNote) -> None:
        row = await self._row(note.id)
        expected = self._versions.get(note.id)
        if row is None or row.version != expected:
            raise ConcurrentModification(note.invoice_id)
        for name, value in _changing(note).items():
            setattr(row, name, value)
        row.version += 1
        self._versions[note.id] = row.version
        self._session.add(row)
        await self._session.flush()


class SqlCustomerBalance:
    """The customer balance ledger: what the tenant owes each customer, per currency."""

    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self._session = session
        self._tenant = tenant

    async def add(self, entry: BalanceEntry) -> None:
        self._session.add(
            CustomerBalanceEntryRow(
                tenant_id=self._tenant,
                customer_id=entry.customer_id,
                currency=entry.currency,
                amount=entry.amount,
                credit_note_id=entry.credit_note_id,
                description=entry.description,
                at=entry.at,
            )
        )
        await self._session.flush()

    async def balance(self, customer_id: str) -> dict[str, Decimal]:
        """The customer's balance per currency (the sum of its entries)."""
        statement = select(CustomerBalanceEntryRow).where(
            CustomerBalanceEntryRow.tenant_id == self._tenant,
            CustomerBalanceEntryRow.customer_id == customer_id,
        )
        totals: dict[str, Decimal] = {}
        for row in (await self._session.exec(statement)).all():
            totals[row.currency] = totals.get(row.currency, Decimal(0)) + row.amount
        return totals

    async def entries(self, customer_id: str) -> list[BalanceEntry]:
        statement = (
            select(CustomerBalanceEntryRow)
            .where(
                CustomerBalanceEntryRow.tenant_id == self._tenant,
                CustomerBalanceEntryRow.customer_id == customer_id,
            )
            .order_by(col(CustomerBalanceEntryRow.at), col(CustomerBalanceEntryRow.id))
        )
        return [
            BalanceEntry(
                row.customer_id,
                row.currency,
                row.amount,
                row.credit_note_id,
                row.description,
                row.at,
            )
            for row in (await self._session.exec(statement)).all()
        ]
