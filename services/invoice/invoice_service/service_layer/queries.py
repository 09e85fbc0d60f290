"""Read use cases: one invoice with everything about it, and the paginated list."""

from __future__ import annotations

from dataclasses import dataclass, replace

from billing_common.cursors import encode_cursor
from invoice_service.domain.credit_notes import CreditNote
from invoice_service.domain.errors import CreditNoteNotFound, InvoiceNotFound
from invoice_service.domain.model import Invoice, InvoiceSummary
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.ports import InvoiceQuery, ReceivedEvent, UnitOfWork

MAX_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class InvoiceDetails:
    invoice: Invoice
    received_events: list[ReceivedEvent]


@dataclass(frozen=True, slots=True)
class InvoicePage:
    items: list[InvoiceSummary]
    next_cursor: str | None


async def get_invoice(tenant: str, invoice_id: str, deps: Dependencies) -> InvoiceDetails:
    async with deps.uow(tenant) as unit:
        invoice = await unit.invoices.get(invoice_id)
        if invoice is None:
            raise InvoiceNotFound(invoice_id)
        received = await unit.received.for_reference(invoice_id)
    return InvoiceDetails(invoice, received)


async def list_invoices(tenant: str, query: InvoiceQuery, deps: Dependencies) -> InvoicePage:
    if not 1 <= query.limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
    # One row more than asked tells whether another page exists.
    probe = replace(query, limit=query.limit + 1)
    async with deps.uow(tenant) as unit:
        rows = await unit.invoices.list(probe)
    items = rows[: query.limit]
    more = len(rows) > query.limit
    # Opaque to clients (billing_common.cursors): the last row's (created_at, id).
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if more and items else None
    return InvoicePage(items, next_cursor)


async def note_with_invoice(uow: UnitOfWork, credit_note_id: str) -> tuple[CreditNote, Invoice]:
    """A credit note and the invoice it corrects (its parties, language and references)."""
    note = await uow.credit_notes.get(credit_note_id)
    if note is None:
        raise CreditNoteNotFound(credit_note_id)
    invoice = await uow.invoices.get(note.invoice_id)
    if invoice is None:
        raise InvoiceNotFound(note.invoice_id)
    return note, invoice
