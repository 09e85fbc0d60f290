"""The invoice as a document: HTML and PDF, with ETags and a PDF cache.

The ETag names the invoice's version (bumped by every change: status, payment, refund) and
the template version, so a cached or client-held document is reused exactly as long as it is
still what the invoice would render to.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass
from typing import Literal

from loguru import logger

from billing_common.ports import KeyValueStore
from invoice_service.domain.errors import InvoiceNotFound
from invoice_service.domain.model import Invoice
from invoice_service.service_layer.ports import InvoiceHtml, PdfRenderer
from invoice_service.service_layer.unit_of_work import UnitOfWorkFactory

PDF_CACHE_TTL_SECONDS = 7 * 24 * 3600

Kind = Literal["html", "pdf"]


@dataclass(frozen=True, slots=True)
class Document:
    etag: str  # quoted, ready for the ETag header
    content: bytes | None  # None: the client's copy is current (304)
    invoice: Invoice


def document_etag(invoice: Invoice, template_version: str, kind: Kind) -> str:
    digest = hashlib.sha256(
        f"{invoice.tenant_id}\n{invoice.id}\n{invoice.version}\n{template_version}\n{kind}".encode()
    ).hexdigest()[:32]
    return f'"{kind}-{digest}"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: weak comparison against a list of tags, or `*`."""
    if not if_none_match:
        return False
    wanted = etag.removeprefix("W/")
    for tag in (part.strip() for part in if_none_match.split(",")):
        if tag == "*" or tag.removeprefix("W/") == wanted:
            return True
    return False


def pdf_cache_key(invoice: Invoice) -> str:
    return f"invoice-pdf:{invoice.tenant_id}:{invoice.id}"


async def _load(tenant: str, invoice_id: str, uow: UnitOfWorkFactory) -> Invoice:
    async with uow(tenant) as unit:
        invoice = await unit.invoices.get(invoice_id)
    if invoice is None:
        raise InvoiceNotFound(invoice_id)
    return invoice


async def invoice_html(
    tenant: str,
    invoice_id: str,
    *,
    uow: UnitOfWorkFactory,
    html: InvoiceHtml,
    if_none_match: str | None = None,
) -> Document:
    invoice = await _load(tenant, invoice_id, uow)
    etag = document_etag(invoice, html.version, "html")
    if etag_matches(if_none_match, etag):
        return Document(etag, None, invoice)
    return Document(etag, html.render(invoice).encode(), invoice)


async def invoice_pdf(
    tenant: str,
    invoice_id: str,
    *,
    uow: UnitOfWorkFactory,
    html: InvoiceHtml,
    renderer: PdfRenderer,
    cache: KeyValueStore,
    if_none_match: str | None = None,
) -> Document:
    invoice = await _load(tenant, invoice_id, uow)
    etag = document_etag(invoice, html.version, "pdf")
    if etag_matches(if_none_match, etag):
        return Document(etag, None, invoice)
    key = pdf_cache_key(invoice)
    cached = await cache.get(key)
    if cached is not None and isinstance(cached.value, dict) and cached.value.get("etag") == etag:
        return Document(etag, base64.b64decode(cached.value["pdf"]), invoice)

    def render() -> bytes:
        return renderer.render(html.render(invoice))

    # WeasyPrint is CPU-bound: a worker thread keeps the event loop serving.
    pdf = await asyncio.to_thread(render)
    try:
        # One entry per invoice, overwritten by each new version: the cache stays bounded.
        await cache.set(
            key,
            {"etag": etag, "pdf": base64.b64encode(pdf).decode()},
            ttl_seconds=PDF_CACHE_TTL_SECONDS,
        )
    except Exception as exc:  # noqa: BLE001 - the cache is an optimisation, the PDF is ready
        logger.warning("could not cache the PDF of invoice {}: {}", invoice.id, exc)
    return Document(etag, pdf, invoice)


@dataclass(frozen=True)
class DocumentServices:
    """What the document endpoints need, wired once by bootstrap."""

    html: InvoiceHtml
    renderer: PdfRenderer
    cache: KeyValueStore
