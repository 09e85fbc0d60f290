"""PDF rendering with WeasyPrint, behind the PdfRenderer port: the use cases never import
it. WeasyPrint needs Pango (Debian: libpango-1.0-0 libpangoft2-1.0-0, plus fonts such as
fonts-dejavu-core) and renders several times faster with HarfBuzz's subsetter
(libharfbuzz-subset0, else fontTools subsets the fonts in Python); without Pango rendering
answers PdfUnavailable (503), the rest of the service keeps working.

Three adapters:
- `WeasyPrintRenderer` renders HTML to PDF in the calling thread, one render at a time per
  process, with one FontConfiguration and the stylesheet parsed once for every document.
- `LocalDocuments` writes the invoice and credit note documents (HTML by the Jinja2
  templates, PDF by a PdfRenderer, the Factur-X PDF/A-3 by adapters/einvoice/facturx.py) in
  the calling process: the DocumentRenderer port and the e-invoice writer's FacturXDocuments,
  for INVOICE_PDF_WORKERS=0 and inside each worker process.
- `ProcessPoolRenderer` does the same in a bounded pool of worker processes (pebble), each
  holding a `LocalDocuments` over a `WeasyPrintRenderer`: the API process sends the invoice's
  plain data (picklable domain objects, and the factur-x.xml for a Factur-X) and gets back
  the HTML or the PDF, so it never loads Jinja2, babel, WeasyPrint or factur-x and its
  memory stays that of the API (issue 11); a long render cannot hold up the event loop. A
  render that runs past its timeout is stopped with its worker (a new one takes its place)
  and answered PdfRenderTimeout.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import re
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from loguru import logger

from invoice_service.adapters.credit_note_html import JinjaCreditNoteHtml
from invoice_service.adapters.document_locale import DocumentLocales
from invoice_service.adapters.einvoice.facturx import FacturXPdf
from invoice_service.adapters.html import JinjaInvoiceHtml, Seller
from invoice_service.domain.credit_notes import CreditNote
from invoice_service.domain.errors import PdfRenderTimeout, PdfUnavailable
from invoice_service.domain.model import Invoice
from invoice_service.service_layer.ports import PdfRenderer

T = TypeVar("T")

_WARM_UP_HTML = "<p>warm-up</p>"

# A worker's collector thresholds: a one-page render makes ~5,000 more container objects than
# it frees (boxes, styles, Pango wrappers), so CPython's default first-generation threshold
# (700) runs ~7 young and ~0.8 older collections per render, each walking what the render
# still holds: 8-10 ms of a ~75-100 ms render. At 10,000 a render runs about one young
# collection in two, ~3 ms (issue 11). Set in the worker processes only, never in the API's.
_WORKER_GC_THRESHOLDS = (10_000, 10, 10)

# Rules of WeasyPrint's user-agent stylesheet for pseudo-elements of *every* element: it
# computes a style for each of them on each element (six per element, ~90% of an invoice's
# styles) though a document here has no footnote or note, and list markers only on list
# items. Without them (`::marker` kept for li and summary) the PDF is byte for byte the same
# and a render ~7% cheaper (issue 11).
_UNIVERSAL_PSEUDO_RULES = re.compile(
    r"^::(?:footnote-call|footnote-marker|note-call|note-marker|note-callback) \{[^}]*\}\n",
    re.MULTILINE,
)
_UNIVERSAL_MARKER = "\n::marker {"
_LIST_MARKERS = "\nli::marker, summary::marker {"


def _documents_html_class(html_class: Any, css_class: Any, user_agent: Any) -> Any:
    """WeasyPrint's HTML with the user-agent stylesheet less the universal pseudo-element
    rules; WeasyPrint's own HTML if its stylesheet is not the one this was written for."""
    text = getattr(user_agent, "UA", None)
    if not isinstance(text, str) or not hasattr(html_class, "_ua_stylesheets"):
        return html_class
    trimmed, removed = _UNIVERSAL_PSEUDO_RULES.subn("", text)
    if removed != 5 or text.count(_UNIVERSAL_MARKER) != 1:
        return html_class
    trimmed = trimmed.replace(_UNIVERSAL_MARKER, _LIST_MARKERS)
    sheet = css_class(string=trimmed, counter_style=user_agent.UA_COUNTER_STYLE)
    form_sheet = user_agent.UA_FORM_STYLESHEET

    class DocumentHTML(html_class):  # type: ignore[misc]
        def _ua_stylesheets(self, forms: bool = False) -> list[Any]:
            return [sheet, form_sheet] if forms else [sheet]

    return DocumentHTML


