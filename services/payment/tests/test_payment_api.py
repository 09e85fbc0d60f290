"""HTTP API through httpx.ASGITransport with the real lifespan (migrations, bus, relay)."""

from __future__ import annotations

import uuid

import pytest

from billing_common.auth import ALL_SCOPES
from billing_common.event_schemas import INVOICE_CREATED, INVOICE_VOIDED

from .conftest import Harness

PROBLEM = "application/problem+json"


def problem_type(response_json: dict[str, object]) -> object:
    return response_json["type"]


# -- paying ---------------------------------------------------------------------------------


async def test_pay_succeeds_once_and_a_replay_returns_the_same_payment(harness: Harness) -> None:
    invoice = await harness.open_invoice(amount_due="120.50")
    key = uuid.uuid4().hex
    first = await harness.pay(invoice, key=key)
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["status"] == "succeeded"
    assert body["amount"] == "120.50" and body["currency"] == "EUR"
    assert body["gateway_reference"].startswith("sbx_ch_")
    assert [h["to_status"] for h in body["history"]] == ["pending", "succeeded"]

    again = await harness.pay(invoice, key=key)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == body["id"]
    assert harness.sandbox.charge_calls == 1

    events = await harness.outbox()
    assert [e.type for e in events] == ["billing.payment.received.v1"]
    received = events[0]
    assert received.tenant == "acme" and received.subject == body["id"]
    assert received.data == {
        "payment_id": body["id"],
        "invoice_id": invoice,
        "currency": "EUR",
        "amount": "120.50",
        "gateway": "sandbox",
        "gateway_reference": body["gateway_reference"],
    }
    view = await harness.client.get(f"/v1/payable-invoices/{invoice}", headers=harness.headers())
    assert view.json() | {"updated_at": None} == {
        "invoice_id": invoice,
        "number": f"INV-{invoice}",
        "customer_id": "cust-1",
        "currency": "EUR",
        "status": "issued",
        "state": "open",
        "payable": False,
        "total": "120.50",
        "amount_due": "120.50",
        "paid": "120.50",
        "captured": "120.50",
        "refunded": "0.00",
        "pending": "0.00",
        "outstanding": "0.00",
        "updated_at": None,
    }


async def test_same_key_with_another_body_is_a_conflict(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    invoice = await h.open_invoice()
    key = "key-1"
    assert (await h.pay(invoice, amount="10.00", key=key)).status_code == 201
    # "10.0" means the same amount: the same request.
    assert (await h.pay(invoice, amount="10.0", key=key)).status_code == 200
    conflict = await h.pay(invoice, amount="11.00", key=key)
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == PROBLEM
    assert problem_type(conflict.json()) == "/problems/idempotency-key-reused"
    assert h.sandbox.charge_calls == 1


async def test_idempotency_key_is_required(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    invoice = await h.open_invoice()
    response = await h.client.post(
        "/v1/payments",
        json={"invoice_id": invoice, "payment_method": "tok_visa"},
        headers=h.headers(),
    )
    assert response.status_code == 400
    assert problem_type(response.json()) == "/problems/idempotency-key-required"
    too_long = await h.pay(invoice, key="k" * 256)
    assert too_long.status_code == 400
    assert h.sandbox.charge_calls == 0


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("tok_declined", "card_declined"),
        ("tok_insufficient_funds", "insufficient_funds"),
        ("tok_unknown", "invalid_payment_method"),
    ],
)
async def test_declines_fail_the_payment_and_publish_failed(
    sqlite_harness: Harness, token: str, code: str
) -> None:
    h = sqlite_harness
    invoice = await h.open_invoice(amount_due="50.00")
    response = await h.pay(invoice, token=token)
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "failed" and body["failure_code"] == code
    assert body["next_action"] is None
    events = await h.outbox()
    assert [e.type for e in events] == ["billing.payment.failed.v1"]
    assert events[0].data["failure_code"] == code
    # A failed payment holds nothing back: the invoice can be paid in full again.
    assert (await h.pay(invoice)).json()["amount"] == "50.00"


