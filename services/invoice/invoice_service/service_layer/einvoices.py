"""E-invoices (EN 16931) of finalized invoices: Factur-X PDF, XRechnung CII, Peppol UBL.

The use case loads the invoice, refuses drafts (an e-invoice is a legal document: it needs
the number and the seller snapshot taken at finalization) and hands the invoice to the
writer port, which maps it to EN 16931 and serializes it. Writers raise
`EInvoiceDataMissing` when the invoice lacks what the format requires.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from billing_common.errors import DomainError
from invoice_service.domain.errors import InvoiceNotFound
from invoice_service.domain.model import Invoice, InvoiceStatus
from invoice_service.service_layer.dependencies import Dependencies


class EInvoiceFormat(StrEnum):
    FACTURX = "facturx"  # PDF/A-3 with factur-x.xml (CII, EN 16931 profile)
    XRECHNUNG = "xrechnung"  # XRechnung 3.0 CII
    UBL = "ubl"  # Peppol BIS Billing 3.0 UBL


class EInvoiceNotAvailable(DomainError):
    """The invoice is a draft (or void): no e-invoice exists for it. Answered 409."""

    status = 409


class EInvoiceDataMissing(DomainError):
    """The invoice lacks data the format requires. Answered 422; `missing` names each."""

    status = 422

    def __init__(self, fmt: str, missing: list[str]) -> None:
        super().__init__(
            f"the {fmt} e-invoice needs: {'; '.join(missing)}", format=fmt, missing=missing
        )
        self.missing = missing


@dataclass(frozen=True, slots=True)
class EInvoiceDocument:
    content: bytes
    media_type: str
    filename: str


class EInvoiceWriter(Protocol):
    def write(
        self, invoice: Invoice, fmt: EInvoiceFormat, *, buyer_reference: str | None
    ) -> EInvoiceDocument:
        """Blocking (the Factur-X PDF renders): call it in a worker thread."""
        ...


async def einvoice(
    tenant: str,
    invoice_id: str,
    fmt: EInvoiceFormat,
    deps: Dependencies,
    writer: EInvoiceWriter,
    *,
    buyer_reference: str | None = None,
) -> EInvoiceDocument:
    async with deps.uow(tenant) as uow:
        invoice = await uow.invoices.get(invoice_id)
    if invoice is None:
        raise InvoiceNotFound(invoice_id)
    if invoice.status in (InvoiceStatus.DRAFT, InvoiceStatus.VOID) or invoice.number is None:
        raise EInvoiceNotAvailable(
            f"invoice {invoice_id} is {invoice.status.value}: e-invoices exist only for "
            "finalized invoices"
        )
    return await asyncio.to_thread(writer.write, invoice, fmt, buyer_reference=buyer_reference)
