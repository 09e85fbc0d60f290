"""The e-invoice writer: checks what the chosen format requires beyond EN 16931, maps the
invoice (en16931.py) and serializes it; the Factur-X PDF is the invoice's own document
rendered as PDF/A-3b by WeasyPrint, with factur-x.xml embedded by the `factur-x` library
(AFRelationship /Data, the Factur-X XMP extension schema, conformance level EN 16931)."""

from __future__ import annotations

import threading
from typing import Any

from loguru import logger

from invoice_service.adapters.einvoice.en16931 import MissingData, from_invoice
from invoice_service.domain.errors import PdfUnavailable
from invoice_service.domain.model import Invoice
from invoice_service.service_layer.einvoices import (
    EInvoiceDataMissing,
    EInvoiceDocument,
    EInvoiceFormat,
)
from invoice_service.service_layer.ports import InvoiceHtml

XML = "application/xml"


def format_requirements(
    invoice: Invoice, fmt: EInvoiceFormat, buyer_reference: str | None
) -> list[str]:
    """What EN 16931 needs that the mapping cannot see as missing, and what the CIUS
    (XRechnung 3.0) or Peppol BIS 3.0 require on top of it."""
    seller, customer = invoice.seller, invoice.customer
    missing: list[str] = []
    if seller is not None and not seller.vat_id:
        # BR-CO-26 wants BT-29, BT-30 or BT-31; sellers keep only the VAT id of the three.
        missing.append("seller.vat_id (BT-31, BR-CO-26)")
    if fmt is EInvoiceFormat.FACTURX:
        return missing
    if not buyer_reference:
        # BR-DE-15 (XRechnung: the Leitweg-ID), PEPPOL-EN16931-R003
        missing.append("buyer_reference (BT-10, e.g. the Leitweg-ID)")
    if seller is not None and not seller.email:
        missing.append("seller.email (BT-34 electronic address)")  # BR-DE / PEPPOL R020
    if not customer.email:
        missing.append("customer.email (BT-49 electronic address)")  # PEPPOL R010
    if fmt is EInvoiceFormat.XRECHNUNG:
        if seller is not None:
            if not seller.address.postcode:
                missing.append("seller.address.postcode (BR-DE-4)")
            if not seller.phone:
                missing.append("seller.phone (BT-42, BR-DE-6)")
            if seller.bank_account is None:
                missing.append("seller.bank_account (BG-16 payment instructions, BR-DE-1)")
        # The customer's address is free text on an invoice: XRechnung needs the buyer's
        # city and postcode as fields, which the platform does not keep yet.
        missing.append("customer city and postcode as structured fields (BR-DE-8, BR-DE-9)")
    return missing


class EN16931Writer:
    def __init__(self, html: InvoiceHtml) -> None:
        self._html = html
        self._lock = threading.Lock()  # Pango/fontconfig: one WeasyPrint render at a time
        self._weasyprint: Any = None

    def write(
        self, invoice: Invoice, fmt: EInvoiceFormat, *, buyer_reference: str | None
    ) -> EInvoiceDocument:
        missing = format_requirements(invoice, fmt, buyer_reference)
        try:
            doc = from_invoice(invoice, buyer_reference=buyer_reference)
        except MissingData as exc:
            missing = exc.missing + missing
        if missing:
            raise EInvoiceDataMissing(fmt.value, missing)
        # Deferred like factur-x below: the serializers load lxml (about 5 MB of RSS), which
        # an invoice service that never writes an e-invoice need not carry.
        from invoice_service.adapters.einvoice.cii import FACTURX_EN16931, XRECHNUNG_3, to_cii
        from invoice_service.adapters.einvoice.ubl import to_ubl

        stem = invoice.number or invoice.id
        if fmt is EInvoiceFormat.UBL:
            return EInvoiceDocument(to_ubl(doc), XML, f"{stem}-ubl.xml")
        if fmt is EInvoiceFormat.XRECHNUNG:
            return EInvoiceDocument(
                to_cii(doc, guideline=XRECHNUNG_3), XML, f"{stem}-xrechnung.xml"
            )
        xml = to_cii(doc, guideline=FACTURX_EN16931)
        return EInvoiceDocument(self._facturx(invoice, xml), "application/pdf", f"{stem}.pdf")

    def _facturx(self, invoice: Invoice, xml: bytes) -> bytes:
        from facturx import generate_from_binary  # deferred: it imports pypdf

        with self._lock:
            pdf = self._render_pdf_a3(self._html.render(invoice))
        seller = invoice.seller
        metadata = {
            "author": seller.legal_name if seller else "",
            "keywords": "Factur-X, Invoice",
            "title": self._html.title(invoice),  # in the invoice's language
            "subject": f"Factur-X invoice {invoice.number}",
        }
        result: bytes = generate_from_binary(
            pdf,
            xml,
            flavor="factur-x",
            level="en16931",
            check_xsd=True,
            pdf_metadata=metadata,
            lang=invoice.language,
        )
        logger.bind(service="invoice").debug(
            "factur-x {} rendered ({} bytes)", invoice.number, len(result)
        )
        return result

    def _render_pdf_a3(self, html: str) -> bytes:
        if self._weasyprint is None:
            try:
                import weasyprint
            except (OSError, ImportError) as exc:
                raise PdfUnavailable("PDF rendering is not available on this host") from exc
            self._weasyprint = weasyprint
        pdf: bytes = self._weasyprint.HTML(string=html).write_pdf(pdf_variant="pdf/a-3b")
        return pdf