async def test_processing_errors_stay_pending_and_are_retried_with_the_same_key(
    sqlite_harness: Harness,
) -> None:
    h = sqlite_harness
    invoice = await h.open_invoice(amount_due="30.00")
    key = "retry-me"
    first = await h.pay(invoice, token="tok_processing_error", key=key)
    assert first.status_code == 201
    assert first.json().items() >= {"status": "pending", "failure_code": "processing_error"}.items()
    assert first.json()["next_action"] == "retry" and first.json()["attempts"] == 1
    # The pending payment holds its amount back from other payments.
    blocked = await h.pay(invoice, token="tok_visa")
    assert blocked.status_code == 409
    assert problem_type(blocked.json()) == "/problems/nothing-outstanding"

    second = await h.pay(invoice, token="tok_processing_error", key=key)
    assert second.status_code == 200 and second.json()["attempts"] == 2
    assert second.json()["status"] == "pending"
    third = await h.pay(invoice, token="tok_processing_error", key=key)
    assert third.json()["status"] == "failed" and third.json()["attempts"] == 3
    fourth = await h.pay(invoice, token="tok_processing_error", key=key)
    assert fourth.json()["status"] == "failed"
    assert h.sandbox.charge_calls == 3
    assert await h.outbox_types() == ["billing.payment.failed.v1"]


