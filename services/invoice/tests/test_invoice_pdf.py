"""Documents: HTML and PDF (WeasyPrint) from one template, ETags, 304, a cache that follows
the invoice's version, rendering off the event loop."""

from __future__ import annotations

import asyncio
import io
import time
from decimal import Decimal
from typing import Any

from pypdf import PdfReader
from sqlalchemy import update
from sqlmodel import col

from billing_common.event_schemas import PAYMENT_RECEIVED, PaymentReceived
from billing_common.events import new_event
from invoice_service.adapters.orm import InvoiceRow
from invoice_service.adapters.pdf import LocalDocuments
from invoice_service.domain.errors import PdfUnavailable
from invoice_service.service_layer.documents import PdfMemoryCache


def pdf_text(content: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(content)).pages)


class CountingRenderer:
    def __init__(self, inner: Any, delay: float = 0.0) -> None:
        self.inner = inner
        self.calls = 0
        self.delay = delay

    def render(self, html: str) -> bytes:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)  # blocking, like real rendering
        return bytes(self.inner.render(html))


def use_renderer(api: Any, renderer: Any) -> None:
    """Documents written in this process, their PDFs rendered by `renderer`."""
    documents = api.app.state.documents
    writer = LocalDocuments(documents.html, api.app.state.credit_note_html, renderer)
    api.app.state.documents = type(documents)(documents.html, writer, documents.cache)


async def test_pdf_content_etag_cache_and_regeneration(api, make_body):
    counting = CountingRenderer(api.app.state.documents.renderer)
    use_renderer(api, counting)
    body = make_body(coupon_codes=["WELCOME10"])
    body["customer"]["address"] = "Hauptstraße 1\n10115 Berlin"
    invoice = (await api.create(body)).json()
    url = f"/v1/invoices/{invoice['id']}/pdf"

    first = await api.client.get(url, headers=api.headers())
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/pdf"
    assert first.content.startswith(b"%PDF")
    etag = first.headers["etag"]
    text = pdf_text(first.content)
    for expected in (
        "DRAFT",
        "Erika Mustermann",
        "Hauptstraße 1",
        "Widget",
        "Book",
        "Welcome 10%",
        "DE VAT standard",
        "DE VAT reduced",
        "246.30",
        "Amount due",
    ):
        assert expected in text, expected

    # Same version: If-None-Match -> 304 without rendering; a plain GET comes from the cache.
    not_modified = await api.client.get(url, headers=api.headers(**{"if-none-match": etag}))
    assert not_modified.status_code == 304 and not_modified.headers["etag"] == etag
    assert not_modified.content == b""
    cached = await api.client.get(url, headers=api.headers())
    assert cached.content == first.content and counting.calls == 1

    # Finalizing changes the invoice, so the document and its ETag change.
    await api.client.post(f"/v1/invoices/{invoice['id']}/finalize", headers=api.headers())
    stale = await api.client.get(url, headers=api.headers(**{"if-none-match": etag}))
    assert stale.status_code == 200 and stale.headers["etag"] != etag
    assert counting.calls == 2
    text = pdf_text(stale.content)
    assert "INV-000001" in text and "DRAFT" not in text and "issued" in text.lower()
    assert 'filename="INV-000001.pdf"' in stale.headers["content-disposition"]

    # A payment changes it again.
    issued_etag = stale.headers["etag"]
    await api.platform.bus.publish(
        new_event(
            source="/billing/payment",
            event_type=PAYMENT_RECEIVED,
            tenant="acme",
            data=PaymentReceived(
                payment_id="p1",
                invoice_id=invoice["id"],
                currency="EUR",
                amount=Decimal("46.30"),
                gateway="sandbox",
            ),
        )
    )
    await api.platform.bus.wait_idle()
    paid_part = await api.client.get(url, headers=api.headers(**{"if-none-match": issued_etag}))
    assert paid_part.status_code == 200 and paid_part.headers["etag"] != issued_etag
    assert "200.00" in pdf_text(paid_part.content)  # amount due after the payment


