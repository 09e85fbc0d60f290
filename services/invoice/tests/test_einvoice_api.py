"""GET /v1/invoices/{id}/einvoice through the API (SQLite), and the Factur-X PDF/A-3 checked
structurally with pikepdf: PDF/A-3 identification, the embedded factur-x.xml with its
AFRelationship, and the Factur-X XMP extension schema."""

from __future__ import annotations

import io
from typing import Any

import pikepdf
from lxml import etree

from .einvoice_rules import assert_valid
from .test_invoice_sellers_api import add_seller, finalize

FX = "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#"
PDFA_SCHEMA = "http://www.aiim.org/pdfa/ns/schema#"


async def _issued(api: Any, make_body: Any, **customer: Any) -> dict[str, Any]:
    seller = await add_seller(api, is_default=True)
    body = make_body()
    body["customer"] |= {"email": "ap@kunde.example", **customer}
    created = await api.create(body)
    assert created.status_code == 201, created.text
    assert created.json()["seller_id"] == seller["id"]
    return await finalize(api, created.json()["id"])


async def _get(api: Any, invoice_id: str, query: str) -> Any:
    return await api.client.get(
        f"/v1/invoices/{invoice_id}/einvoice?{query}", headers=api.headers()
    )


async def test_facturx_pdf_is_pdf_a3_with_the_embedded_cii(api: Any, make_body: Any) -> None:
    invoice = await _issued(api, make_body)
    response = await _get(api, invoice["id"], "format=facturx")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    pdf = pikepdf.open(io.BytesIO(response.content))
    # The embedded file: factur-x.xml, AFRelationship /Data, listed in the catalog's /AF.
    assert list(pdf.attachments) == ["factur-x.xml"]
    spec = pdf.attachments["factur-x.xml"]
    assert spec.obj["/AFRelationship"] == pikepdf.Name.Data
    assert [str(f["/F"]) for f in pdf.Root.AF] == ["factur-x.xml"]
    xml = spec.get_file().read_bytes()
    assert_valid(xml, ubl=False)
    # XMP: PDF/A-3B identification and the Factur-X extension schema with its properties.
    xmp = etree.fromstring(pdf.Root.Metadata.read_bytes())
    text = {el.tag: el.text for el in xmp.iter() if isinstance(el.tag, str)}
    assert text["{http://www.aiim.org/pdfa/ns/id/}part"] == "3"
    assert text["{http://www.aiim.org/pdfa/ns/id/}conformance"] == "B"
    assert text[f"{{{FX}}}DocumentFileName"] == "factur-x.xml"
    assert text[f"{{{FX}}}DocumentType"] == "INVOICE"
    assert text[f"{{{FX}}}ConformanceLevel"] == "EN 16931"
    assert FX in [el.text for el in xmp.iter(f"{{{PDFA_SCHEMA}}}namespaceURI")]
    assert "/OutputIntents" in pdf.Root  # PDF/A needs the output intent (sRGB)


async def test_ubl_and_xrechnung_xml(api: Any, make_body: Any) -> None:
    invoice = await _issued(api, make_body)
    ubl = await _get(api, invoice["id"], "format=ubl&buyer_reference=PO-77")
    assert ubl.status_code == 200, ubl.text
    assert ubl.headers["content-type"].startswith("application/xml")
    assert_valid(ubl.content, ubl=True)
    assert b"<cbc:BuyerReference>PO-77</cbc:BuyerReference>" in ubl.content

    # XRechnung needs the buyer's city and postcode as fields (`postal_address`), which this
    # invoice was created without (see test_einvoice_formats_api for one created with them).
    xrechnung = await _get(api, invoice["id"], "format=xrechnung&buyer_reference=991-1")
    assert xrechnung.status_code == 422
    problem = xrechnung.json()
    assert problem["type"] == "/problems/e-invoice-data-missing"
    assert any("BR-DE-8" in item for item in problem["missing"])


async def test_drafts_missing_data_unknown_format_and_scope(api: Any, make_body: Any) -> None:
    await add_seller(api, is_default=True)
    draft = (await api.create(make_body())).json()
    refused = await _get(api, draft["id"], "format=ubl&buyer_reference=x")
    assert refused.status_code == 409
    assert refused.json()["type"] == "/problems/e-invoice-not-available"

    issued = await finalize(api, draft["id"])
    missing = await _get(api, issued["id"], "format=ubl")
    assert missing.status_code == 422
    assert missing.json()["missing"] == [
        "buyer_reference (BT-10, e.g. the Leitweg-ID)",
        "customer.email (BT-49 electronic address)",
    ]
    assert (await _get(api, issued["id"], "format=pdf")).status_code == 422
    assert (await _get(api, "nope", "format=ubl")).status_code == 404
    other_tenant = await api.client.get(
        f"/v1/invoices/{issued['id']}/einvoice?format=facturx", headers=api.headers("other")
    )
    assert other_tenant.status_code == 404
    no_scope = {"authorization": f"Bearer {api.token(scopes={'invoice:write'})}"}
    denied = await api.client.get(
        f"/v1/invoices/{issued['id']}/einvoice?format=facturx", headers=no_scope
    )
    assert denied.status_code == 403


async def test_an_invoice_without_seller_is_422_naming_it(api: Any, make_body: Any) -> None:
    created = (await api.create(make_body())).json()
    issued = await finalize(api, created["id"])
    response = await _get(api, issued["id"], "format=facturx")
    assert response.status_code == 422
    assert response.json()["missing"] == ["seller (the invoice has no seller)"]


async def test_a_seller_without_vat_id_is_422_naming_br_co_26(api: Any, make_body: Any) -> None:
    await add_seller(api, is_default=True, vat_id=None)
    created = (await api.create(make_body())).json()
    issued = await finalize(api, created["id"])
    response = await _get(api, issued["id"], "format=facturx")
    assert response.status_code == 422
    assert response.json()["missing"] == ["seller.vat_id (BT-31, BR-CO-26)"]