async def test_partial_payments_up_to_the_amount_due(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    invoice = await h.open_invoice(amount_due="100.00")
    assert (await h.pay(invoice, amount="30.00")).status_code == 201
    over = await h.pay(invoice, amount="70.01")
    assert over.status_code == 422
    assert problem_type(over.json()) == "/problems/amount-exceeds-outstanding"
    assert over.json()["outstanding"] == "70.00"
    rest = await h.pay(invoice)
    assert rest.status_code == 201 and rest.json()["amount"] == "70.00"
    done = await h.pay(invoice)
    assert done.status_code == 409
    assert problem_type(done.json()) == "/problems/nothing-outstanding"


async def test_unknown_draft_and_void_invoices_are_not_payable(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    unknown = await h.pay("inv-nobody-knows")
    assert unknown.status_code == 409
    assert problem_type(unknown.json()) == "/problems/invoice-not-payable"
    assert "in flight" in unknown.json()["detail"]
    assert unknown.json()["invoice_state"] == "unknown"

    await h.invoice_event(INVOICE_CREATED, "inv-draft")
    draft = await h.pay("inv-draft")
    assert draft.status_code == 409 and draft.json()["invoice_state"] == "draft"

    voided = await h.open_invoice()
    await h.invoice_event(INVOICE_VOIDED, voided)
    void = await h.pay(voided)
    assert void.status_code == 409 and void.json()["invoice_state"] == "void"
    assert h.sandbox.charge_calls == 0


async def test_currency_must_be_the_invoice_currency(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    invoice = await h.open_invoice(currency="JPY", amount_due="1000")
    wrong = await h.pay(invoice, extra={"currency": "EUR"})
    assert wrong.status_code == 422
    assert problem_type(wrong.json()) == "/problems/payment-currency-mismatch"
    fraction = await h.pay(invoice, amount="10.5")
    assert fraction.status_code == 422
    assert problem_type(fraction.json()) == "/problems/invalid-amount"
    ok = await h.pay(invoice, amount="400", extra={"currency": "jpy"})
    assert ok.status_code == 201 and ok.json()["amount"] == "400"


@pytest.mark.parametrize(
    "body",
    [
        {"invoice_id": "inv-x", "payment_method": "tok_visa", "amount": 10.5},
        {"invoice_id": "inv-x", "payment_method": "tok_visa", "amount": 10},
        {"invoice_id": "inv-x", "payment_method": "tok_visa", "amount": "-5.00"},
        {"invoice_id": "inv-x", "payment_method": "tok_visa", "amount": "1e3"},
        {"invoice_id": "inv-x", "payment_method": "tok_visa", "amount": "NaN"},
        {"invoice_id": "inv-x", "payment_method": "tok_visa", "amount": "99999999999999.00"},
        {"invoice_id": "inv-x", "payment_method": "tok visa"},
        {"invoice_id": "", "payment_method": "tok_visa"},
        {"invoice_id": "inv-x"},
        {"invoice_id": "inv-x", "payment_method": "tok_visa", "surprise": True},
        {"invoice_id": "inv-x", "payment_method": "tok_visa", "gateway": "Not A Gateway"},
        ["not", "an", "object"],
    ],
)
async def test_bad_bodies_are_422_problems(sqlite_harness: Harness, body: object) -> None:
    h = sqlite_harness
    response = await h.client.post("/v1/payments", json=body, headers=h.headers(key="k"))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert h.sandbox.charge_calls == 0


async def test_zero_amount_is_rejected(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    invoice = await h.open_invoice()
    response = await h.pay(invoice, amount="0.00")
    assert response.status_code == 422
    assert problem_type(response.json()) == "/problems/invalid-amount"


async def test_malformed_json_and_huge_bodies(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    headers = h.headers(key="k") | {"content-type": "application/json"}
    malformed = await h.client.post("/v1/payments", content=b'{"invoice_id": ', headers=headers)
    assert malformed.status_code == 400
    assert problem_type(malformed.json()) == "/problems/malformed-json"
    huge = b'{"invoice_id": "' + b"x" * 100_000 + b'"}'
    too_large = await h.client.post("/v1/payments", content=huge, headers=headers)
    assert too_large.status_code == 413
    assert too_large.headers["content-type"] == PROBLEM


async def test_unknown_or_unconfigured_gateway(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    invoice = await h.open_invoice()
    response = await h.pay(invoice, extra={"gateway": "stripe"})
    assert response.status_code == 422
    assert problem_type(response.json()) == "/problems/unknown-gateway"
    assert response.json()["available"] == ["sandbox"]


async def test_auth_and_scopes(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    invoice = await h.open_invoice()
    anonymous = await h.client.post("/v1/payments", json={}, headers={"idempotency-key": "k"})
    assert anonymous.status_code == 401
    read_only = await h.client.post(
        "/v1/payments",
        json={"invoice_id": invoice, "payment_method": "tok_visa"},
        headers=h.headers(key="k", scopes=frozenset({"payment:read"})),
    )
    assert read_only.status_code == 403
    assert read_only.json()["required_scope"] == "payment:write"
    paid = (await h.pay(invoice)).json()
    no_refund_scope = await h.client.post(
        f"/v1/payments/{paid['id']}/refunds",
        json={},
        headers=h.headers(key="r", scopes=frozenset({"payment:write", "payment:read"})),
    )
    assert no_refund_scope.status_code == 403


async def test_tenants_never_see_each_other(harness: Harness) -> None:
    invoice = await harness.open_invoice()
    paid = (await harness.pay(invoice)).json()
    other = harness.headers(tenant="globex")
    assert (
        await harness.client.get(f"/v1/payments/{paid['id']}", headers=other)
    ).status_code == 404
    listing = await harness.client.get("/v1/payments", headers=other)
    assert listing.json()["items"] == [] and listing.json()["total"] == 0
    view = await harness.client.get(f"/v1/payable-invoices/{invoice}", headers=other)
    assert view.status_code == 404
    foreign_pay = await harness.pay(invoice, tenant="globex")
    assert foreign_pay.status_code == 409
    refund = await harness.client.post(
        f"/v1/payments/{paid['id']}/refunds",
        json={},
        headers=harness.headers(tenant="globex", key="r"),
    )
    assert refund.status_code == 404
    # The same Idempotency-Key in another tenant is another request.
    await harness.open_invoice("inv-shared", tenant="globex")
    assert (await harness.pay("inv-shared", tenant="globex", key="k1")).status_code == 201
    await harness.open_invoice("inv-shared")
    assert (await harness.pay("inv-shared", key="k1")).status_code == 201


async def test_list_filters_and_paginates(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    first = await h.open_invoice(amount_due="100.00")
    second = await h.open_invoice(amount_due="100.00")
    for amount in ("10.00", "20.00", "30.00"):
        await h.pay(first, amount=amount)
    await h.pay(second, token="tok_declined")
    everything = (await h.client.get("/v1/payments", headers=h.headers())).json()
    assert everything["total"] == 4
    page = (
        await h.client.get("/v1/payments?limit=2&offset=0&invoice_id=" + first, headers=h.headers())
    ).json()
    assert page["total"] == 3 and [p["amount"] for p in page["items"]] == ["30.00", "20.00"]
    page2 = (
        await h.client.get(f"/v1/payments?limit=2&offset=2&invoice_id={first}", headers=h.headers())
    ).json()
    assert [p["amount"] for p in page2["items"]] == ["10.00"]
    failed = (await h.client.get("/v1/payments?status=failed", headers=h.headers())).json()
    assert [p["invoice_id"] for p in failed["items"]] == [second]
    bad = await h.client.get("/v1/payments?status=weird&limit=0", headers=h.headers())
    assert bad.status_code == 422


# -- refunds --------------------------------------------------------------------------------


async def test_partial_then_full_refund_and_no_over_refund(harness: Harness) -> None:
    invoice = await harness.open_invoice(amount_due="80.00")
    payment = (await harness.pay(invoice)).json()
    partial = await harness.refund(payment["id"], amount="30.00", key="refund-1")
    assert partial.status_code == 201, partial.text
    assert partial.json()["refund"]["status"] == "succeeded"
    assert partial.json()["payment"]["status"] == "partially_refunded"
    assert partial.json()["payment"]["refundable_amount"] == "50.00"

    replay = await harness.refund(payment["id"], amount="30.00", key="refund-1")
    assert (
        replay.status_code == 200
        and replay.json()["refund"]["id"] == partial.json()["refund"]["id"]
    )
    reused = await harness.refund(payment["id"], amount="31.00", key="refund-1")
    assert reused.status_code == 409

    over = await harness.refund(payment["id"], amount="50.01")
    assert over.status_code == 422
    assert problem_type(over.json()) == "/problems/amount-exceeds-refundable"
    assert over.json()["refundable"] == "50.00"

    rest = await harness.refund(payment["id"])  # no amount: everything still refundable
    assert rest.status_code == 201
    assert rest.json()["refund"]["amount"] == "50.00"
    assert rest.json()["payment"]["status"] == "refunded"
    nothing = await harness.refund(payment["id"])
    assert nothing.status_code == 422
    assert harness.sandbox.refund_calls == 2

    detail = (
        await harness.client.get(f"/v1/payments/{payment['id']}", headers=harness.headers())
    ).json()
    assert [r["amount"] for r in detail["refunds"]] == ["30.00", "50.00"]
    assert [h["to_status"] for h in detail["history"]] == [
        "pending",
        "succeeded",
        "partially_refunded",
        "refunded",
    ]
    events = await harness.outbox()
    assert [e.type for e in events] == [
        "billing.payment.received.v1",
        "billing.payment.refunded.v1",
        "billing.payment.refunded.v1",
    ]
    assert [e.data["amount"] for e in events[1:]] == ["30.00", "50.00"]
    assert events[1].data["refund_id"] == partial.json()["refund"]["id"]
    # Refunded money is owed again.
    view = (
        await harness.client.get(f"/v1/payable-invoices/{invoice}", headers=harness.headers())
    ).json()
    assert view["paid"] == "0.00" and view["outstanding"] == "80.00" and view["payable"] is True


async def test_refund_rules(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    invoice = await h.open_invoice(amount_due="10.00")
    failed = (await h.pay(invoice, token="tok_declined")).json()
    not_refundable = await h.refund(failed["id"])
    assert not_refundable.status_code == 409
    assert problem_type(not_refundable.json()) == "/problems/payment-not-refundable"
    assert (await h.refund("no-such-payment")).status_code == 404
    paid = (await h.pay(invoice)).json()
    no_key = await h.client.post(f"/v1/payments/{paid['id']}/refunds", json={}, headers=h.headers())
    assert no_key.status_code == 400
    for bad in ("0", "-1", "1.001"):
        response = await h.refund(paid["id"], amount=bad)
        assert response.status_code == 422, bad
    as_number = await h.client.post(
        f"/v1/payments/{paid['id']}/refunds", json={"amount": 1.5}, headers=h.headers(key="n")
    )
    assert as_number.status_code == 422
    no_body = await h.client.post(f"/v1/payments/{paid['id']}/refunds", headers=h.headers(key="nb"))
    assert no_body.status_code == 201 and no_body.json()["refund"]["amount"] == "10.00"


async def test_payment_detail_and_missing(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    missing = await h.client.get("/v1/payments/nope", headers=h.headers())
    assert missing.status_code == 404
    assert problem_type(missing.json()) == "/problems/payment-not-found"
    unknown_invoice = await h.client.get("/v1/payable-invoices/nope", headers=h.headers())
    assert unknown_invoice.status_code == 404


async def test_readiness_and_openapi(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    assert (await h.client.get("/readyz")).json()["status"] == "ready"
    spec = (await h.client.get("/openapi.json")).json()
    assert "/v1/payments/{payment_id}/refunds" in spec["paths"]
    assert "/v1/webhooks/{gateway}" in spec["paths"]
    assert ALL_SCOPES  # the token helper uses them
