"""PDF rendering in worker processes: bounded by a timeout, a large invoice of one tenant
never holds up another tenant's render, and the API process never loads WeasyPrint."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from invoice_service.adapters.html import JinjaInvoiceHtml, Seller
from invoice_service.adapters.pdf import ProcessPoolRenderer
from invoice_service.domain.errors import PdfRenderBusy
from invoice_service.service_layer.documents import DocumentServices, TenantRenderSlots

from .test_invoice_pdf import pdf_text

STYLESHEET = JinjaInvoiceHtml(Seller("Seller")).stylesheet
LONG_DESCRIPTION = "Consulting services, as agreed in the statement of work " * 3


@pytest.fixture(scope="module")
def pool_renderer() -> Iterator[ProcessPoolRenderer]:
    """One pool for the module's tests: starting worker processes is the slow part."""
    renderer = ProcessPoolRenderer(STYLESHEET, workers=2, timeout_seconds=60)
    yield renderer
    renderer.close()


def use(api: Any, renderer: Any, slots: TenantRenderSlots | None = None) -> None:
    documents = api.app.state.documents
    api.app.state.documents = DocumentServices(
        documents.html, renderer, documents.cache, slots=slots or TenantRenderSlots()
    )


def large_body(make_body: Any, lines: int = 200) -> dict[str, Any]:
    body = make_body()
    line = body["lines"][0]
    body["lines"] = [
        dict(line, description=f"{index:03d} {LONG_DESCRIPTION}") for index in range(lines)
    ]
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
    # counted): a one-page render takes ~0.1 s here, the largest invoice several seconds.
    renderer = ProcessPoolRenderer(STYLESHEET, workers=1, timeout_seconds=1.0)
    try:
        use(api, renderer)
        big = (await api.create(large_body(make_body))).json()
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
