"""HTTP API tests: the real app (lifespan, migrations, auth, problems) with test peers
reached through the real in-process ServiceInvoker."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from sqlmodel import func, select

from billing_common.event_schemas import (
    INVOICE_CREATED,
    INVOICE_FINALIZED,
    INVOICE_VOIDED,
)
from billing_common.outbox import OutboxMessage
from invoice_service.adapters.orm import InvoiceRow

D = Decimal


async def count_rows(api: Any, model: Any) -> int:
    async with api.ctx.sessions() as session:
        return int((await session.exec(select(func.count()).select_from(model))).one())


async def test_create_discounts_before_tax_and_keeps_original_lines(api_any_db, make_body):
    api = api_any_db
    response = await api.create(make_body(coupon_codes=["WELCOME10"]), key="order-1")
    assert response.status_code == 201, response.text
    invoice = response.json()
    assert response.headers["location"] == f"/v1/invoices/{invoice['id']}"
    assert invoice["status"] == "draft" and invoice["number"] is None
    # 233.33 subtotal, 10% = 23.33 spread 20.00 / 3.33, then 19% and 7% tax.
    assert [
        (
            ln["quantity"],
            ln["unit_price"],
            ln["subtotal"],
            ln["discount"],
            ln["net"],
            ln["tax"],
            ln["total"],
        )
        for ln in invoice["lines"]
    ] == [
        ("2", "100.00", "200.00", "20.00", "180.00", "34.20", "214.20"),
        ("1", "33.33", "33.33", "3.33", "30.00", "2.10", "32.10"),
    ]
    assert (
        invoice["subtotal"],
        invoice["discount_total"],
        invoice["net_total"],
        invoice["tax_total"],
        invoice["total"],
        invoice["amount_due"],
    ) == ("233.33", "23.33", "210.00", "36.30", "246.30", "246.30")
    assert invoice["lines"][0]["taxes"][0]["name"] == "DE VAT standard"
    assert invoice["lines"][0]["taxes"][0]["rate"] == "0.19"
    assert invoice["discounts"] == [
        {"kind": "coupon", "code": "WELCOME10", "name": "Welcome 10%", "amount": "23.33"}
    ]
    assert invoice["tax_calculation_id"] and invoice["discount_redemption_id"]
    # Tax saw each line once, at its discounted amount, quantity 1; reference = invoice id.
    (tax_call,) = api.peers.tax_calls
    assert [(ln["unit_price"], ln["quantity"], ln["category"]) for ln in tax_call["lines"]] == [
        ("180.00", "1", "standard"),
        ("30.00", "1", "reduced"),
    ]
    assert tax_call["reference"] == invoice["id"]
    # With coupons the redemption is the quote (it answers what it applied): no quote call.
    assert api.peers.quote_calls == []
    ((redeem_key, redeem_body),) = api.peers.redeem_calls
    assert redeem_key == "invoice:acme:order-1" and redeem_body["reference"] == invoice["id"]
    assert redeem_body["amount"] == "233.33"
    assert set(api.peers.tenants_seen) == {"acme"}

    fetched = (await api.client.get(f"/v1/invoices/{invoice['id']}", headers=api.headers())).json()
    assert fetched == invoice


async def test_no_redemption_without_discount_and_inclusive_prices(api, make_body):
    body = make_body(
        price_mode="inclusive",
        lines=[{"description": "Gross widget", "quantity": 3, "unit_price": "11.90"}],
    )
    response = await api.create(body)
    assert response.status_code == 201, response.text
    invoice = response.json()
    (line,) = invoice["lines"]
    assert (line["subtotal"], line["total"], line["net"], line["tax"]) == (
        "35.70",
        "35.70",
        "30.00",
        "5.70",
    )
    assert invoice["total"] == "35.70" and invoice["discount_total"] == "0.00"
    assert api.peers.redeem_calls == [] and invoice["discount_redemption_id"] is None


async def test_user_type_and_multi_tax_jurisdiction(api, make_body):
    body = make_body(
        customer={
            "id": "c-9",
            "type": "premium",
            "jurisdiction": {"country": "ca", "region": "qc"},
        },
        lines=[{"description": "Service", "quantity": "1", "unit_price": "100.00"}],
    )
    invoice = (await api.create(body)).json()
    (line,) = invoice["lines"]
    assert line["discount"] == "5.00" and line["net"] == "95.00"
    assert [(t["name"], t["amount"]) for t in line["taxes"]] == [
        ("CA GST", "4.75"),
        ("QC QST", "9.48"),
    ]
    assert invoice["tax_total"] == "14.23" and invoice["total"] == "109.23"
    assert invoice["customer"]["jurisdiction"] == {"country": "CA", "region": "QC"}


async def test_tax_is_computed_on_what_the_redemption_applied(api, make_body):
    api.peers.redeem_rate_override = D("0.20")
    invoice = (await api.create(make_body(coupon_codes=["WELCOME10"]))).json()
    assert invoice["discount_total"] == "46.67"
    assert [ln["discount"] for ln in invoice["lines"]] == ["40.00", "6.67"]
    assert len(api.peers.tax_calls) == 1
    assert [ln["unit_price"] for ln in api.peers.tax_calls[-1]["lines"]] == ["160.00", "26.66"]
    assert invoice["net_total"] == "186.66"


async def test_same_key_same_body_replays_and_other_body_conflicts(api_any_db, make_body):
    api = api_any_db
    first = await api.create(make_body(coupon_codes=["WELCOME10"]), key="k-1")
    again = await api.create(make_body(coupon_codes=["WELCOME10"]), key="k-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    other = await api.create(make_body(currency="USD"), key="k-1")
    assert other.status_code == 409
    assert other.json()["type"] == "/problems/idempotency-conflict"
    assert len(api.peers.tax_calls) == 1 and len(api.peers.redeem_calls) == 1
    assert await count_rows(api, InvoiceRow) == 1


async def test_concurrent_requests_with_one_key_make_one_invoice(api, make_body):
    responses = await asyncio.gather(*(api.create(make_body(), key="race") for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count_rows(api, InvoiceRow) == 1


async def test_idempotency_key_is_required_and_checked(api, make_body):
    missing = await api.client.post("/v1/invoices", json=make_body(), headers=api.headers())
    assert missing.status_code == 400
    assert missing.json()["type"] == "/problems/idempotency-key-required"
    bad = await api.client.post(
        "/v1/invoices", json=make_body(), headers=api.headers(key="x" * 129)
    )
    assert bad.status_code == 400 and bad.json()["type"] == "/problems/invalid-idempotency-key"


async def test_peer_down_answers_503_writes_nothing_and_retry_succeeds(api_any_db, make_body):
    api = api_any_db
    body = make_body(coupon_codes=["WELCOME10"])
    api.peers.tax_down = True
    down = await api.create(body, key="retry-me")
    assert down.status_code == 503
    problem = down.json()
    assert problem["type"] == "/problems/peer-unavailable" and problem["peer"] == "tax"
    assert down.headers["retry-after"]
    assert await count_rows(api, InvoiceRow) == 0 and await count_rows(api, OutboxMessage) == 0
    assert api.peers.redemptions == {}  # the redemption made before tax was given back

    api.peers.tax_down = False
    retried = await api.create(body, key="retry-me")
    assert retried.status_code == 201, retried.text
    assert await count_rows(api, InvoiceRow) == 1


async def test_discount_service_missing_or_down(api, make_body):
    discount_app = api.platform.apps.pop("discount")
    gone = await api.create(make_body(), key="k")
    assert gone.status_code == 503 and gone.json()["peer"] == "discount"
    api.platform.apps["discount"] = discount_app
    api.peers.discount_down = True
    down = await api.create(make_body(), key="k")
    assert down.status_code == 503
    assert api.peers.tax_calls == [] and await count_rows(api, InvoiceRow) == 0
    api.peers.discount_down = False
    assert (await api.create(make_body(), key="k")).status_code == 201


async def test_peer_refusals_are_passed_on_as_422(api, make_body):
    unknown = await api.create(make_body(customer={"id": "c", "jurisdiction": {"country": "FR"}}))
    assert unknown.status_code == 422
    problem = unknown.json()
    assert problem["type"] == "/problems/unknown-jurisdiction"
    assert "FR" in problem["detail"] and problem["peer"] == "tax"

    category = await api.create(
        make_body(
            lines=[
                {"description": "x", "quantity": "1", "unit_price": "1.00", "category": "luxury"}
            ]
        )
    )
    assert category.status_code == 422 and category.json()["type"] == "/problems/unknown-category"

    coupon = await api.create(make_body(coupon_codes=["WELCOME10", "OLD"]))
    assert coupon.status_code == 422
    assert coupon.json()["type"] == "/problems/coupon-not-applicable"
    assert (coupon.json()["code"], coupon.json()["reason"]) == ("OLD", "expired")
    assert api.peers.redemptions == {} and await count_rows(api, InvoiceRow) == 0


async def test_invalid_requests_are_422_problems(api, make_body):
    cases = [
        make_body(lines=[{"description": "x", "quantity": "1", "unit_price": 10.5}]),  # float
        make_body(lines=[{"description": "x", "quantity": "1", "unit_price": "-1.00"}]),
        make_body(lines=[{"description": "x", "quantity": "0", "unit_price": "1.00"}]),
        make_body(lines=[]),
        make_body(currency="XXX"),
        make_body(series="bad series"),
        make_body(due_days=-1),
        make_body(
            customer={"id": "c", "jurisdiction": {"country": "DE"}, "tax_status": "reverse_charge"}
        ),
        make_body(lines=[{"description": "x", "quantity": "1", "unit_price": "1e20"}]),
        make_body(unexpected="field"),
    ]
    for body in cases:
        response = await api.create(body)
        assert response.status_code == 422, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    malformed = await api.client.post(
        "/v1/invoices",
        content=b"{",
        headers=api.headers(key="m", **{"content-type": "application/json"}),
    )
    assert malformed.status_code == 400
    assert await count_rows(api, InvoiceRow) == 0 and api.peers.tax_calls == []


async def test_auth_and_scopes(api, make_body):
    anonymous = await api.client.get("/v1/invoices")
    assert anonymous.status_code == 401
    reader = {
        "authorization": f"Bearer {api.token(scopes={'invoice:read'})}",
        "idempotency-key": "k",
    }
    forbidden = await api.client.post("/v1/invoices", json=make_body(), headers=reader)
    assert forbidden.status_code == 403 and forbidden.json()["required_scope"] == "invoice:write"
    assert (await api.client.get("/v1/invoices", headers=reader)).status_code == 200


async def test_status_endpoints_and_transition_problems(api_any_db, make_body):
    api = api_any_db
    events = api.record(INVOICE_CREATED, INVOICE_FINALIZED, INVOICE_VOIDED)
    a = (await api.create(make_body())).json()
    b = (await api.create(make_body())).json()
    c = (await api.create(make_body())).json()

    fin = await api.client.post(f"/v1/invoices/{a['id']}/finalize", headers=api.headers())
    assert fin.status_code == 200, fin.text
    issued = fin.json()
    assert issued["status"] == "issued" and issued["number"] == "INV-000001"
    assert issued["issued_at"] and issued["due_date"]
    again = await api.client.post(f"/v1/invoices/{a['id']}/finalize", headers=api.headers())
    assert again.status_code == 409
    assert again.json()["type"] == "/problems/invalid-transition"
    assert again.json()["current_status"] == "issued"

    void = await api.client.post(
        f"/v1/invoices/{b['id']}/void", json={"reason": "duplicate"}, headers=api.headers()
    )
    assert void.status_code == 200 and void.json()["status"] == "void"
    assert void.json()["history"][-1]["reason"] == "duplicate"
    assert void.json()["history"][-1]["actor"] == "user:alice"
    assert (
        await api.client.post(f"/v1/invoices/{b['id']}/finalize", headers=api.headers())
    ).status_code == 409

    draft_uncollectible = await api.client.post(
        f"/v1/invoices/{c['id']}/mark-uncollectible", headers=api.headers()
    )
    assert draft_uncollectible.status_code == 409
    written_off = await api.client.post(
        f"/v1/invoices/{a['id']}/mark-uncollectible",
        json={"reason": "customer gone"},
        headers=api.headers(),
    )
    assert written_off.json()["status"] == "uncollectible"
    assert written_off.json()["amount_due"] == "0.00"
    assert (
        await api.client.post(f"/v1/invoices/{a['id']}/void", headers=api.headers())
    ).status_code == 409

    c_fin = (
        await api.client.post(f"/v1/invoices/{c['id']}/finalize", headers=api.headers())
    ).json()
    assert c_fin["number"] == "INV-000002"  # gapless across refused attempts

    missing = await api.client.post("/v1/invoices/nope/finalize", headers=api.headers())
    assert missing.status_code == 404 and missing.json()["type"] == "/problems/invoice-not-found"

    await api.settle()
    kinds = [(e.type, e.subject) for e in events]
    assert kinds.count((INVOICE_CREATED, a["id"])) == 1
    assert (INVOICE_FINALIZED, a["id"]) in kinds and (INVOICE_VOIDED, b["id"]) in kinds
    finalized = next(e for e in events if e.type == INVOICE_FINALIZED and e.subject == a["id"])
    assert finalized.tenant == "acme"
    assert finalized.data["number"] == "INV-000001"
    assert finalized.data["amount_due"] == issued["amount_due"] == issued["total"] == "273.66"
    assert finalized.data["due_date"] == issued["due_date"]
    created = next(e for e in events if e.type == INVOICE_CREATED and e.subject == a["id"])
    assert created.data["total"] == a["total"] and created.data["status"] == "draft"


async def test_series_numbering_is_per_series_and_tenant(api, make_body):
    ids = [
        (await api.create(make_body(series=s), tenant=t)).json()["id"]
        for s, t in [("INV", "acme"), ("CRN", "acme"), ("INV", "globex")]
    ]
    numbers = []
    for invoice_id, tenant in zip(ids, ["acme", "acme", "globex"], strict=True):
        r = await api.client.post(
            f"/v1/invoices/{invoice_id}/finalize", headers=api.headers(tenant)
        )
        numbers.append(r.json()["number"])
    assert numbers == ["INV-000001", "CRN-000001", "INV-000001"]


async def test_tenant_isolation_over_http(api, make_body):
    mine = (await api.create(make_body(), tenant="acme")).json()
    other = api.headers("globex")
    assert (await api.client.get(f"/v1/invoices/{mine['id']}", headers=other)).status_code == 404
    assert (
        await api.client.post(f"/v1/invoices/{mine['id']}/void", headers=other)
    ).status_code == 404
    assert (
        await api.client.get(f"/v1/invoices/{mine['id']}/pdf", headers=other)
    ).status_code == 404
    assert (await api.client.get("/v1/invoices", headers=other)).json()["items"] == []
    # The same Idempotency-Key in another tenant is another invoice.
    a = await api.create(make_body(), key="shared", tenant="acme")
    b = await api.create(make_body(), key="shared", tenant="globex")
    assert (a.status_code, b.status_code) == (201, 201) and a.json()["id"] != b.json()["id"]


async def test_list_filters_and_pagination_over_http(api, make_body):
    created = []
    for n in range(5):
        body = make_body(customer={"id": f"c-{n % 2}", "jurisdiction": {"country": "DE"}})
        created.append((await api.create(body)).json()["id"])
    await api.client.post(f"/v1/invoices/{created[0]}/finalize", headers=api.headers())

    pages, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await api.client.get("/v1/invoices", params=params, headers=api.headers())).json()
        pages.append([item["id"] for item in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for p in pages for i in p] == list(reversed(created))

    issued = (
        await api.client.get("/v1/invoices", params={"status": "issued"}, headers=api.headers())
    ).json()["items"]
    assert [i["id"] for i in issued] == [created[0]] and issued[0]["number"] == "INV-000001"
    by_customer = (
        await api.client.get("/v1/invoices", params={"customer_id": "c-1"}, headers=api.headers())
    ).json()["items"]
    assert {i["id"] for i in by_customer} == {created[1], created[3]}
    future = (
        await api.client.get(
            "/v1/invoices", params={"created_from": "2999-01-01T00:00:00Z"}, headers=api.headers()
        )
    ).json()["items"]
    assert future == []
    today = (
        await api.client.get(
            "/v1/invoices", params={"issued_from": "2000-01-01T00:00:00"}, headers=api.headers()
        )
    ).json()["items"]
    assert [i["id"] for i in today] == [created[0]]

    for params in ({"limit": 101}, {"limit": 0}, {"status": "paidd"}):
        bad = await api.client.get("/v1/invoices", params=params, headers=api.headers())
        assert bad.status_code == 422, params
    # A cursor it did not hand out is a malformed parameter, as in every service.
    bad = await api.client.get(
        "/v1/invoices", params={"cursor": "not-a-cursor"}, headers=api.headers()
    )
    assert bad.status_code == 400 and bad.json()["type"] == "/problems/invalid-cursor"


async def test_health_and_readiness(api):
    assert (await api.client.get("/healthz")).json()["service"] == "invoice"
    assert (await api.client.get("/readyz")).status_code == 200


async def test_a_redemption_that_takes_nothing_off_is_given_back(api, make_body):
    # 10 % of 0.04 rounds to 0.00: as when a quote says so, no redemption is kept.
    body = make_body(
        coupon_codes=["WELCOME10"],
        lines=[{"description": "Tiny", "quantity": "1", "unit_price": "0.04"}],
    )
    response = await api.create(body)
    assert response.status_code == 201, response.text
    invoice = response.json()
    assert invoice["discount_total"] == "0.00" and invoice["discount_redemption_id"] is None
    assert len(api.peers.redeem_calls) == 1 and api.peers.redemptions == {}
