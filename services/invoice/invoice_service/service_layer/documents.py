"""The invoice as a document: HTML and PDF, with ETags and a PDF cache.

The ETag names the invoice's version (bumped by every change: status, payment, refund), its
documents' language and the template version (translations included), so a cached or
client-held document is reused exactly as long as it is still what the invoice would render
to. The ETag is computed from a one-row read of the invoice's header (its `DocumentStamp`);
the whole invoice is loaded only to render.

Both are written by the DocumentRenderer (in worker processes in production) under the
tenant's render slots: an HTML document costs a render like a PDF does, so it waits for the
same slot.

Rendered PDFs are kept in the key/value store (shared by replicas, survives restarts) and, in
front of it, in a small per-process memory cache. Both are keyed by invoice and language and
checked against the ETag of the version just read, so neither can serve a document of an
older version or of another language, whichever replica changed the invoice.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal

from loguru import logger

from billing_common.ports import KeyValueStore
from invoice_service.domain.errors import InvoiceNotFound, PdfRenderBusy
from invoice_service.domain.model import Invoice
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.ports import (
    DocumentRenderer,
    DocumentStamp,
    InvoiceHtml,
    UnitOfWorkFactory,
)

PDF_CACHE_TTL_SECONDS = 7 * 24 * 3600

Kind = Literal["html", "pdf"]


@dataclass(frozen=True, slots=True)
class Document:
    etag: str  # quoted, ready for the ETag header
    content: bytes | None  # None: the client's copy is current (304)
    stamp: DocumentStamp

    @property
    def file_stem(self) -> str:
        return self.stamp.number or f"draft-{self.stamp.invoice_id}"


def document_etag(stamp: DocumentStamp, template_version: str, kind: Kind) -> str:
    digest = hashlib.sha256(
        f"{stamp.tenant_id}\n{stamp.invoice_id}\n{stamp.version}\n{stamp.language}\n"
        f"{template_version}\n{kind}".encode()
    ).hexdigest()[:32]
    return f'"{kind}-{digest}"'


class PdfMemoryCache:
    """The most recently served PDFs of this process, one entry per invoice, bounded in
    bytes. An entry is used only under the ETag it was rendered for."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self._max_bytes = max_bytes
        self._size = 0
        self._entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()

    def get(self, key: str, etag: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != etag:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: str, etag: str, pdf: bytes) -> None:
        if len(pdf) > self._max_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self._size -= len(previous[1])
        self._entries[key] = (etag, pdf)
        self._size += len(pdf)
        while self._size > self._max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self._size -= len(dropped)