class WeasyPrintRenderer:
    def __init__(self, stylesheet: str | None = None) -> None:
        self._stylesheet = stylesheet
        self._loaded: tuple[Any, Any, list[Any]] | None = None
        # Pango and fontconfig do not promise thread safety: renders run in worker threads
        # (off the event loop) but one at a time.
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any, list[Any]]:
        if self._loaded is None:
            try:
                # deferred: importing loads the C libraries
                from weasyprint import CSS, HTML
                from weasyprint import html as user_agent
                from weasyprint.text.fonts import FontConfiguration
            except (OSError, ImportError) as exc:
                logger.warning("WeasyPrint cannot load: {}", exc)
                raise PdfUnavailable(
                    "PDF rendering is not available: install WeasyPrint's system packages "
                    "(Debian: libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core)"
                ) from exc
            fonts = FontConfiguration()
            sheets = (
                []
                if self._stylesheet is None
                else [CSS(string=self._stylesheet, font_config=fonts)]
            )
            self._loaded = (_documents_html_class(HTML, CSS, user_agent), fonts, sheets)
        return self._loaded

    def render(self, html: str) -> bytes:
        with self._lock:
            html_class, fonts, sheets = self._load()
            pdf: bytes = html_class(string=html).write_pdf(stylesheets=sheets, font_config=fonts)
        return pdf


class LocalDocuments:
    """The documents written in this process: HTML by the templates, PDF by `pdf` from the
    same HTML without its embedded stylesheet (the renderer applies it, parsed once)."""

    def __init__(
        self, invoices: JinjaInvoiceHtml, credit_notes: JinjaCreditNoteHtml, pdf: PdfRenderer
    ) -> None:
        self.invoices = invoices
        self.credit_notes = credit_notes
        self._pdf = pdf
        self._facturx = FacturXPdf()

    def render(self, html: str) -> bytes:
        return self._pdf.render(html)

    def invoice_html(self, invoice: Invoice) -> str:
        return self.invoices.render(invoice)

    def invoice_pdf(self, invoice: Invoice) -> bytes:
        return self._pdf.render(self.invoices.render(invoice, embed_stylesheet=False))

    def credit_note_pdf(self, note: CreditNote, invoice: Invoice) -> bytes:
        return self._pdf.render(self.credit_notes.render(note, invoice, embed_stylesheet=False))

    def invoice_facturx(self, invoice: Invoice, xml: bytes, *, author: str) -> bytes:
        return self._facturx.write(
            self.invoices.render(invoice),
            xml,
            author=author,
            title=self.invoices.title(invoice),  # in the invoice's language
            language=invoice.language,
        )

    def credit_note_facturx(
        self, note: CreditNote, invoice: Invoice, xml: bytes, *, author: str
    ) -> bytes:
        return self._facturx.write(
            self.credit_notes.render(note, invoice),
            xml,
            author=author,
            title=self.credit_notes.title(note, invoice),
            language=invoice.language,
        )


def local_documents(seller: Seller, pdf: PdfRenderer | None = None) -> LocalDocuments:
    """Both templates over one set of catalogs; `pdf` defaults to WeasyPrint with the
    templates' stylesheet."""
    locales = DocumentLocales()
    invoices = JinjaInvoiceHtml(seller, locales)
    credit_notes = JinjaCreditNoteHtml(seller, locales)
    return LocalDocuments(invoices, credit_notes, pdf or WeasyPrintRenderer(invoices.stylesheet))


# -- worker processes ------------------------------------------------------------------------

_worker: WeasyPrintRenderer | None = None
_documents: LocalDocuments | None = None


def _start_worker(stylesheet: str | None, seller: Seller | None) -> None:
    """Runs once in each new worker process: load WeasyPrint, parse the stylesheet and render
    a first page, so that the first invoice this worker renders is already warm."""
    global _worker, _documents
    gc.set_threshold(*_WORKER_GC_THRESHOLDS)
    _worker = WeasyPrintRenderer(stylesheet)
    if seller is not None:
        _documents = local_documents(seller, _worker)
    with contextlib.suppress(PdfUnavailable):  # answered on each render instead
        _worker.render(_WARM_UP_HTML)


def _render_in_worker(html: str) -> bytes:
    assert _worker is not None, "the pool initializer did not run"
    return _worker.render(html)


def _worker_documents() -> LocalDocuments:
    assert _documents is not None, "the pool was started without a seller"
    return _documents


def _invoice_html_in_worker(invoice: Invoice) -> str:
    return _worker_documents().invoice_html(invoice)


