"""The Factur-X PDF: a document's HTML rendered as PDF/A-3b by WeasyPrint, with factur-x.xml
embedded by the `factur-x` library (AFRelationship /Data, the Factur-X XMP extension schema,
conformance level EN 16931).

It runs where the documents are written (adapters/pdf.py): in the PDF worker processes, so
the API process never loads WeasyPrint, pypdf or the templates' libraries for an e-invoice
(issue 11, RSS); in the calling process with INVOICE_PDF_WORKERS=0."""

from __future__ import annotations

import threading
from typing import Any

from loguru import logger

from invoice_service.domain.errors import PdfUnavailable


class FacturXPdf:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # Pango/fontconfig: one WeasyPrint render at a time
        self._weasyprint: Any = None

    def write(self, html: str, xml: bytes, *, author: str, title: str, language: str) -> bytes:
        """The PDF/A-3b of `html` with `xml` embedded; `title` (in the document's language)
        and `author` (the seller) go into its metadata."""
        from facturx import generate_from_binary  # deferred: it imports pypdf

        with self._lock:
            pdf = self._render_pdf_a3(html)
        metadata = {
            "author": author,
            "keywords": "Factur-X, EN 16931",
            "title": title,
            "subject": f"Factur-X: {title}",
        }
        result: bytes = generate_from_binary(
            pdf,
            xml,
            flavor="factur-x",
            level="en16931",
            check_xsd=True,
            pdf_metadata=metadata,
            lang=language,
        )
        logger.bind(service="invoice").debug("factur-x {} rendered ({} bytes)", title, len(result))
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
