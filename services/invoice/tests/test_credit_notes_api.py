"""Credit notes over HTTP, on SQLite and PostgreSQL: issue (full, by quantity, by amount),
idempotency, problems, the invoice's amounts and status, events, refunds recorded against the
credit note, the customer balance, the PDF, and concurrent credit notes of one invoice."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal as D
from typing import Any

import pytest

from billing_common.event_schemas import (
    CREDIT_NOTE_APPLIED,
    CREDIT_NOTE_ISSUED,
    CREDIT_NOTE_REFUNDED,
    INVOICE_STATUS_CHANGED,
    PAYMENT_REFUNDED,
    PaymentRefunded,
)
from billing_common.events import new_event

from .test_invoice_events import deliver, fetch, issued_invoice, received


async def credit(api: Any, invoice_id: str, body: dict[str, Any], key: str | None = None) -> Any:
    return await api.client.post(
        f"/v1/invoices/{invoice_id}/credit-notes",
        json=body,
        headers=api.headers(key=key or uuid.uuid4().hex),
    )


def refunded(invoice_id: str, payment_id: str, amount: str, credit_note_id: str) -> Any:
    return new_event(
        source="/billing/payment",
        event_type=PAYMENT_REFUNDED,
        data=PaymentRefunded(
            payment_id=payment_id,
            refund_id=uuid.uuid4().hex,
            invoice_id=invoice_id,
            currency="EUR",
            amount=D(amount),
            gateway="sandbox",
            credit_note_id=credit_note_id,
        ),
        subject=payment_id,
        tenant="acme",
    )


async def test_full_credit_before_payment_closes_the_invoice(api_any_db, make_body) -> None:
    api = api_any_db
    seen = api.record(CREDIT_NOTE_ISSUED, CREDIT_NOTE_APPLIED, INVOICE_STATUS_CHANGED)
    invoice = await issued_invoice(api, make_body)
    response = await credit(api, invoice["id"], {"reason": "order cancelled"}, key="k-1")
    assert response.status_code == 201, response.text
    note = response.json()
    assert response.headers["location"] == f"/v1/credit-notes/{note['id']}"
    assert (note["number"], note["status"], note["settlement"]) == ("CN-000001", "applied", "apply")
    assert (note["net_total"], note["tax_total"], note["total"]) == ("100.00", "19.00", "119.00")
    assert note["invoice_number"] == invoice["number"]
    assert note["lines"][0]["taxes"][0]["rate"] == "0.19"
    after = await fetch(api, invoice["id"])
    assert (after["status"], after["amount_credited"], after["amount_due"]) == (
        "credited",
        "119.00",
        "0.00",
    )
    replay = await credit(api, invoice["id"], {"reason": "order cancelled"}, key="k-1")
    assert replay.status_code == 200 and replay.json()["id"] == note["id"]
    conflict = await credit(api, invoice["id"], {"reason": "other"}, key="k-1")
    assert conflict.status_code == 409
    again = await credit(api, invoice["id"], {"reason": "twice"})
    assert again.status_code == 422
    assert again.json()["type"].endswith("/credit-exceeds-invoiced")
    await api.settle()
    types = [e.type for e in seen]
    assert types.count(CREDIT_NOTE_ISSUED) == 1 and types.count(CREDIT_NOTE_APPLIED) == 1
    [closed] = [
        e for e in seen if e.type == INVOICE_STATUS_CHANGED and e.data["status"] == "credited"
    ]
    assert closed.data["amount_due"] == "0.00"
    issued_event = next(e for e in seen if e.type == CREDIT_NOTE_ISSUED)
    assert issued_event.data["invoice_amount_credited"] == "119.00"
    # Closed: a payment arriving now is refused (and reported for its refund).
    await deliver(api, received(invoice["id"], "10.00"))
    assert (await fetch(api, invoice["id"]))["amount_paid"] == "0.00"


async def test_partial_payment_then_refund_credit_note_recorded_both_ways(
    api_any_db, make_body
) -> None:
    api = api_any_db
    seen = api.record(CREDIT_NOTE_REFUNDED)
    invoice = await issued_invoice(api, make_body)
    await deliver(api, received(invoice["id"], "59.50", payment_id="pay-1"))
    body = {
        "reason": "half returned",
        "settlement": "refund",
        "lines": [{"position": 1, "amount": "59.50"}],
    }
    too_much = await credit(
        api, invoice["id"], {**body, "lines": [{"position": 1, "amount": "59.51"}]}
    )
    assert too_much.status_code == 422
    response = await credit(api, invoice["id"], body)
    assert response.status_code == 201, response.text
    note = response.json()
    assert (note["status"], note["net_total"], note["tax_total"]) == ("issued", "50.00", "9.50")
    state = await fetch(api, invoice["id"])
    # Owed 119 − 59.50 credited; paid 59.50 (the refund has not come yet).
    assert (state["status"], state["amount_due"]) == ("paid", "0.00")
    await deliver(api, refunded(invoice["id"], "pay-1", "59.50", note["id"]))
    await api.settle()
    state = await fetch(api, invoice["id"])
    assert (state["amount_paid"], state["amount_credited"], state["amount_due"]) == (
        "0.00",
        "59.50",
        "59.50",
    )
    assert state["status"] == "issued"
    done = (await api.client.get(f"/v1/credit-notes/{note['id']}", headers=api.headers())).json()
    assert done["status"] == "refunded" and done["amount_refunded"] == "59.50"
    assert len(done["refund_ids"]) == 1
    assert [e.data["credit_note_id"] for e in seen] == [note["id"]]


async def test_quantity_credit_to_the_customer_balance_and_listing(api, make_body) -> None:
    created = (await api.create(make_body())).json()
    invoice = (
        await api.client.post(f"/v1/invoices/{created['id']}/finalize", headers=api.headers())
    ).json()
    await deliver(api, received(invoice["id"], invoice["total"]))
    body = {
        "reason": "one widget broken",
        "settlement": "customer_balance",
        "lines": [{"position": 1, "quantity": 1}],
    }
    note = (await credit(api, invoice["id"], body)).json()
    assert (note["status"], note["total"]) == ("credited", "119.00")
    balance = await api.client.get("/v1/customers/c-1/balance", headers=api.headers())
    assert balance.json() == {"customer_id": "c-1", "balances": {"EUR": "119.00"}}
    second = (
        await credit(
            api,
            invoice["id"],
            {"reason": "book", "settlement": "customer_balance", "lines": [{"position": 2}]},
        )
    ).json()
    assert second["number"] == "CN-000002"
    listed = await api.client.get(
        f"/v1/invoices/{invoice['id']}/credit-notes", headers=api.headers()
    )
    assert [n["number"] for n in listed.json()["items"]] == ["CN-000001", "CN-000002"]
    state = await fetch(api, invoice["id"])
    assert state["status"] == "paid" and D(state["amount_credited"]) == D("119.00") + D(
        second["total"]
    )


async def test_problems_for_drafts_unknown_lines_and_missing_keys(api, make_body) -> None:
    draft = (await api.create(make_body())).json()
    refused = await credit(api, draft["id"], {"reason": "x"})
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/invoice-not-creditable")
    invoice = await issued_invoice(api, make_body)
    no_key = await api.client.post(
        f"/v1/invoices/{invoice['id']}/credit-notes", json={"reason": "x"}, headers=api.headers()
    )
    assert no_key.status_code == 400
    unknown_line = await credit(api, invoice["id"], {"reason": "x", "lines": [{"position": 9}]})
    assert unknown_line.status_code == 422
    both = await credit(
        api,
        invoice["id"],
        {"reason": "x", "lines": [{"position": 1, "quantity": 1, "amount": "1.00"}]},
    )
    assert both.status_code == 422
    assert (await api.client.get("/v1/credit-notes/nope", headers=api.headers())).status_code == 404
    missing = await api.client.get("/v1/invoices/nope/credit-notes", headers=api.headers())
    assert missing.status_code == 404
    assert (await fetch(api, invoice["id"]))["amount_credited"] == "0.00"


async def test_credit_note_pdf(api, make_body) -> None:
    invoice = await issued_invoice(api, make_body)
    note = (await credit(api, invoice["id"], {"reason": "cancelled"})).json()
    html = api.app.state.credit_note_html
    assert "CN-000001" in html.render(*(await _note_and_invoice(api, note["id"], invoice["id"])))
    response = await api.client.get(f"/v1/credit-notes/{note['id']}/pdf", headers=api.headers())
    if response.status_code == 503:
        pytest.skip("PDF rendering is not available on this host")
    assert response.status_code == 200 and response.content.startswith(b"%PDF")
    cached = await api.client.get(
        f"/v1/credit-notes/{note['id']}/pdf",
        headers=api.headers(**{"If-None-Match": response.headers["etag"]}),
    )
    assert cached.status_code == 304


async def _note_and_invoice(api: Any, note_id: str, invoice_id: str) -> tuple[Any, Any]:
    async with api.app.state.deps.uow("acme") as uow:
        return await uow.credit_notes.get(note_id), await uow.invoices.get(invoice_id)


@pytest.mark.parametrize("settlement", ["apply", "customer_balance"])
async def test_concurrent_credit_notes_never_exceed_the_invoice(
    api_any_db, make_body, settlement
) -> None:
    api = api_any_db
    invoice = await issued_invoice(api, make_body)
    body = {"reason": "r", "settlement": settlement, "lines": [{"position": 1, "amount": "50.00"}]}
    answers = await asyncio.gather(*(credit(api, invoice["id"], body) for _ in range(4)))
    codes = sorted(a.status_code for a in answers)
    # Two fit in 119.00; the others are refused (422) or lost the race (409, retryable).
    assert codes.count(201) <= 2 and set(codes) <= {201, 409, 422}
    if api.database_url.startswith("postgresql"):
        # The row lock queues them: exactly two fit, the others see them and are refused.
        assert codes == [201, 201, 422, 422]
    state = await fetch(api, invoice["id"])
    assert D(state["amount_credited"]) == D("50.00") * codes.count(201) <= D("119.00")
    listed = (
        await api.client.get(f"/v1/invoices/{invoice['id']}/credit-notes", headers=api.headers())
    ).json()["items"]
    assert len(listed) == codes.count(201)
    assert sorted(n["number"] for n in listed) == [f"CN-{i:06d}" for i in range(1, len(listed) + 1)]
