"""PDF rendering with WeasyPrint, behind the PdfRenderer port: the use cases never import
it. WeasyPrint needs Pango (Debian: libpango-1.0-0 libpangoft2-1.0-0, plus fonts such as
fonts-dejavu-core); without them rendering answers PdfUnavailable (503), the rest of the
service keeps working."""

from __future__ import annotations

import threading
from typing import Any

from loguru import logger

from invoice_service.domain.errors import PdfUnavailable


class WeasyPrintRenderer:
    def __init__(self) -> None:
        self._html_class: Any = None
        # Pango and fontconfig do not promise thread safety: renders run in worker threads
        # (off the event loop) but one at a time.
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._html_class is None:
            try:
                from weasyprint import HTML  # deferred: importing loads the C libraries
            except (OSError, ImportError) as exc:
                logger.warning("WeasyPrint cannot load: {}", exc)
                raise PdfUnavailable(
                    "PDF rendering is not available: install WeasyPrint's system packages "
                    "(Debian: libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core)"
                ) from exc
            self._html_class = HTML
        return self._html_class

    def render(self, html: str) -> bytes:
        with self._lock:
            document = self._load()(string=html)
            pdf: bytes = document.write_pdf()
        return pdf
