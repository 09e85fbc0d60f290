"""Status changes asked for through the API: finalize, void, mark uncollectible."""

from __future__ import annotations

from invoice_service.domain.errors import InvoiceNotFound
from invoice_service.domain.model import Invoice, InvoiceStatus
from invoice_service.domain.numbering import format_number
from invoice_service.domain.sellers import DocumentType, SellerSnapshot
from invoice_service.service_layer import einvoices, events
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.ports import UnitOfWork


async def _locked(uow: UnitOfWork, invoice_id: str) -> Invoice:
    invoice = await uow.invoices.get(invoice_id, for_update=True)
    if invoice is None:
        raise InvoiceNotFound(invoice_id)
    return invoice


async def _seller_snapshot(
    uow: UnitOfWork, invoice: Invoice
) -> tuple[SellerSnapshot | None, str | None]:
    """The seller's data and default language as they are at finalization: what the issued
    invoice keeps for good. (A seller named by an invoice, a draft too, cannot be deleted;
    should its row be gone all the same, the draft keeps the snapshot and the language it
    took at creation.)"""
    if invoice.seller_id is None:
        return None, None
    seller = await uow.sellers.get(invoice.seller_id)
    if seller is None:
        return invoice.seller, None
    return seller.snapshot(), seller.language


async def finalize_invoice(tenant: str, invoice_id: str, actor: str, deps: Dependencies) -> Invoice:
    async with deps.uow(tenant) as uow:
        invoice = await _locked(uow, invoice_id)
        # Refuse before drawing a number; the number and the status change commit together.
        invoice.check_can_finalize()
        snapshot, seller_language = await _seller_snapshot(uow, invoice)
        sequence = await uow.numbers.next_sequence(
            invoice.series, seller_id=invoice.seller_id, document_type=DocumentType.INVOICE
        )
        invoice.finalize(
            number=format_number(invoice.series, sequence),
            sequence=sequence,
            at=deps.clock(),
            actor=actor,
            seller=snapshot,
            seller_language=seller_language,
        )
        invoice.offer_einvoice(await einvoices.offered_format(uow, invoice, deps))
        await uow.invoices.save(invoice)
        uow.emit(events.finalized(invoice), aggregate=events.aggregate(invoice))
        if invoice.status is InvoiceStatus.PAID:
            uow.emit(events.paid(invoice), aggregate=events.aggregate(invoice))
        record_status_change(uow, invoice, InvoiceStatus.DRAFT, "finalized")
        await uow.commit()
    return invoice


async def void_invoice(
    tenant: str, invoice_id: str, reason: str | None, actor: str, deps: Dependencies
) -> Invoice:
    async with deps.uow(tenant) as uow:
        invoice = await _locked(uow, invoice_id)
        previous = invoice.status
        invoice.void(at=deps.clock(), reason=reason, actor=actor)
        await uow.invoices.save(invoice)
        uow.emit(events.voided(invoice, reason), aggregate=events.aggregate(invoice))
        record_status_change(uow, invoice, previous, reason)
        await uow.commit()
    return invoice


async def mark_uncollectible(
    tenant: str, invoice_id: str, reason: str | None, actor: str, deps: Dependencies
) -> Invoice:
    async with deps.uow(tenant) as uow:
        invoice = await _locked(uow, invoice_id)
        previous = invoice.status
        invoice.mark_uncollectible(at=deps.clock(), reason=reason, actor=actor)
        await uow.invoices.save(invoice)
        record_status_change(uow, invoice, previous, reason)
        await uow.commit()
    return invoice


def record_status_change(
    uow: UnitOfWork, invoice: Invoice, previous: InvoiceStatus, reason: str | None
) -> None:
    """Tell consumers about a status change (none if the status stayed the same)."""
    if invoice.status is not previous:
        uow.emit(
            events.status_changed(invoice, previous, reason), aggregate=events.aggregate(invoice)
        )
