"""Consumed events through the in-process bus: payments applied exactly once, refunds,
failures, flags for what cannot apply, dead letters for what never can; peer events kept."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlmodel import select

from billing_common.event_schemas import (
    DISCOUNT_APPLIED,
    INVOICE_PAID,
    PAYMENT_FAILED,
    PAYMENT_RECEIVED,
    PAYMENT_REFUNDED,
    TAX_CALCULATED,
    AppliedDiscountData,
    DiscountApplied,
    PaymentFailed,
    PaymentReceived,
    PaymentRefunded,
    TaxCalculated,
)
from billing_common.events import CloudEvent, new_event
from invoice_service.adapters.orm import ReceivedEventRow

D = Decimal


async def issued_invoice(api: Any, make_body: Any, tenant: str = "acme") -> dict[str, Any]:
    body = make_body(lines=[{"description": "Widget", "quantity": "1", "unit_price": "100.00"}])
    created = (await api.create(body, tenant=tenant)).json()
    response = await api.client.post(
        f"/v1/invoices/{created['id']}/finalize", headers=api.headers(tenant)
    )
    invoice = response.json()
    assert invoice["total"] == "119.00"
    return invoice


def received(
    invoice_id: str,
    amount: str,
    currency: str = "EUR",
    tenant: str | None = "acme",
    payment_id: str | None = None,
) -> CloudEvent:
    return new_event(
        source="/billing/payment",
        event_type=PAYMENT_RECEIVED,
        data=PaymentReceived(
            payment_id=payment_id or uuid.uuid4().hex,
            invoice_id=invoice_id,
            currency=currency,
            amount=D(amount),
            gateway="sandbox",
        ),
        subject=invoice_id,
        tenant=tenant,
    )


async def deliver(api: Any, *events: CloudEvent) -> None:
    for event in events:
        await api.platform.bus.publish(event)
    await api.platform.bus.wait_idle()


async def fetch(api: Any, invoice_id: str, tenant: str = "acme") -> dict[str, Any]:
    response = await api.client.get(f"/v1/invoices/{invoice_id}", headers=api.headers(tenant))
    assert response.status_code == 200
    return response.json()


async def test_partial_then_full_payment_publishes_paid_once(api_any_db, make_body):
    api = api_any_db
    paid_events = api.record(INVOICE_PAID)
    invoice = await issued_invoice(api, make_body)
    first = received(invoice["id"], "19.00")
    await deliver(api, first, first)  # at-least-once: the duplicate has no effect
    state = await fetch(api, invoice["id"])
    assert (state["status"], state["amount_paid"], state["amount_due"]) == (
        "partially_paid",
        "19.00",
        "100.00",
    )
    assert len(state["payments"]) == 1 and state["payments"][0]["event_id"] == first.id

    last = received(invoice["id"], "100.00")
    await deliver(api, last)
    await deliver(api, CloudEvent.from_json(last.to_json()))  # redelivered copy
    state = await fetch(api, invoice["id"])
    assert (state["status"], state["amount_paid"], state["amount_due"]) == (
        "paid",
        "119.00",
        "0.00",
    )
    assert state["paid_at"] is not None
    assert [h["to_status"] for h in state["history"]] == [
        "draft",
        "issued",
        "partially_paid",
        "paid",
    ]
    assert state["history"][-1]["event_id"] == last.id

    await api.settle()
    assert [(e.subject, e.data["amount_paid"], e.data["number"]) for e in paid_events] == [
        (invoice["id"], "119.00", "INV-000001")
    ]
    assert api.platform.bus.dead_letters == []


async def test_refund_reopens_a_paid_invoice(api, make_body):
    invoice = await issued_invoice(api, make_body)
    payment = received(invoice["id"], "119.00", payment_id="pay-1")
    refund = new_event(
        source="/billing/payment",
        event_type=PAYMENT_REFUNDED,
        data=PaymentRefunded(
            payment_id="pay-1",
            refund_id="ref-1",
            invoice_id=invoice["id"],
            currency="EUR",
            amount=D("40.00"),
            gateway="sandbox",
        ),
        tenant="acme",
    )
    await deliver(api, payment, refund, refund)
    state = await fetch(api, invoice["id"])
    assert (state["status"], state["amount_paid"], state["amount_due"]) == (
        "partially_paid",
        "79.00",
        "40.00",
    )
    assert state["paid_at"] is None
    assert [p["kind"] for p in state["payments"]] == ["payment", "refund"]
    assert state["payments"][1]["refund_id"] == "ref-1"


async def test_failed_payment_is_history_only(api, make_body):
    invoice = await issued_invoice(api, make_body)
    failed = new_event(
        source="/billing/payment",
        event_type=PAYMENT_FAILED,
        data=PaymentFailed(
            payment_id="pay-9",
            invoice_id=invoice["id"],
            currency="EUR",
            amount=D("119.00"),
            gateway="sandbox",
            failure_code="card_declined",
            failure_message="insufficient funds",
        ),
        tenant="acme",
    )
    await deliver(api, failed, failed)
    state = await fetch(api, invoice["id"])
    assert state["status"] == "issued" and state["amount_paid"] == "0.00"
    entry = state["history"][-1]
    assert (entry["from_status"], entry["to_status"], entry["event_id"]) == (
        "issued",
        "issued",
        failed.id,
    )
    assert "card_declined" in entry["reason"]
    assert [(p["kind"], p["applied"]) for p in state["payments"]] == [("failure", False)]


async def test_other_currency_and_overpayment_are_flagged_not_crashing(api, make_body):
    invoice = await issued_invoice(api, make_body)
    await deliver(api, received(invoice["id"], "119.00", currency="USD"))
    state = await fetch(api, invoice["id"])
    assert state["status"] == "issued" and state["amount_paid"] == "0.00"
    assert state["payments"][0]["flag"] == "currency_mismatch"

    await deliver(api, received(invoice["id"], "150.00"))
    state = await fetch(api, invoice["id"])
    assert (state["status"], state["amount_due"], state["overpaid"]) == ("paid", "0.00", "31.00")
    assert state["payments"][-1]["flag"] == "overpayment"
    assert api.platform.bus.dead_letters == []


async def test_payment_on_a_draft_is_recorded_and_flagged(api, make_body):
    draft = (await api.create(make_body())).json()
    await deliver(api, received(draft["id"], "1.00"))
    state = await fetch(api, draft["id"])
    assert state["status"] == "draft" and state["payments"][0]["flag"] == "not_payable"


async def test_events_that_can_never_apply_are_dead_lettered(api, make_body):
    invoice = await issued_invoice(api, make_body)
    unknown = received(str(uuid.uuid4()), "1.00")
    other_tenant = received(invoice["id"], "1.00", tenant="globex")
    no_tenant = received(invoice["id"], "1.00", tenant=None)
    malformed = CloudEvent(
        source="/billing/payment",
        type=PAYMENT_RECEIVED,
        tenant="acme",
        data={"invoice_id": invoice["id"], "amount": "x"},
    )
    negative = received(invoice["id"], "-5.00")
    await deliver(api, unknown, other_tenant, no_tenant, malformed, negative)
    dead = {
        letter.event.id for letter in api.platform.bus.dead_letters if letter.consumer == "invoice"
    }
    assert dead == {unknown.id, other_tenant.id, no_tenant.id, malformed.id, negative.id}
    state = await fetch(api, invoice["id"])
    assert state["payments"] == [] and state["status"] == "issued"
    # A dead-lettered event was not claimed: replayed after a fix, it would apply.


async def test_peer_events_are_kept_by_reference(api, make_body):
    invoice = (await api.create(make_body())).json()
    tax = new_event(
        source="/billing/tax",
        event_type=TAX_CALCULATED,
        data=TaxCalculated(
            calculation_id=invoice["tax_calculation_id"],
            currency="EUR",
            price_mode="exclusive",
            total_net=D("233.33"),
            total_tax=D("40.33"),
            total_gross=D("273.66"),
            line_count=2,
            reference=invoice["id"],
        ),
        tenant="acme",
    )
    discount = new_event(
        source="/billing/discount",
        event_type=DISCOUNT_APPLIED,
        data=DiscountApplied(
            redemption_id="r-1",
            customer_id="c-1",
            currency="EUR",
            amount_before=D("10.00"),
            total_discount=D("1.00"),
            applied=[AppliedDiscountData(kind="coupon", name="x", amount=D("1.00"))],
            reference=None,
        ),
        tenant="acme",
    )
    await deliver(api, tax, tax, discount)
    state = await fetch(api, invoice["id"])
    assert [(e["event_id"], e["type"]) for e in state["received_events"]] == [
        (tax.id, TAX_CALCULATED)
    ]
    assert state["received_events"][0]["data"]["total_tax"] == "40.33"
    assert state["received_events"][0]["source"] == "/billing/tax"
    async with api.ctx.sessions() as session:
        rows = (await session.exec(select(ReceivedEventRow))).all()
    assert sorted((r.event_type, r.reference) for r in rows) == [
        (DISCOUNT_APPLIED, None),
        (TAX_CALCULATED, invoice["id"]),
    ]
    assert api.platform.bus.dead_letters == []
