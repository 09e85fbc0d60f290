"""E-invoices (EN 16931) of finalized invoices and of credit notes: Factur-X PDF, XRechnung
CII, Peppol UBL; the documents an issued invoice is offered with; customers' default format.

The use cases load the document, refuse drafts (an e-invoice is a legal document: it needs
the number and the seller snapshot taken at finalization) and hand it to the writer port,
which maps it to EN 16931 and serializes it. Writers raise `EInvoiceDataMissing` when the
document lacks what the format requires.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from billing_common.errors import DomainError
from invoice_service.domain.credit_notes import CreditNote
from invoice_service.domain.einvoicing import (
    CustomerEInvoiceSettings,
    DefaultEInvoiceFormat,
    EInvoiceFormat,
)
from invoice_service.domain.errors import InvoiceNotFound
from invoice_service.domain.model import Invoice, InvoiceStatus
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.ports import UnitOfWork
from invoice_service.service_layer.queries import note_with_invoice

__all__ = [
    "AvailableDocument",
    "EInvoiceDataMissing",
    "EInvoiceDocument",
    "EInvoiceFormat",
    "EInvoiceNotAvailable",
    "EInvoiceWriter",
    "available_documents",
    "credit_note_einvoice",
    "customer_settings",
    "einvoice",
    "offered_format",
    "set_customer_settings",
]


class EInvoiceNotAvailable(DomainError):
    """The invoice is a draft (or void): no e-invoice exists for it. Answered 409."""

    status = 409


class EInvoiceDataMissing(DomainError):
    """The document lacks data the format requires. Answered 422; `missing` names each
    (with the business term and the rule that asks for it), `rules` the rule ids."""

    status = 422

    def __init__(self, fmt: str, missing: list[str], rules: list[str] | None = None) -> None:
        super().__init__(
            f"the {fmt} e-invoice needs: {'; '.join(missing)}",
            format=fmt,
            missing=missing,
            **({"rules": rules} if rules else {}),
        )
        self.missing = missing


@dataclass(frozen=True, slots=True)
class EInvoiceDocument:
    content: bytes
    media_type: str
    filename: str


class EInvoiceWriter(Protocol):
    """Blocking (the Factur-X PDF renders): call `write*` in a worker thread."""

    def write(
        self, invoice: Invoice, fmt: EInvoiceFormat, *, buyer_reference: str | None
    ) -> EInvoiceDocument: ...

    def write_credit_note(
        self,
        note: CreditNote,
        invoice: Invoice,
        fmt: EInvoiceFormat,
        *,
        buyer_reference: str | None,
    ) -> EInvoiceDocument: ...

    def missing(self, invoice: Invoice, fmt: EInvoiceFormat) -> list[str]: ...


def _check_issued(invoice: Invoice) -> None:
    if invoice.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID) or invoice.number is None:
        raise EInvoiceNotAvailable(
            f"invoice {invoice.id} is {invoice.status.value}: e-invoices exist only for "
            "finalized invoices"
        )


async def einvoice(
    tenant: str,
    invoice_id: str,
    fmt: EInvoiceFormat,
    deps: Dependencies,
    writer: EInvoiceWriter,
    *,
    buyer_reference: str | None = None,
) -> EInvoiceDocument:
    """`buyer_reference`: BT-10 for this download; default: the one the invoice keeps."""
    async with deps.uow(tenant) as uow:
        invoice = await uow.invoices.get(invoice_id)
    if invoice is None:
        raise InvoiceNotFound(invoice_id)
    _check_issued(invoice)
    return await asyncio.to_thread(writer.write, invoice, fmt, buyer_reference=buyer_reference)


async def credit_note_einvoice(
    tenant: str,
    credit_note_id: str,
    fmt: EInvoiceFormat,
    deps: Dependencies,
    writer: EInvoiceWriter,
    *,
    buyer_reference: str | None = None,
) -> EInvoiceDocument:
    """The credit note (type 381, BT-25 naming its invoice) in `fmt`. A credit note exists
    only for an issued invoice, so it always has a number; its parties are its invoice's."""
    async with deps.uow(tenant) as uow:
        note, invoice = await note_with_invoice(uow, credit_note_id)
    return await asyncio.to_thread(
        writer.write_credit_note, note, invoice, fmt, buyer_reference=buyer_reference
    )


# ---- documents an issued invoice is offered with ------------------------------------------


@dataclass(frozen=True, slots=True)
class AvailableDocument:
    kind: str  # "pdf" | "einvoice"
    href: str
    format: EInvoiceFormat | None = None
    media_type: str = "application/pdf"


def available_documents(invoice: Invoice) -> list[AvailableDocument]:
    """What can be downloaded for an issued invoice: its PDF, and the e-invoice in the
    format chosen at finalization (the customer's default, when the invoice had what it
    needs). Drafts and void invoices have no legal document: none."""
    if invoice.number is None or invoice.status is InvoiceStatus.VOID:
        return []
    documents = [AvailableDocument("pdf", f"/v1/invoices/{invoice.id}/pdf")]
    fmt = invoice.einvoice_format
    if fmt is not None:
        documents.append(
            AvailableDocument(
                "einvoice",
                f"/v1/invoices/{invoice.id}/einvoice?format={fmt.value}",
                fmt,
                "application/pdf" if fmt is EInvoiceFormat.FACTURX else "application/xml",
            )
        )
    return documents


async def offered_format(
    uow: UnitOfWork, invoice: Invoice, deps: Dependencies
) -> EInvoiceFormat | None:
    """At finalization (in its transaction): the customer's default format, if the invoice
    being finalized has what that format needs; else None (the PDF only)."""
    settings = await uow.customer_settings.get(invoice.customer.id)
    fmt = settings.default_format.einvoice_format() if settings else None
    if fmt is None or deps.einvoices is None:
        return None
    return None if deps.einvoices.missing(invoice, fmt) else fmt


# ---- the customer's default format ---------------------------------------------------------


async def customer_settings(
    tenant: str, customer_id: str, deps: Dependencies
) -> CustomerEInvoiceSettings:
    """A customer never configured receives no e-invoice by default (format "none")."""
    async with deps.uow(tenant) as uow:
        found = await uow.customer_settings.get(customer_id)
    return found or CustomerEInvoiceSettings(customer_id, DefaultEInvoiceFormat.NONE)


async def set_customer_settings(
    tenant: str,
    customer_id: str,
    default_format: DefaultEInvoiceFormat,
    actor: str,
    deps: Dependencies,
) -> CustomerEInvoiceSettings:
    settings = CustomerEInvoiceSettings(customer_id, default_format, deps.clock(), actor)
    async with deps.uow(tenant) as uow:
        await uow.customer_settings.put(settings)
        await uow.commit()
    return settings
