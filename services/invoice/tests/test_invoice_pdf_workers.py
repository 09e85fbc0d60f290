"""Documents written and rendered in worker processes: the same bytes as written in process,
bounded by a timeout, a large invoice of one tenant never holds up another tenant's render,
HTML takes the tenant's render slot like PDF, and the API process never loads Jinja2, babel
or WeasyPrint."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from invoice_service.adapters import pdf as pdf_adapter
from invoice_service.adapters.html import JinjaInvoiceHtml, Seller
from invoice_service.adapters.pdf import ProcessPoolRenderer, WeasyPrintRenderer, local_documents
from invoice_service.bootstrap import SellerSettings
from invoice_service.domain.errors import PdfRenderBusy
from invoice_service.service_layer.documents import DocumentServices, TenantRenderSlots

from .test_invoice_pdf import pdf_text

STYLESHEET = JinjaInvoiceHtml(Seller("Seller")).stylesheet
SELLER = SellerSettings().to_seller()  # the test app's default issuer
LONG_DESCRIPTION = "Consulting services, as agreed in the statement of work " * 3
# The longest a line's description may be (500 characters with large_body's "NNN " prefix).
LONGEST_DESCRIPTION = (LONG_DESCRIPTION * 3)[:496]


@pytest.fixture(scope="module")
def pool_renderer() -> Iterator[ProcessPoolRenderer]:
    """One pool for the module's tests: starting worker processes is the slow part."""
    renderer = ProcessPoolRenderer(STYLESHEET, seller=SELLER, workers=2, timeout_seconds=60)
    yield renderer
    renderer.close()


def use(api: Any, renderer: Any, slots: TenantRenderSlots | None = None) -> None:
    documents = api.app.state.documents
    api.app.state.documents = DocumentServices(
        documents.html, renderer, documents.cache, slots=slots or TenantRenderSlots()
    )


def large_body(
    make_body: Any, lines: int = 200, description: str = LONG_DESCRIPTION
) -> dict[str, Any]:
    body = make_body()
    line = body["lines"][0]
    body["lines"] = [dict(line, description=f"{index:03d} {description}") for index in range(lines)]
    return body


async def _pdf(api: Any, invoice_id: str, tenant: str = "acme") -> Any:
    return await api.client.get(f"/v1/invoices/{invoice_id}/pdf", headers=api.headers(tenant))


async def test_worker_pdf_is_the_same_document(api, make_body, pool_renderer):
    use(api, pool_renderer)
    invoice = (await api.create(make_body(coupon_codes=["WELCOME10"]))).json()
    response = await _pdf(api, invoice["id"])
    assert response.status_code == 200 and response.content.startswith(b"%PDF")
    text = pdf_text(response.content)
    for expected in ("DRAFT", "Widget", "Welcome 10%", "246.30", "Amount due", "page 1 of 1"):
        assert expected in text, expected


async def test_a_render_past_the_timeout_is_stopped_and_answered_503(api, make_body):
    # The time limit counts from when a worker takes the render (its start-up is not
    # counted). Measured at load 10 on 2 cores: a one-page invoice 0.2 s (the first in a
    # replacement worker ran past a 1 s limit there), the largest invoice the API accepts
    # (200 lines of 500 characters) 14 s, 60 times as long. 3 s sits between the two with
    # room both ways, loaded or idle: the large render is always stopped, the small never.
    renderer = ProcessPoolRenderer(STYLESHEET, seller=SELLER, workers=1, timeout_seconds=3.0)
    try:
        use(api, renderer)
        big = (await api.create(large_body(make_body, description=LONGEST_DESCRIPTION))).json()
        response = await _pdf(api, big["id"])
        assert response.status_code == 503, response.text
        assert response.json()["type"] == "/problems/pdf-render-timeout"
        assert response.headers["retry-after"] == "10"
        # The stopped worker was replaced: the next render works.
        again = (await api.create(make_body(), key="another")).json()
        assert (await _pdf(api, again["id"])).status_code == 200
    finally:
        renderer.close()


