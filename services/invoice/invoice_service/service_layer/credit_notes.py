"""Issuing credit notes, reading them, and recording the refunds made for them.

Issuing locks the invoice row (SELECT … FOR UPDATE on PostgreSQL; the invoice's version check
everywhere), reads its earlier credit notes and credits at most what they left, draws the
credit note's gapless number and changes the invoice in the same transaction: concurrent
credit notes of one invoice queue, and never credit more than was invoiced together."""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from decimal import Decimal

from loguru import logger

from billing_common.event_schemas import (
    CREDIT_NOTE_APPLIED,
    CREDIT_NOTE_ISSUED,
    CREDIT_NOTE_REFUNDED,
    CreditNoteData,
)
from billing_common.events import CloudEvent, new_event
from invoice_service.domain import credit_notes as domain
from invoice_service.domain.credit_notes import CreditNote, CreditRequestLine, Settlement
from invoice_service.domain.errors import (
    CreditNoteNotFound,
    IdempotencyConflict,
    InvoiceNotFound,
)
from invoice_service.domain.model import Invoice
from invoice_service.domain.numbering import format_number
from invoice_service.domain.sellers import DocumentType
from invoice_service.service_layer import events
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.ports import BalanceEntry, UnitOfWork
from invoice_service.service_layer.status_changes import record_status_change

CREDIT_NOTE_ID_NAMESPACE = uuid.UUID("0b7c6a52-41f3-4b8e-9d0e-3a6f1c2d5e84")
log = logger.bind(service="invoice")


@dataclass(frozen=True, slots=True)
class IssueCreditNote:
    tenant: str
    actor: str
    invoice_id: str
    idempotency_key: str
    reason: str
    settlement: Settlement
    lines: tuple[CreditRequestLine, ...] = ()

    @property
    def request_hash(self) -> str:
        body = {
            "invoice_id": self.invoice_id,
            "reason": self.reason,
            "settlement": self.settlement.value,
            "lines": [[line.position, str(line.quantity), str(line.amount)] for line in self.lines],
        }
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class IssueResult:
    credit_note: CreditNote
    created: bool


def credit_note_event(
    note: CreditNote, invoice: Invoice, event_type: str = CREDIT_NOTE_ISSUED
) -> CloudEvent:
    return new_event(
        source=events.SOURCE,
        event_type=event_type,
        data=CreditNoteData(
            credit_note_id=note.id,
            number=note.number,
            invoice_id=invoice.id,
            invoice_number=note.invoice_number,
            customer_id=note.customer_id,
            currency=note.currency,
            settlement=note.settlement.value,
            status=note.status.value,
            net_total=note.net_total,
            tax_total=note.tax_total,
            total=note.total,
            reason=note.reason,
            invoice_total=invoice.total,
            invoice_amount_credited=invoice.amount_credited,
            invoice_version=invoice.version,
            refund_ids=sorted(note.refunds),
        ),
        subject=note.id,
        tenant=note.tenant_id,
    )


def _replay(stored_hash: str, note: CreditNote, cmd: IssueCreditNote) -> IssueResult:
    if stored_hash != cmd.request_hash:
        raise IdempotencyConflict(cmd.idempotency_key)
    return IssueResult(note, created=False)


async def _number(uow: UnitOfWork, invoice: Invoice) -> tuple[str, int]:
    series = domain.DEFAULT_CREDIT_NOTE_SERIES
    if invoice.seller_id is not None:
        seller = await uow.sellers.get(invoice.seller_id)
        if seller is not None:
            series = seller.series_for(DocumentType.CREDIT_NOTE)
    # A tenant without sellers counts its credit notes under the seller key "".
    sequence = await uow.numbers.next_sequence(
        series, seller_id=invoice.seller_id or "", document_type=DocumentType.CREDIT_NOTE
    )
    return series, sequence


