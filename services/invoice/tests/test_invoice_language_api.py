"""The documents' language over HTTP, on SQLite and PostgreSQL: given at creation (normalised),
refused with a problem listing the supported languages, defaulted from the seller, stored,
fixed at finalization (a later change of the seller's language leaves the issued PDF as it
was), and taken by the credit notes of the invoice."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from pypdf import PdfReader

from .test_invoice_pdf import pdf_text
from .test_invoice_sellers_api import add_seller, finalize


async def test_the_language_given_at_creation_is_normalised_and_stored(
    api_any_db: Any, make_body: Any
) -> None:
    api = api_any_db
    created = await api.create(make_body(language="de_ch"))
    assert created.status_code == 201, created.text
    invoice = created.json()
    assert (invoice["language"], invoice["requested_language"]) == ("de-CH", "de-CH")
    read = (await api.client.get(f"/v1/invoices/{invoice['id']}", headers=api.headers())).json()
    assert read["language"] == "de-CH"
    issued = await finalize(api, invoice["id"])
    assert issued["language"] == "de-CH"
    html = await api.client.get(f"/v1/invoices/{invoice['id']}/html", headers=api.headers())
    assert '<html lang="de-CH">' in html.text and "Rechnung" in html.text
    # Without a language and without a seller: English.
    plain = (await api.create(make_body())).json()
    assert (plain["language"], plain["requested_language"]) == ("en", None)


@pytest.mark.parametrize("language", ["es", "de-US", "klingon", ""])
async def test_an_unsupported_language_is_a_422_problem_and_writes_nothing(
    api_any_db: Any, make_body: Any, language: str
) -> None:
    api = api_any_db
    key = uuid.uuid4().hex
    response = await api.create(make_body(language=language), key=key)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    if language:  # "" is refused by the schema (min_length) before the domain sees it
        assert problem["type"] == "/problems/unsupported-language"
        assert problem["supported_languages"] == ["en", "de", "fr"]
        assert problem["language"] == language
    assert api.peers.tax_calls == [] and api.peers.quote_calls == []  # nothing was started
    listed = (await api.client.get("/v1/invoices", headers=api.headers())).json()
    assert listed["items"] == []
    # The same key with a supported language is a new request, not a replay of anything.
    assert (await api.create(make_body(language="fr"), key=key)).status_code == 201


async def test_one_request_in_two_spellings_is_a_replay(api: Any, make_body: Any) -> None:
    key = uuid.uuid4().hex
    first = await api.create(make_body(language="fr-BE"), key=key)
    again = await api.create(make_body(language="FR_be"), key=key)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


async def test_the_seller_s_language_is_taken_at_finalization_and_kept(
    api_any_db: Any, make_body: Any
) -> None:
    api = api_any_db
    seller = await add_seller(api, is_default=True, language="de")
    draft = (await api.create(make_body())).json()
    assert (draft["language"], draft["requested_language"]) == ("de", None)
    issued = await finalize(api, draft["id"])
    assert issued["language"] == "de"
    url = f"/v1/invoices/{draft['id']}/pdf"
    before = await api.client.get(url, headers=api.headers())
    assert before.status_code == 200, before.text
    assert "Rechnung MS-000001" in pdf_text(before.content)

    changed = await api.client.patch(
        f"/v1/sellers/{seller['id']}", json={"language": "fr"}, headers=api.headers()
    )
    assert changed.status_code == 200, changed.text
    # The issued invoice keeps its language: same document, same ETag, still German. The
    # memory cache would hide a change, so the renderer's own output is checked as well.
    after = await api.client.get(url, headers=api.headers())
    assert after.headers["etag"] == before.headers["etag"]
    stored = (await api.client.get(f"/v1/invoices/{draft['id']}", headers=api.headers())).json()
    assert stored["language"] == "de"
    html = await api.client.get(f"/v1/invoices/{draft['id']}/html", headers=api.headers())
    assert '<html lang="de">' in html.text and "Facture" not in html.text
    documents = api.app.state.documents
    async with api.app.state.deps.uow("acme") as uow:
        reloaded = await uow.invoices.get(draft["id"])
    fresh = documents.renderer.invoice_pdf(reloaded)
    assert "Rechnung MS-000001" in pdf_text(fresh) and "Facture" not in pdf_text(fresh)
    # A new draft follows the seller's language as it is now.
    newer = (await api.create(make_body())).json()
    assert newer["language"] == "fr"


async def test_credit_notes_are_written_in_their_invoice_s_language(
    api: Any, make_body: Any
) -> None:
    created = await api.create(
        make_body(
            language="fr",
            lines=[{"description": "Widget", "quantity": "1", "unit_price": "1234.56"}],
        )
    )
    invoice = await finalize(api, created.json()["id"])
    note = await api.client.post(
        f"/v1/invoices/{invoice['id']}/credit-notes",
        json={"reason": "annulé"},
        headers=api.headers(key=uuid.uuid4().hex),
    )
    assert note.status_code == 201, note.text
    response = await api.client.get(
        f"/v1/credit-notes/{note.json()['id']}/pdf", headers=api.headers()
    )
    assert response.status_code == 200, response.text
    text = pdf_text(response.content)
    assert "Avoir CN-000001" in text and "Total TTC crédité" in text, text
    # 1 234,56 € + 19 % = 1 469,13 €, credited: written as babel writes it in French.
    assert "-1\u202f469,13\u00a0€" in text, text


async def test_the_visible_part_of_facturx_is_in_the_invoice_s_language(
    api: Any, make_body: Any
) -> None:
    await add_seller(api, is_default=True)
    body = make_body(language="de")
    body["customer"] |= {"email": "ap@kunde.example"}
    invoice = await finalize(api, (await api.create(body)).json()["id"])
    response = await api.client.get(
        f"/v1/invoices/{invoice['id']}/einvoice?format=facturx", headers=api.headers()
    )
    assert response.status_code == 200, response.text
    reader = PdfReader(io.BytesIO(response.content))
    assert reader.trailer["/Root"]["/Lang"] == "de"
    assert reader.metadata is not None and reader.metadata.title == "Rechnung MS-000001"
    text = pdf_text(response.content)
    assert "Rechnung MS-000001" in text and "Zu zahlender Betrag" in text, text