async def test_a_large_invoice_does_not_hold_up_another_tenants_render(
    api, make_body, pool_renderer
):
    use(api, pool_renderer)
    warm = (await api.create(make_body())).json()
    assert (await _pdf(api, warm["id"])).status_code == 200  # both workers started
    big = (await api.create(large_body(make_body))).json()
    small = (await api.create(make_body(), tenant="globex")).json()
    finished: list[str] = []

    async def fetch(invoice_id: str, tenant: str, name: str) -> int:
        response = await _pdf(api, invoice_id, tenant)
        finished.append(name)
        return int(response.status_code)

    large = asyncio.create_task(fetch(big["id"], "acme", "large"))
    await asyncio.sleep(0.3)  # the large render is running
    assert await fetch(small["id"], "globex", "small") == 200
    assert await large == 200
    assert finished == ["small", "large"]


async def test_one_tenant_waits_for_its_own_slot():
    slots = TenantRenderSlots(per_tenant=1, wait_seconds=0.2)
    async with slots.hold("acme"):
        with pytest.raises(PdfRenderBusy):
            async with slots.hold("acme"):
                pass
        async with slots.hold("globex"):  # another tenant is not affected
            pass
    async with slots.hold("acme"):  # released
        pass


def test_only_the_workers_collect_garbage_less_often(pool_renderer):
    pool_renderer.render("<p>started</p>")
    in_worker = pool_renderer._get_pool().schedule(gc.get_threshold).result(timeout=60)
    assert in_worker == pdf_adapter._WORKER_GC_THRESHOLDS
    assert gc.get_threshold() != pdf_adapter._WORKER_GC_THRESHOLDS  # the API's are left alone