async def test_html_is_the_same_document_and_escapes_input(api, make_body):
    body = make_body(
        lines=[
            {"description": "<script>alert(1)</script>", "quantity": "1", "unit_price": "10.00"}
        ],
        memo="Thanks & see you",
    )
    invoice = (await api.create(body)).json()
    url = f"/v1/invoices/{invoice['id']}/html"
    response = await api.client.get(url, headers=api.headers())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Thanks &amp; see you" in html and "DRAFT" in html and "11.90" in html
    again = await api.client.get(
        url, headers=api.headers(**{"if-none-match": response.headers["etag"]})
    )
    assert again.status_code == 304
    pdf = await api.client.get(f"/v1/invoices/{invoice['id']}/pdf", headers=api.headers())
    assert pdf.headers["etag"] != response.headers["etag"]  # one tag per representation


async def test_rendering_does_not_block_the_event_loop(api, make_body):
    slow = CountingRenderer(api.app.state.documents.renderer, delay=0.6)
    use_renderer(api, slow)
    invoice = (await api.create(make_body())).json()
    pdf = asyncio.create_task(
        api.client.get(f"/v1/invoices/{invoice['id']}/pdf", headers=api.headers())
    )
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    health = await api.client.get("/healthz")
    assert health.status_code == 200
    assert time.perf_counter() - started < 0.3  # answered while the PDF was rendering
    assert not pdf.done()
    assert (await pdf).status_code == 200


async def test_pdf_unavailable_is_503(api, make_body):
    class Broken:
        def render(self, html: str) -> bytes:
            raise PdfUnavailable("PDF rendering is not available: install Pango")

    use_renderer(api, Broken())
    invoice = (await api.create(make_body())).json()
    response = await api.client.get(f"/v1/invoices/{invoice['id']}/pdf", headers=api.headers())
    assert response.status_code == 503
    assert response.json()["type"] == "/problems/pdf-unavailable"
    missing = await api.client.get("/v1/invoices/nope/pdf", headers=api.headers())
    assert missing.status_code == 404


async def test_memory_cached_pdf_follows_a_change_made_by_another_replica(api_any_db, make_body):
    """The per-process PDF cache is checked against the version read from the database, so
    a change committed elsewhere (another replica; here, a direct write) is rendered anew."""
    api = api_any_db
    counting = CountingRenderer(api.app.state.documents.renderer)
    use_renderer(api, counting)
    invoice = (await api.create(make_body())).json()
    url = f"/v1/invoices/{invoice['id']}/pdf"
    first = await api.client.get(url, headers=api.headers())
    again = await api.client.get(url, headers=api.headers())
    assert again.content == first.content and counting.calls == 1

    sessions = api.ctx.sessions
    async with sessions() as session:
        await session.execute(
            update(InvoiceRow)
            .where(col(InvoiceRow.id) == invoice["id"])
            .values(version=InvoiceRow.version + 1)
        )
        await session.commit()
    changed = await api.client.get(url, headers=api.headers())
    assert changed.status_code == 200 and changed.headers["etag"] != first.headers["etag"]
    assert counting.calls == 2


def test_the_memory_cache_is_bounded_and_keyed_by_etag() -> None:
    cache = PdfMemoryCache(max_bytes=10)
    cache.put("a", '"e1"', b"12345")
    assert cache.get("a", '"e1"') == b"12345" and cache.get("a", '"e2"') is None
    cache.put("b", '"e1"', b"123")
    cache.get("a", '"e1"')  # a is now the most recently used
    cache.put("c", '"e1"', b"123")  # 11 bytes: b, the least recently used, goes
    assert cache.get("b", '"e1"') is None and cache.get("a", '"e1"') == b"12345"
    cache.put("a", '"e2"', b"1")  # a new version replaces the old one
    assert cache.get("a", '"e1"') is None and cache.get("a", '"e2"') == b"1"
    cache.put("huge", '"e1"', b"x" * 11)
    assert cache.get("huge", '"e1"') is None
