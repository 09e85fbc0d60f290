"""PDF rendering with WeasyPrint, behind the PdfRenderer port: the use cases never import
it. WeasyPrint needs Pango (Debian: libpango-1.0-0 libpangoft2-1.0-0, plus fonts such as
fonts-dejavu-core) and renders several times faster with HarfBuzz's subsetter
(libharfbuzz-subset0, else fontTools subsets the fonts in Python); without Pango rendering
answers PdfUnavailable (503), the rest of the service keeps working.

Two adapters:
- `WeasyPrintRenderer` renders in the calling thread, one render at a time per process, with
  one FontConfiguration and the stylesheet parsed once for every document.
- `ProcessPoolRenderer` renders in a bounded pool of worker processes (pebble), each holding a
  `WeasyPrintRenderer`. A render that runs past its timeout is stopped with its worker (a new
  one takes its place) and answered PdfRenderTimeout; the API process never loads WeasyPrint,
  so its memory stays that of the API, and a long render cannot hold up the event loop.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from loguru import logger

from invoice_service.domain.errors import PdfRenderTimeout, PdfUnavailable

_WARM_UP_HTML = "<p>warm-up</p>"


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
            self._loaded = (HTML, fonts, sheets)
        return self._loaded

    def render(self, html: str) -> bytes:
        with self._lock:
            html_class, fonts, sheets = self._load()
            pdf: bytes = html_class(string=html).write_pdf(stylesheets=sheets, font_config=fonts)
        return pdf


# -- worker processes ------------------------------------------------------------------------

_worker: WeasyPrintRenderer | None = None


def _start_worker(stylesheet: str | None) -> None:
    """Runs once in each new worker process: load WeasyPrint, parse the stylesheet and render
    a first page, so that the first invoice this worker renders is already warm."""
    global _worker
    _worker = WeasyPrintRenderer(stylesheet)
    with contextlib.suppress(PdfUnavailable):  # answered on each render instead
        _worker.render(_WARM_UP_HTML)


def _render_in_worker(html: str) -> bytes:
    assert _worker is not None, "the pool initializer did not run"
    return _worker.render(html)


class ProcessPoolRenderer:
    def __init__(
        self,
        stylesheet: str | None = None,
        *,
        workers: int = 2,
        timeout_seconds: float = 30.0,
        max_renders_per_worker: int = 500,
    ) -> None:
        if workers < 1:
            raise ValueError("a process pool needs at least one worker")
        self._stylesheet = stylesheet
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
                    initargs=(self._stylesheet,),
                    # spawn: a fork of a process running an event loop and threads is unsafe
                    context=multiprocessing.get_context("spawn"),
                )
            return self._pool

    def render(self, html: str) -> bytes:
        from pebble import ProcessExpired

        future = self._get_pool().schedule(_render_in_worker, args=(html,), timeout=self._timeout)
        try:
            pdf: bytes = future.result()
        except FutureTimeout as exc:
            raise PdfRenderTimeout(
                f"the PDF was not rendered within {self._timeout:g} s and was stopped; retry later",
                timeout_seconds=self._timeout,
            ) from exc
        except ProcessExpired as exc:
            logger.error("a PDF worker process died: {}", exc)
            raise PdfUnavailable("the PDF renderer stopped unexpectedly; retry later") from exc
        return pdf

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()
            pool.join(timeout=10)
