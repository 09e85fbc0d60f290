"""The credit note as a PDF: rendered by the invoices' renderer (worker processes) under the
tenant's render slots, in its invoice's language. A credit note changes only its status, so
its ETag names its number and status with the language and the template version."""

from __future__ import annotations

import asyncio
import hashlib

from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.documents import DocumentServices, etag_matches
from invoice_service.service_layer.ports import CreditNoteHtml
from invoice_service.service_layer.queries import note_with_invoice


async def credit_note_pdf(
    tenant: str,
    credit_note_id: str,
    deps: Dependencies,
    documents: DocumentServices,
    html: CreditNoteHtml,
    *,
    if_none_match: str | None = None,
) -> tuple[str, str, bytes | None]:
    """(ETag, file stem, PDF or None when the client's copy is current)."""
    async with deps.uow(tenant) as uow:
        note, invoice = await note_with_invoice(uow, credit_note_id)
    digest = hashlib.sha256(
        f"{tenant}\n{note.id}\n{note.status.value}\n{invoice.language}\n{html.version}".encode()
    ).hexdigest()[:32]
    etag = f'"pdf-{digest}"'
    if etag_matches(if_none_match, etag):
        return etag, note.number, None

    async with documents.slots.hold(tenant):
        pdf = await asyncio.to_thread(documents.renderer.credit_note_pdf, note, invoice)
    return etag, note.number, pdf
