"""/v1/sellers and invoices issued by a seller: scopes, problems, per-seller numbering, what
goes to the tax service, and the snapshot that keeps an issued invoice as it was."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from invoice_service.entrypoints.invoice_request_schemas import InvoiceCreate

from .test_invoice_pdf import pdf_text

SELLER: dict[str, Any] = {
    "legal_name": "Muster Software GmbH",
    "address": {"country": "DE", "postcode": "10115", "city": "Berlin", "street": ["Hauptstr. 1"]},
    "vat_id": "DE136695976",
    "contact": {"email": "billing@muster.example"},
    "bank_account": {"iban": "DE89 3704 0044 0532 0130 00", "bic": "COBADEFFXXX"},
    "default_currency": "EUR",
    "invoice_series": "MS",
}


async def add_seller(api: Any, **changes: Any) -> dict[str, Any]:
    response = await api.client.post(
        "/v1/sellers", json={**SELLER, **changes}, headers=api.headers()
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def finalize(api: Any, invoice_id: str) -> dict[str, Any]:
    response = await api.client.post(f"/v1/invoices/{invoice_id}/finalize", headers=api.headers())
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_sellers_are_created_read_listed_and_changed(api: Any) -> None:
    first = await add_seller(api, is_default=True)
    assert first["vat_id"] == "DE136695976"
    assert first["bank_account"] == {"iban": "DE89370400440532013000", "bic": "COBADEFFXXX"}
    assert first["is_default"] and first["active"] and first["version"] == 1
    second = await add_seller(api, legal_name="Muster France SAS", vat_id=None, is_default=True)
    got = await api.client.get(f"/v1/sellers/{first['id']}", headers=api.headers())
    assert got.status_code == 200 and got.json()["is_default"] is False  # one default only

    page = await api.client.get("/v1/sellers?limit=1", headers=api.headers())
    assert [s["id"] for s in page.json()["items"]] == [first["id"]]
    rest = await api.client.get(
        f"/v1/sellers?limit=1&cursor={page.json()['next_cursor']}", headers=api.headers()
    )
    assert [s["id"] for s in rest.json()["items"]] == [second["id"]]
    assert rest.json()["next_cursor"] is None

    changed = await api.client.patch(
        f"/v1/sellers/{second['id']}",
        json={"legal_name": "Muster SAS", "active": False},
        headers=api.headers(),
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["legal_name"], body["active"], body["is_default"], body["version"]) == (
        "Muster SAS",
        False,
        False,  # a deactivated seller is nobody's default
        2,
    )
    # Other tenants see none of it.
    other = await api.client.get(f"/v1/sellers/{first['id']}", headers=api.headers("other"))
    assert other.status_code == 404 and other.json()["type"] == "/problems/seller-not-found"


async def test_reading_needs_read_and_changing_needs_admin(api: Any) -> None:
    reader = {"authorization": f"Bearer {api.token(scopes={'invoice:read', 'invoice:write'})}"}
    denied = await api.client.post("/v1/sellers", json=SELLER, headers=reader)
    assert denied.status_code == 403 and denied.json()["required_scope"] == "invoice:admin"
    assert (await api.client.get("/v1/sellers", headers=reader)).status_code == 200


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"vat_id": "DE136695977"}, "vat_id", "InvalidChecksum"),
        ({"vat_id": "FR40303265045"}, "vat_id", "country_mismatch"),
        ({"bank_account": {"iban": "DE89370400440532013001"}}, "iban", "InvalidChecksumDigits"),
        (
            {"bank_account": {"iban": SELLER["bank_account"]["iban"], "bic": "COBAXXFF"}},
            "bic",
            None,
        ),
    ],
)
async def test_invalid_identifiers_are_422_problems_with_the_reason(
    api: Any, changes: dict[str, Any], field: str, reason: str | None
) -> None:
    response = await api.client.post(
        "/v1/sellers", json={**SELLER, **changes}, headers=api.headers()
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == "/problems/invalid-seller" and problem["field"] == field
    assert reason is None or problem["reason"] == reason
    assert (await api.client.get("/v1/sellers", headers=api.headers())).json()["items"] == []


async def test_an_invoice_is_issued_by_a_seller_numbered_per_seller_and_snapshotted(
    api_any_db: Any, make_body: Any
) -> None:
    api = api_any_db
    muster = await add_seller(api, is_default=True)
    other = await add_seller(api, legal_name="Other GmbH", invoice_series="MS")
    # Business customer in France: the tax service sees both sides and reverse charges.
    body = make_body()
    body["customer"] |= {"tax_id": "FR40303265045", "country": "FR", "kind": "business"}
    created = await api.create(body)
    assert created.status_code == 201, created.text
    draft = created.json()
    assert draft["seller_id"] == muster["id"] and draft["series"] == "MS"
    call = api.peers.tax_calls[-1]
    assert call["seller"] == {"country": "DE", "region": None, "vat_id": "DE136695976"}
    assert (call["customer"]["country"], call["customer"]["kind"]) == ("FR", "business")
    assert {line["vat_category"] for line in draft["lines"]} == {"AE"}
    assert draft["lines"][0]["vat_exemption_reason"] == "Reverse charge"
    assert draft["lines"][0]["vat_exemption_reason_code"] == "VATEX-EU-AE"
    assert draft["tax_treatment"] == "intra_eu_reverse_charge"
    assert draft["tax_breakdown"] == [
        {
            "vat_category": "AE",
            "rate": "0",
            "taxable_amount": "233.33",
            "tax_amount": "0",  # as the peer wrote it
            "exemption_reason": "Reverse charge",
            "exemption_reason_code": "VATEX-EU-AE",
        }
    ]

    # The seller changes between creation and finalization: the invoice is issued with the
    # seller as it is at finalization ...
    await api.client.patch(
        f"/v1/sellers/{muster['id']}", json={"legal_name": "Muster AG"}, headers=api.headers()
    )
    issued = await finalize(api, draft["id"])
    assert issued["number"] == "MS-000001"
    assert issued["seller"]["legal_name"] == "Muster AG" and issued["seller"]["version"] == 2
    html = await api.client.get(f"/v1/invoices/{draft['id']}/html", headers=api.headers())

    # ... and keeps it for good: a later change shows neither in its JSON nor in its document.
    changed = await api.client.patch(
        f"/v1/sellers/{muster['id']}",
        json={"legal_name": "Renamed SE", "bank_account": {"iban": "DE02120300000000202051"}},
        headers=api.headers(),
    )
    assert changed.status_code == 200, changed.text
    again = (await api.client.get(f"/v1/invoices/{draft['id']}", headers=api.headers())).json()
    assert again["seller"] == issued["seller"]
    html_again = await api.client.get(f"/v1/invoices/{draft['id']}/html", headers=api.headers())
    assert html_again.text == html.text and html_again.headers["etag"] == html.headers["etag"]
    for shown in (
        "Muster AG",
        "DE136695976",
        "DE89 3704 0044 0532 0130 00",
        "COBADEFFXXX",
        "VAT category AE",
        "Reverse charge (VATEX-EU-AE)",
    ):
        assert shown in html.text, shown
    assert "Renamed SE" not in html_again.text

    # Numbers are per seller (same series, own sequence) and, without a seller, as before.
    by_other = (await api.create(make_body(seller_id=other["id"]))).json()
    assert (await finalize(api, by_other["id"]))["number"] == "MS-000001"
    second = (await api.create(make_body())).json()
    assert (await finalize(api, second["id"]))["number"] == "MS-000002"
    await api.client.patch(
        f"/v1/sellers/{muster['id']}", json={"is_default": False}, headers=api.headers()
    )
    plain = (await api.create(make_body())).json()
    assert plain["seller_id"] is None and plain["seller"] is None
    assert (await finalize(api, plain["id"]))["number"] == "INV-000001"
    assert "seller" not in api.peers.tax_sent[-1]


async def test_a_seller_in_use_is_deactivated_not_deleted(api: Any, make_body: Any) -> None:
    unused = await add_seller(api)
    assert (
        await api.client.delete(f"/v1/sellers/{unused['id']}", headers=api.headers())
    ).status_code == 204
    used = await add_seller(api)
    created = await api.create(make_body(seller_id=used["id"]))
    assert created.status_code == 201, created.text
    refused = await api.client.delete(f"/v1/sellers/{used['id']}", headers=api.headers())
    assert refused.status_code == 409 and refused.json()["type"] == "/problems/seller-in-use"
    await api.client.patch(
        f"/v1/sellers/{used['id']}", json={"active": False}, headers=api.headers()
    )
    inactive = await api.create(make_body(seller_id=used["id"]))
    assert inactive.status_code == 422 and inactive.json()["type"] == "/problems/seller-inactive"
    unknown = await api.create(make_body(seller_id="nope"))
    assert unknown.status_code == 404 and unknown.json()["type"] == "/problems/seller-not-found"
    # The draft made before is still issued, by the seller it names.
    assert (await finalize(api, created.json()["id"]))["number"] == "MS-000001"


async def test_a_request_without_the_new_fields_keeps_its_tax_request_and_fingerprint(
    api: Any, make_body: Any
) -> None:
    created = await api.create(make_body(), key="same")
    assert created.status_code == 201
    sent = api.peers.tax_sent[-1]
    assert "seller" not in sent
    assert set(sent["customer"]) == {"id", "tax_status", "tax_id"}
    replay = await api.create(make_body(), key="same")
    assert replay.status_code == 200, replay.text


def test_the_fingerprint_of_a_request_without_the_new_fields_is_unchanged(make_body: Any) -> None:
    """A replay sent after the upgrade of a request made before must still match its key."""
    request = InvoiceCreate.model_validate(make_body())
    before = request.model_dump(mode="json")
    for name in ("seller_id", "language"):  # fields added since, not sent
        before.pop(name)
    # The customer's fields of issue 12, and of issue 13 (e-invoices: postal_address,
    # buyer_reference), did not exist before: a request without them hashes as it did.
    for name in (
        "country",
        "region",
        "kind",
        "exemption_certificate",
        "postal_address",
        "buyer_reference",
    ):
        before["customer"].pop(name)
    canonical = json.dumps(before, sort_keys=True, separators=(",", ":"))
    assert request.fingerprint() == hashlib.sha256(canonical.encode()).hexdigest()
    with_seller = InvoiceCreate.model_validate(make_body(seller_id="s-1"))
    assert with_seller.fingerprint() != request.fingerprint()
    body = make_body()
    body["customer"]["buyer_reference"] = "991-1"
    assert InvoiceCreate.model_validate(body).fingerprint() != request.fingerprint()


async def test_the_pdf_of_an_issued_invoice_shows_the_seller_as_it_was(
    api: Any, make_body: Any
) -> None:
    seller = await add_seller(api, is_default=True)
    invoice = (await api.create(make_body())).json()
    await finalize(api, invoice["id"])
    changed = await api.client.patch(
        f"/v1/sellers/{seller['id']}",
        json={"legal_name": "Renamed SE", "vat_id": "FR40303265045"},
        headers=api.headers(),
    )
    assert changed.status_code == 422  # a DE seller cannot take a French VAT id ...
    changed = await api.client.patch(
        f"/v1/sellers/{seller['id']}", json={"legal_name": "Renamed SE"}, headers=api.headers()
    )
    assert changed.status_code == 200
    # ... and the first render after the change still shows the seller at issue time.
    pdf = await api.client.get(f"/v1/invoices/{invoice['id']}/pdf", headers=api.headers())
    assert pdf.status_code == 200, pdf.text
    text = pdf_text(pdf.content)
    assert "Muster Software GmbH" in text and "Renamed SE" not in text
    assert "DE136695976" in text and "COBADEFFXXX" in text