def _invoice_pdf_in_worker(invoice: Invoice) -> bytes:
    return _worker_documents().invoice_pdf(invoice)


def _credit_note_pdf_in_worker(note: CreditNote, invoice: Invoice) -> bytes:
    return _worker_documents().credit_note_pdf(note, invoice)


def _invoice_facturx_in_worker(invoice: Invoice, xml: bytes, author: str) -> bytes:
    return _worker_documents().invoice_facturx(invoice, xml, author=author)


def _credit_note_facturx_in_worker(
    note: CreditNote, invoice: Invoice, xml: bytes, author: str
) -> bytes:
    return _worker_documents().credit_note_facturx(note, invoice, xml, author=author)


def _import_pool_modules() -> None:
    """What starting the pool imports, imported by the thread that builds the renderer (the
    service's wiring) rather than by the first render's worker thread: glibc gives each new
    thread an arena of its own, and the same modules allocated there cost the API process
    ~1.2 MB more RSS (issue 11). No worker process is started."""
    import concurrent.futures.process  # noqa: F401
    import multiprocessing.popen_spawn_posix
    import multiprocessing.queues
    import multiprocessing.synchronize  # noqa: F401

    import pebble  # noqa: F401


class ProcessPoolRenderer:
    """`render` turns HTML given into PDF with `stylesheet`; with `seller` (the default issuer
    printed when an invoice names none) the workers also write the documents themselves, from
    the templates (whose stylesheet `stylesheet` then must be)."""

    def __init__(
        self,
        stylesheet: str | None = None,
        *,
        seller: Seller | None = None,
        workers: int = 2,
        timeout_seconds: float = 30.0,
        max_renders_per_worker: int = 500,
    ) -> None:
        if workers < 1:
            raise ValueError("a process pool needs at least one worker")
        _import_pool_modules()
        self._stylesheet = stylesheet
        self._seller = seller
        self._workers = workers
        self._timeout = timeout_seconds
        # Workers are recycled now and then: a long-lived WeasyPrint process only grows.
        self._max_tasks = max_renders_per_worker
        self._pool: Any = None
        self._lock = threading.Lock()

    @property
    def workers(self) -> int:
        return self._workers

    def _get_pool(self) -> Any:
        # Started on the first render, not at start-up: a service that never renders a PDF
        # never pays for the worker processes.
        with self._lock:
            if self._pool is None:
                from pebble import ProcessPool

                self._pool = ProcessPool(
                    max_workers=self._workers,
                    max_tasks=self._max_tasks,
                    initializer=_start_worker,
                    initargs=(self._stylesheet, self._seller),
                    # spawn: a fork of a process running an event loop and threads is unsafe
                    context=multiprocessing.get_context("spawn"),
                )
            return self._pool

    def _run(self, task: Callable[..., T], *args: Any) -> T:
        from pebble import ProcessExpired

        future = self._get_pool().schedule(task, args=args, timeout=self._timeout)
        try:
            result: T = future.result()
        except FutureTimeout as exc:
            raise PdfRenderTimeout(
                f"the document was not rendered within {self._timeout:g} s and was stopped; "
                "retry later",
                timeout_seconds=self._timeout,
            ) from exc
        except ProcessExpired as exc:
            logger.error("a PDF worker process died: {}", exc)
            raise PdfUnavailable("the PDF renderer stopped unexpectedly; retry later") from exc
        return result

    def _documents_task(self, task: Callable[..., T], *args: Any) -> T:
        if self._seller is None:
            raise ValueError("this pool renders given HTML only: it was started without a seller")
        return self._run(task, *args)

    def render(self, html: str) -> bytes:
        return self._run(_render_in_worker, html)

    def invoice_html(self, invoice: Invoice) -> str:
        return self._documents_task(_invoice_html_in_worker, invoice)

    def invoice_pdf(self, invoice: Invoice) -> bytes:
        return self._documents_task(_invoice_pdf_in_worker, invoice)

    def credit_note_pdf(self, note: CreditNote, invoice: Invoice) -> bytes:
        return self._documents_task(_credit_note_pdf_in_worker, note, invoice)

    def invoice_facturx(self, invoice: Invoice, xml: bytes, *, author: str) -> bytes:
        return self._documents_task(_invoice_facturx_in_worker, invoice, xml, author)

    def credit_note_facturx(
        self, note: CreditNote, invoice: Invoice, xml: bytes, *, author: str
    ) -> bytes:
        return self._documents_task(_credit_note_facturx_in_worker, note, invoice, xml, author)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
            pool.join(timeout=10)