def test_the_calling_process_never_loads_weasyprint(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from invoice_service.adapters.pdf import ProcessPoolRenderer

        renderer = ProcessPoolRenderer(None, workers=1)
        try:
            pdf = renderer.render("<p>hello</p>")
        finally:
            renderer.close()
        assert pdf.startswith(b"%PDF"), pdf[:20]
        print("weasyprint" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_pool_s_modules_are_imported_when_it_is_built_not_on_first_render():
    """Built by the wiring, the renderer has imported what starting the pool needs, so the
    first render's worker thread does not (issue 11: modules imported by a new thread cost
    the API ~1.2 MB more RSS, in that thread's malloc arena); it starts no process yet."""
    script = textwrap.dedent(
        """
        import multiprocessing
        import sys
        from invoice_service.adapters.pdf import ProcessPoolRenderer

        ProcessPoolRenderer(None, workers=1)
        wanted = ("pebble", "multiprocessing.popen_spawn_posix", "concurrent.futures.process")
        print(sorted(name for name in wanted if name not in sys.modules))
        print(multiprocessing.active_children())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "[]"], result.stdout


async def _stored(api: Any, invoice_id: str, note_id: str | None = None) -> tuple[Any, Any]:
    async with api.app.state.deps.uow("acme") as uow:
        invoice = await uow.invoices.get(invoice_id)
        note = await uow.credit_notes.get(note_id) if note_id else None
    return invoice, note


async def _issued_and_credited(api: Any, draft_id: str, *, key: str) -> tuple[Any, Any]:
    """The draft finalized and then credited in full: the stored invoice and credit note."""
    issued = (
        await api.client.post(f"/v1/invoices/{draft_id}/finalize", headers=api.headers())
    ).json()
    credited = await api.client.post(
        f"/v1/invoices/{issued['id']}/credit-notes",
        json={"reason": "cancelled"},
        headers=api.headers(key=key),
    )
    assert credited.status_code == 201, credited.text
    return await _stored(api, issued["id"], credited.json()["id"])


@pytest.mark.parametrize("language", ["en", "de-CH", "fr"])
async def test_workers_write_the_same_bytes_as_the_process(api, make_body, pool_renderer, language):
    """HTML, invoice PDF and credit note PDF from the workers are byte for byte those the
    templates and WeasyPrint write in this process, in every language."""
    use(api, pool_renderer)
    in_process = local_documents(SELLER)
    body = make_body(
        language=language,
        coupon_codes=["WELCOME10"],
        lines=[{"description": "Widget", "quantity": "1.5", "unit_price": "1234.56"}],
    )
    body["customer"]["address"] = "Hauptstraße 1\n10115 Berlin"
    draft = (await api.create(body)).json()
    invoice, _ = await _stored(api, draft["id"])
    assert invoice.language == language
    expected_html = in_process.invoice_html(invoice)
    assert pool_renderer.invoice_html(invoice) == expected_html
    served = await api.client.get(f"/v1/invoices/{draft['id']}/html", headers=api.headers())
    assert served.status_code == 200 and served.content == expected_html.encode()
    assert pool_renderer.invoice_pdf(invoice) == in_process.invoice_pdf(invoice)

    invoice, note = await _issued_and_credited(api, draft["id"], key=f"credit-{language}")
    assert pool_renderer.credit_note_pdf(note, invoice) == in_process.credit_note_pdf(note, invoice)


async def test_html_waits_for_the_tenant_s_render_slot(api, make_body):
    """Writing the HTML is a render: while the tenant's one slot is busy /html answers 503
    (retry) like /pdf, another tenant is served; a 304 renders nothing and needs no slot."""
    slots = TenantRenderSlots(per_tenant=1, wait_seconds=0.2)
    api.app.state.documents = dataclasses.replace(api.app.state.documents, slots=slots)
    invoice = (await api.create(make_body())).json()
    other = (await api.create(make_body(), tenant="globex")).json()
    url = f"/v1/invoices/{invoice['id']}/html"
    first = await api.client.get(url, headers=api.headers())
    assert first.status_code == 200
    async with slots.hold("acme"):
        busy = await api.client.get(url, headers=api.headers())
        assert busy.status_code == 503, busy.text
        assert busy.json()["type"] == "/problems/pdf-render-busy"
        assert "retry-after" in busy.headers
        current = await api.client.get(
            url, headers=api.headers(**{"if-none-match": first.headers["etag"]})
        )
        assert current.status_code == 304
        served = await api.client.get(
            f"/v1/invoices/{other['id']}/html", headers=api.headers("globex")
        )
        assert served.status_code == 200
    assert (await api.client.get(url, headers=api.headers())).status_code == 200


async def test_html_answers_304_before_writing_the_invoice(api, make_body):
    written: list[str] = []
    documents = api.app.state.documents

    class Counting:
        def __getattr__(self, name: str) -> Any:
            return getattr(documents.renderer, name)

        def invoice_html(self, invoice: Any) -> str:
            written.append(invoice.id)
            return str(documents.renderer.invoice_html(invoice))

    api.app.state.documents = dataclasses.replace(documents, renderer=Counting())
    invoice = (await api.create(make_body())).json()
    url = f"/v1/invoices/{invoice['id']}/html"
    first = await api.client.get(url, headers=api.headers())
    assert first.status_code == 200 and written == [invoice["id"]]
    again = await api.client.get(
        url, headers=api.headers(**{"if-none-match": first.headers["etag"]})
    )
    assert again.status_code == 304 and again.headers["etag"] == first.headers["etag"]
    assert written == [invoice["id"]]
    finalized = await api.client.post(
        f"/v1/invoices/{invoice['id']}/finalize", headers=api.headers()
    )
    assert finalized.status_code == 200
    changed = await api.client.get(
        url, headers=api.headers(**{"if-none-match": first.headers["etag"]})
    )
    assert changed.status_code == 200 and written == [invoice["id"], invoice["id"]]


def test_the_api_process_loads_no_template_locale_or_pdf_library(migrated_sqlite_url):
    """The whole service, its renders in worker processes: after serving an invoice's HTML
    and PDF and a credit note's PDF, the API process has not imported Jinja2, babel or
    WeasyPrint (issue 11: they stay out of its memory)."""
    script = textwrap.dedent(
        """
        import asyncio
        import sys

        sys.path.insert(0, sys.argv[2])
        import conftest

        async def main() -> None:
            async for api in conftest._invoice_api(sys.argv[1]):
                body = conftest.invoice_body(
                    lines=[{"description": "Widget", "quantity": "1", "unit_price": "100.00"}]
                )
                created = (await api.create(body)).json()
                url = f"/v1/invoices/{created['id']}"
                for kind in ("html", "pdf"):
                    answer = await api.client.get(f"{url}/{kind}", headers=api.headers())
                    assert answer.status_code == 200, answer.text
                assert (await api.client.post(f"{url}/finalize", headers=api.headers())).is_success
                note = await api.client.post(
                    f"{url}/credit-notes", json={"reason": "r"}, headers=api.headers(key="k")
                )
                assert note.status_code == 201, note.text
                pdf = await api.client.get(
                    f"/v1/credit-notes/{note.json()['id']}/pdf", headers=api.headers()
                )
                assert pdf.content.startswith(b"%PDF"), pdf.text
            loaded = ("jinja2", "babel", "weasyprint")
            print(sorted(name for name in loaded if name in sys.modules))

        asyncio.run(main())
        """
    )
    tests_dir = str(Path(__file__).parent)
    result = subprocess.run(
        [sys.executable, "-c", script, migrated_sqlite_url, tests_dir],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "INVOICE_PDF_WORKERS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


def test_factur_x_is_written_in_the_workers(migrated_sqlite_url):
    """A Factur-X of an invoice and of a credit note, written with the renders in worker
    processes: the API process has loaded none of WeasyPrint, factur-x, pypdf, Jinja2 or
    babel (issue 11: writing the PDF/A-3 in the API process loaded ~30 MB there)."""
    script = textwrap.dedent(
        """
        import asyncio
        import json
        import sys

        sys.path.insert(0, sys.argv[2])
        import conftest

        async def main() -> None:
            written = []
            async for api in conftest._invoice_api(sys.argv[1]):
                seller = await api.client.post(
                    "/v1/sellers", json=json.loads(sys.argv[3]), headers=api.headers()
                )
                assert seller.status_code == 201, seller.text
                body = conftest.invoice_body()
                body["customer"]["email"] = "ap@kunde.example"
                created = (await api.create(body)).json()
                url = f"/v1/invoices/{created['id']}"
                assert (await api.client.post(f"{url}/finalize", headers=api.headers())).is_success
                note = await api.client.post(
                    f"{url}/credit-notes", json={"reason": "r"}, headers=api.headers(key="k")
                )
                assert note.status_code == 201, note.text
                for document in (url, f"/v1/credit-notes/{note.json()['id']}"):
                    answer = await api.client.get(
                        f"{document}/einvoice?format=facturx", headers=api.headers()
                    )
                    assert answer.status_code == 200, answer.text
                    written.append(answer.content)
            loaded = ("weasyprint", "facturx", "pypdf", "jinja2", "babel")
            print(sorted(name for name in loaded if name in sys.modules))
            import io
            import pikepdf

            for content in written:
                assert list(pikepdf.open(io.BytesIO(content)).attachments) == ["factur-x.xml"]

        asyncio.run(main())
        """
    )
    seller = {
        "legal_name": "Muster Software GmbH",
        "address": {"country": "DE", "postcode": "10115", "city": "Berlin", "street": ["H. 1"]},
        "vat_id": "DE136695976",
        "contact": {"email": "billing@muster.example"},
        "bank_account": {"iban": "DE89370400440532013000", "bic": "COBADEFFXXX"},
        "is_default": True,
    }
    tests_dir = str(Path(__file__).parent)
    result = subprocess.run(
        [sys.executable, "-c", script, migrated_sqlite_url, tests_dir, json.dumps(seller)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "INVOICE_PDF_WORKERS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout


@pytest.mark.parametrize("language", ["en", "de-CH", "fr"])
async def test_the_renderer_prints_what_stock_weasyprint_prints(api, make_body, language):
    """The renderer leaves the user-agent stylesheet's universal pseudo-element rules out (a
    cheaper render): the PDFs of an invoice and a credit note are still byte for byte those
    of WeasyPrint with its own user-agent stylesheet."""
    from weasyprint import CSS, HTML
    from weasyprint.text.fonts import FontConfiguration

    renderer = WeasyPrintRenderer(STYLESHEET)
    documents = local_documents(SELLER, renderer)
    fonts = FontConfiguration()
    stock_sheets = [CSS(string=STYLESHEET, font_config=fonts)]

    def stock(html: str) -> bytes:
        pdf: bytes = HTML(string=html).write_pdf(stylesheets=stock_sheets, font_config=fonts)
        return pdf

    body = make_body(language=language, coupon_codes=["WELCOME10"])
    draft = (await api.create(body)).json()
    invoice, note = await _issued_and_credited(api, draft["id"], key=f"stock-{language}")
    html = documents.invoices.render(invoice, embed_stylesheet=False)
    assert renderer.render(html) == stock(html)
    note_html = documents.credit_notes.render(note, invoice, embed_stylesheet=False)
    assert renderer.render(note_html) == stock(note_html)
