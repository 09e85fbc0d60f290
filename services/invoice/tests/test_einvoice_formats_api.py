"""E-invoices through the API on SQLite and PostgreSQL: the buyer's postal address and
Leitweg-ID given on creation and kept, XRechnung produced from them (and the 422 problem
naming each rule when they are not there), credit notes as UBL CreditNote / XRechnung /
Factur-X, and customers' default format named by the invoice and its finalized event."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pikepdf
from lxml import etree

from billing_common.event_schemas import INVOICE_FINALIZED, InvoiceFinalized

from .einvoice_rules import assert_valid
from .test_invoice_sellers_api import add_seller, finalize

CONTACT = {"email": "billing@muster.example", "phone": "+49 30 1234567"}
ADDRESS = {
    "street": ["Kundenweg 5", "Gebäude B"],
    "city": "München",
    "postcode": "80331",
    "subdivision": "Bayern",
    "country": "de",
}
LEITWEG_ID = "04011000-12345-34"
RAM = "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
XRECHNUNG_3 = "urn:cen.eu:en16931:2017#compliant#urn:xeinkauf.de:kosit:xrechnung_3.0"


def _customer(**extra: Any) -> dict[str, Any]:
    return {"email": "ap@kunde.example", "name": "Kunde AG", **extra}


async def _issued(api: Any, make_body: Any, **customer: Any) -> dict[str, Any]:
    body = make_body()
    body["customer"] |= customer
    created = await api.create(body)
    assert created.status_code == 201, created.text
    return await finalize(api, created.json()["id"])


async def _get(api: Any, path: str) -> Any:
    return await api.client.get(path, headers=api.headers())


async def test_xrechnung_from_the_address_and_leitweg_id_given_on_creation(
    api_any_db: Any, make_body: Any
) -> None:
    api = api_any_db
    await add_seller(api, is_default=True, contact=CONTACT)
    invoice = await _issued(
        api, make_body, **_customer(postal_address=ADDRESS, buyer_reference=LEITWEG_ID)
    )
    # Kept with the invoice and answered with it (country normalised to upper case).
    assert invoice["customer"]["postal_address"] == {**ADDRESS, "country": "DE"}
    assert invoice["customer"]["buyer_reference"] == LEITWEG_ID

    response = await _get(api, f"/v1/invoices/{invoice['id']}/einvoice?format=xrechnung")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/xml")
    assert response.headers["content-disposition"].endswith('-xrechnung.xml"')
    assert_valid(response.content, ubl=False, xrechnung=True)
    root = etree.fromstring(response.content)
    assert root.findtext(f".//{{{RAM}}}GuidelineSpecifiedDocumentContextParameter/{{{RAM}}}ID") == (
        XRECHNUNG_3
    )
    assert root.findtext(f".//{{{RAM}}}BuyerReference") == LEITWEG_ID
    buyer = root.find(f".//{{{RAM}}}BuyerTradeParty/{{{RAM}}}PostalTradeAddress")
    assert buyer is not None
    assert [
        buyer.findtext(f"{{{RAM}}}{tag}") for tag in ("PostcodeCode", "LineOne", "LineTwo")
    ] == [
        "80331",
        "Kundenweg 5",
        "Gebäude B",
    ]
    assert buyer.findtext(f"{{{RAM}}}CityName") == "München"
    assert buyer.findtext(f"{{{RAM}}}CountrySubDivisionName") == "Bayern"

    # The UBL carries the same buyer and reference; a download may name another reference.
    ubl = await _get(api, f"/v1/invoices/{invoice['id']}/einvoice?format=ubl")
    assert ubl.status_code == 200, ubl.text
    assert_valid(ubl.content, ubl=True)
    assert f"<cbc:BuyerReference>{LEITWEG_ID}</cbc:BuyerReference>".encode() in ubl.content
    assert b"<cbc:PostalZone>80331</cbc:PostalZone>" in ubl.content
    other = await _get(
        api, f"/v1/invoices/{invoice['id']}/einvoice?format=ubl&buyer_reference=PO-9"
    )
    assert b"<cbc:BuyerReference>PO-9</cbc:BuyerReference>" in other.content


async def test_xrechnung_422_lists_exactly_what_is_missing(api: Any, make_body: Any) -> None:
    # A seller without phone or bank account, a buyer without address, reference or e-mail.
    await add_seller(api, is_default=True, bank_account=None)
    invoice = await _issued(api, make_body, name="Kunde AG")
    response = await _get(api, f"/v1/invoices/{invoice['id']}/einvoice?format=xrechnung")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/e-invoice-data-missing"
    assert problem["status"] == 422 and problem["format"] == "xrechnung"
    assert problem["missing"] == [
        "customer.buyer_reference (BT-10 buyer reference, the Leitweg-ID, BR-DE-15)",
        "customer.email (BT-49 buyer electronic address, PEPPOL-EN16931-R010)",
        "customer.postal_address.city (BT-52 buyer city, BR-DE-8)",
        "customer.postal_address.postcode (BT-53 buyer post code, BR-DE-9)",
        "seller.bank_account (BG-16 payment instructions, BT-84 IBAN, BR-DE-1)",
        "seller.phone (BT-42 seller contact telephone, BR-DE-6)",
    ]
    assert problem["rules"] == [
        "BR-DE-15",
        "PEPPOL-EN16931-R010",
        "BR-DE-8",
        "BR-DE-9",
        "BR-DE-1",
        "BR-DE-6",
    ]


async def test_an_invalid_buyer_address_is_422_and_stores_nothing(
    api_any_db: Any, make_body: Any
) -> None:
    api = api_any_db
    for address in (
        {**ADDRESS, "country": "XX"},  # not an ISO 3166-1 code
        {**ADDRESS, "country": "UK"},  # GB is
        {**ADDRESS, "street": ["1", "2", "3", "4"]},
        {"city": "Berlin"},  # the country is required
        {**ADDRESS, "town": "Berlin"},  # unknown member
    ):
        body = make_body()
        body["customer"] |= {"postal_address": address}
        response = await api.create(body)
        assert response.status_code == 422, (address, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    body = make_body()
    body["customer"] |= {"buyer_reference": "   "}
    assert (await api.create(body)).status_code == 422
    listing = await _get(api, "/v1/invoices")
    assert listing.json()["items"] == []


async def test_credit_note_einvoices(api_any_db: Any, make_body: Any) -> None:
    api = api_any_db
    await add_seller(api, is_default=True, contact=CONTACT)
    invoice = await _issued(
        api, make_body, **_customer(postal_address=ADDRESS, buyer_reference=LEITWEG_ID)
    )
    issued = await api.client.post(
        f"/v1/invoices/{invoice['id']}/credit-notes",
        json={"reason": "returned", "lines": [{"position": 1, "quantity": "1"}]},
        headers=api.headers(key=uuid.uuid4().hex),
    )
    assert issued.status_code == 201, issued.text
    note = issued.json()
    base = f"/v1/credit-notes/{note['id']}/einvoice"

    ubl = await _get(api, f"{base}?format=ubl")
    assert ubl.status_code == 200, ubl.text
    assert ubl.headers["content-type"].startswith("application/xml")
    assert_valid(ubl.content, ubl=True)
    root = etree.fromstring(ubl.content)
    assert etree.QName(root).localname == "CreditNote"
    assert root.findtext(f"{{{CBC}}}ID") == note["number"]
    assert root.findtext(f"{{{CBC}}}CreditNoteTypeCode") == "381"
    reference = f"{{{CAC}}}BillingReference/{{{CAC}}}InvoiceDocumentReference/{{{CBC}}}ID"
    assert root.findtext(reference) == invoice["number"]  # BT-25
    assert root.findtext(f"{{{CAC}}}LegalMonetaryTotal/{{{CBC}}}PayableAmount") == note["total"]

    xrechnung = await _get(api, f"{base}?format=xrechnung")
    assert xrechnung.status_code == 200, xrechnung.text
    assert_valid(xrechnung.content, ubl=False, xrechnung=True)
    assert b"<ram:TypeCode>381</ram:TypeCode>" in xrechnung.content

    facturx = await _get(api, f"{base}?format=facturx")
    assert facturx.status_code == 200, facturx.text
    assert facturx.headers["content-type"] == "application/pdf"
    pdf = pikepdf.open(io.BytesIO(facturx.content))
    embedded = pdf.attachments["factur-x.xml"].get_file().read_bytes()
    assert_valid(embedded, ubl=False)
    assert b"<ram:TypeCode>381</ram:TypeCode>" in embedded

    assert (await _get(api, "/v1/credit-notes/nope/einvoice?format=ubl")).status_code == 404
    other = await api.client.get(f"{base}?format=ubl", headers=api.headers("other"))
    assert other.status_code == 404


async def test_the_customers_default_format_is_offered_and_announced(
    api_any_db: Any, make_body: Any
) -> None:
    api = api_any_db
    seen = api.record(INVOICE_FINALIZED)
    await add_seller(api, is_default=True, contact=CONTACT)
    settings = "/v1/customers/c-1/einvoice-settings"
    assert (await _get(api, settings)).json()["default_format"] == "none"
    write_only = {"authorization": f"Bearer {api.token(scopes={'invoice:write', 'invoice:read'})}"}
    denied = await api.client.put(settings, json={"default_format": "ubl"}, headers=write_only)
    assert denied.status_code == 403
    assert (
        await api.client.put(settings, json={"default_format": "pdf"}, headers=api.headers())
    ).status_code == 422
    put = await api.client.put(
        settings, json={"default_format": "xrechnung"}, headers=api.headers()
    )
    assert put.status_code == 200, put.text
    assert put.json()["default_format"] == "xrechnung" and put.json()["updated_by"] == "user:alice"
    assert (await _get(api, settings)).json()["default_format"] == "xrechnung"
    # Another tenant's customer c-1 is another customer.
    other = await api.client.get(settings, headers=api.headers("other"))
    assert other.json()["default_format"] == "none"

    complete = await _issued(
        api, make_body, **_customer(postal_address=ADDRESS, buyer_reference=LEITWEG_ID)
    )
    href = f"/v1/invoices/{complete['id']}/einvoice?format=xrechnung"
    assert complete["documents"] == [
        {
            "kind": "pdf",
            "format": None,
            "media_type": "application/pdf",
            "href": f"/v1/invoices/{complete['id']}/pdf",
        },
        {"kind": "einvoice", "format": "xrechnung", "media_type": "application/xml", "href": href},
    ]
    assert (await _get(api, href)).status_code == 200
    # Without the buyer's address no XRechnung can be written: the PDF only.
    incomplete = await _issued(api, make_body, **_customer())
    assert [d["kind"] for d in incomplete["documents"]] == ["pdf"]
    # A draft has no documents; the GET answers what finalize answered.
    draft = (await api.create(make_body())).json()
    assert draft["documents"] == []
    got = await _get(api, f"/v1/invoices/{complete['id']}")
    assert got.json()["documents"] == complete["documents"]

    await api.settle()
    by_invoice = {e.subject: InvoiceFinalized.model_validate(e.data) for e in seen}
    announced = by_invoice[complete["id"]].documents
    assert announced is not None
    assert [(d.kind, d.format, d.href) for d in announced] == [
        ("pdf", None, f"/v1/invoices/{complete['id']}/pdf"),
        ("einvoice", "xrechnung", href),
    ]
    assert [d.kind for d in by_invoice[incomplete["id"]].documents or []] == ["pdf"]

    # A later change of the default does not change what an issued invoice was offered.
    await api.client.put(settings, json={"default_format": "none"}, headers=api.headers())
    again = await _get(api, f"/v1/invoices/{complete['id']}")
    assert again.json()["documents"] == complete["documents"]