async def issue_credit_note(cmd: IssueCreditNote, deps: Dependencies) -> IssueResult:
    async with deps.uow(cmd.tenant) as uow:
        stored = await uow.credit_notes.find_by_idempotency_key(cmd.idempotency_key)
        if stored is not None:
            return _replay(stored.request_hash, stored.credit_note, cmd)
        invoice = await uow.invoices.get(cmd.invoice_id, for_update=True)
        if invoice is None:
            raise InvoiceNotFound(cmd.invoice_id)
        # Read after the lock: a concurrent credit note committed before it is counted.
        earlier = await uow.credit_notes.for_invoice(invoice.id)
        lines = domain.credit_lines(invoice, cmd.lines, earlier)
        draft_total = sum((line.total for line in lines), invoice.total - invoice.total)
        domain.check_settlement(invoice, cmd.settlement, draft_total, earlier)
        series, sequence = await _number(uow, invoice)
        now = deps.clock()
        assert invoice.number is not None  # only issued invoices are creditable
        note = CreditNote(
            id=str(uuid.uuid5(CREDIT_NOTE_ID_NAMESPACE, f"{cmd.tenant}\n{cmd.idempotency_key}")),
            tenant_id=cmd.tenant,
            invoice_id=invoice.id,
            invoice_number=invoice.number,
            customer_id=invoice.customer.id,
            currency=invoice.currency,
            settlement=cmd.settlement,
            reason=cmd.reason,
            lines=lines,
            created_at=now,
            series=series,
            sequence=sequence,
            number=format_number(series, sequence),
            seller_id=invoice.seller_id,
        )
        previous = invoice.status
        invoice.apply_credit(credit_note=note.number, amount=note.total, at=now, actor=cmd.actor)
        issued = credit_note_event(note, invoice)
        settled: CloudEvent | None = None
        if cmd.settlement is not Settlement.REFUND:
            note.settle(now)
            settled = credit_note_event(note, invoice, CREDIT_NOTE_APPLIED)
        if cmd.settlement is Settlement.CUSTOMER_BALANCE:
            await uow.balances.add(
                BalanceEntry(
                    note.customer_id,
                    note.currency,
                    note.total,
                    note.id,
                    f"credit note {note.number} of invoice {invoice.number}",
                    now,
                )
            )
        await uow.invoices.save(invoice)
        await uow.credit_notes.add(
            note, idempotency_key=cmd.idempotency_key, request_hash=cmd.request_hash
        )
        aggregate = events.aggregate(invoice)
        uow.emit(issued, aggregate=aggregate)
        if settled is not None:
            uow.emit(settled, aggregate=aggregate)
        record_status_change(uow, invoice, previous, f"credit note {note.number}")
        await uow.commit()
    log.info(
        "credit note {} of invoice {}: {} {} ({})",
        note.number,
        invoice.id,
        note.total,
        note.currency,
        note.settlement,
    )
    return IssueResult(note, created=True)


async def get_credit_note(tenant: str, credit_note_id: str, deps: Dependencies) -> CreditNote:
    async with deps.uow(tenant) as uow:
        note = await uow.credit_notes.get(credit_note_id)
    if note is None:
        raise CreditNoteNotFound(credit_note_id)
    return note


async def credit_notes_of(tenant: str, invoice_id: str, deps: Dependencies) -> list[CreditNote]:
    async with deps.uow(tenant) as uow:
        if await uow.invoices.stamp(invoice_id) is None:
            raise InvoiceNotFound(invoice_id)
        return await uow.credit_notes.for_invoice(invoice_id)


async def customer_balance(tenant: str, customer_id: str, deps: Dependencies) -> dict[str, Decimal]:
    async with deps.uow(tenant) as uow:
        return await uow.balances.balance(customer_id)


async def record_credit_note_refund(
    uow: UnitOfWork,
    invoice: Invoice,
    credit_note_id: str,
    refund_id: str,
    amount: Decimal,
    deps: Dependencies,
) -> None:
    """In the transaction applying the refund to the invoice: the credit note keeps the
    refund's id (they reference each other); refunded in full, it becomes `refunded`."""
    note = await uow.credit_notes.get(credit_note_id, for_update=True)
    if note is None or note.invoice_id != invoice.id:
        log.warning("refund {} names an unknown credit note {}", refund_id, credit_note_id)
        return
    if note.record_refund(refund_id, amount, deps.clock()):
        uow.emit(
            credit_note_event(note, invoice, CREDIT_NOTE_REFUNDED),
            aggregate=events.aggregate(invoice),
        )
    await uow.credit_notes.save(note)