class TenantRenderSlots:
    """At most `per_tenant` document renders (PDF or HTML) of one tenant run at once (the
    others wait for a slot, up to `wait_seconds`), so one tenant's large invoices cannot
    occupy every renderer while other tenants wait."""

    def __init__(self, per_tenant: int = 1, wait_seconds: float = 30.0) -> None:
        self._per_tenant = per_tenant
        self._wait_seconds = wait_seconds
        self._slots: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, tenant: str) -> AsyncIterator[None]:
        semaphore, users = self._slots.setdefault(
            tenant, (asyncio.Semaphore(self._per_tenant), [0])
        )
        users[0] += 1
        try:
            try:
                await asyncio.wait_for(semaphore.acquire(), self._wait_seconds)
            except TimeoutError:
                raise PdfRenderBusy(
                    f"this tenant already has {self._per_tenant} document render(s) running; "
                    "retry shortly",
                    renders_at_once=self._per_tenant,
                ) from None
            try:
                yield
            finally:
                semaphore.release()
        finally:
            users[0] -= 1
            if users[0] == 0:  # nobody holds or waits: forget the tenant
                del self._slots[tenant]


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against a list of tags, or `*`."""
    if not if_none_match:
        return False
    wanted = etag.removeprefix("W/")
    for tag in (part.strip() for part in if_none_match.split(",")):
        if tag == "*" or tag.removeprefix("W/") == wanted:
            return True
    return False


def pdf_cache_key(stamp: DocumentStamp) -> str:
    """One entry per invoice and language (the ETag, checked on every read, names the
    version): the German PDF never answers for the French one."""
    return f"invoice-pdf:{stamp.tenant_id}:{stamp.invoice_id}:{stamp.language}"


async def _load(tenant: str, invoice_id: str, uow: UnitOfWorkFactory) -> Invoice:
    async with uow(tenant) as unit:
        invoice = await unit.invoices.get(invoice_id)
    if invoice is None:
        raise InvoiceNotFound(invoice_id)
    return invoice


async def _load_stamped(
    tenant: str, invoice_id: str, uow: UnitOfWorkFactory, version: str, kind: Kind
) -> tuple[Invoice, DocumentStamp, str]:
    """The invoice to render, with its stamp and ETag: it may have changed since the stamp
    that decided the 304 was read, so the document names what is rendered."""
    invoice = await _load(tenant, invoice_id, uow)
    stamp = DocumentStamp.of(invoice)
    return invoice, stamp, document_etag(stamp, version, kind)


async def _stamp(tenant: str, invoice_id: str, uow: UnitOfWorkFactory) -> DocumentStamp:
    async with uow(tenant) as unit:
        stamp = await unit.invoices.stamp(invoice_id)
    if stamp is None:
        raise InvoiceNotFound(invoice_id)
    return stamp


async def invoice_html(
    tenant: str,
    invoice_id: str,
    deps: Dependencies,
    documents: DocumentServices,
    *,
    if_none_match: str | None = None,
) -> Document:
    version = documents.html.version
    # A one-row read decides a 304 before the invoice is loaded or anything rendered.
    stamp = await _stamp(tenant, invoice_id, deps.uow)
    etag = document_etag(stamp, version, "html")
    if etag_matches(if_none_match, etag):
        return Document(etag, None, stamp)
    invoice, stamp, etag = await _load_stamped(tenant, invoice_id, deps.uow, version, "html")
    async with documents.slots.hold(tenant):
        html = await asyncio.to_thread(documents.renderer.invoice_html, invoice)
    return Document(etag, html.encode(), stamp)


async def invoice_pdf(
    tenant: str,
    invoice_id: str,
    deps: Dependencies,
    documents: DocumentServices,
    *,
    if_none_match: str | None = None,
) -> Document:
    uow, html, renderer = deps.uow, documents.html, documents.renderer
    cache, memory, slots = documents.cache, documents.memory, documents.slots
    stamp = await _stamp(tenant, invoice_id, uow)
    etag = document_etag(stamp, html.version, "pdf")
    if etag_matches(if_none_match, etag):
        return Document(etag, None, stamp)
    key = pdf_cache_key(stamp)
    if (pdf := memory.get(key, etag)) is not None:
        return Document(etag, pdf, stamp)
    cached = await cache.get(key)
    if cached is not None and isinstance(cached.value, dict) and cached.value.get("etag") == etag:
        pdf = base64.b64decode(cached.value["pdf"])
        memory.put(key, etag, pdf)
        return Document(etag, pdf, stamp)

    invoice, stamp, etag = await _load_stamped(tenant, invoice_id, uow, html.version, "pdf")

    # Rendering blocks (in this process or waiting for a worker process): a worker thread
    # keeps the event loop serving.
    async with slots.hold(tenant):
        pdf = await asyncio.to_thread(renderer.invoice_pdf, invoice)
    memory.put(key, etag, pdf)
    try:
        # One entry per invoice and language (an invoice changes its language at most once,
        # at finalization), overwritten by each new version: the cache stays bounded.
        await cache.set(
            key,
            {"etag": etag, "pdf": base64.b64encode(pdf).decode()},
            ttl_seconds=PDF_CACHE_TTL_SECONDS,
        )
    except Exception as exc:  # noqa: BLE001 - the cache is an optimisation, the PDF is ready
        logger.warning("could not cache the PDF of invoice {}: {}", invoice.id, exc)
    return Document(etag, pdf, stamp)


@dataclass(frozen=True)
class DocumentServices:
    """What the document endpoints need, wired once by bootstrap."""

    html: InvoiceHtml  # its version names the documents (ETags); it renders nothing here
    renderer: DocumentRenderer
    cache: KeyValueStore
    memory: PdfMemoryCache = field(default_factory=PdfMemoryCache)
    slots: TenantRenderSlots = field(default_factory=TenantRenderSlots)
