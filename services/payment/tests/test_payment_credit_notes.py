"""Credit notes as the payment service hears them (billing.creditnote.issued.v1), on SQLite
and PostgreSQL: what may still be charged goes down, a fully credited invoice is closed, and
a refund credit note is refunded once, under creditnote-refund:<id>, from captured payments,
its refund naming the credit note."""

from __future__ import annotations

import uuid
from decimal import Decimal

from billing_common.event_schemas import (
    CREDIT_NOTE_ISSUED,
    PAYMENT_REFUNDED,
    CreditNoteData,
)
from billing_common.events import CloudEvent, new_event

from .conftest import Harness
from .test_payment_payability import status_changed


def issued_note(
    h: Harness, invoice_id: str, total: str, credited: str, settlement: str = "apply"
) -> CloudEvent:
    amount = Decimal(total)
    return new_event(
        source="/billing/invoice",
        event_type=CREDIT_NOTE_ISSUED,
        data=CreditNoteData(
            credit_note_id=str(uuid.uuid4()),
            number="CN-000001",
            invoice_id=invoice_id,
            invoice_number=f"INV-{invoice_id}",
            customer_id="cust-1",
            currency="EUR",
            settlement=settlement,
            status="issued" if settlement == "refund" else "applied",
            net_total=amount,
            tax_total=Decimal("0.00"),
            total=amount,
            reason="test",
            invoice_total=Decimal("100.00"),
            invoice_amount_credited=Decimal(credited),
            invoice_version=3,
        ),
        subject=invoice_id,
        tenant=h.tenant,
    )


async def view(h: Harness, invoice_id: str) -> dict[str, object]:
    response = await h.client.get(f"/v1/payable-invoices/{invoice_id}", headers=h.headers())
    return dict(response.json())


async def test_a_credit_note_lowers_what_may_be_charged(harness: Harness) -> None:
    h = harness
    invoice = await h.open_invoice()
    note = issued_note(h, invoice, "30.00", credited="30.00")
    await h.publish(note)
    await h.publish(note)  # redelivered: lowered once
    # An older credit note arriving late (less credited in all) changes nothing.
    await h.publish(issued_note(h, invoice, "10.00", credited="10.00"))
    too_much = await h.pay(invoice, amount="70.01")
    assert too_much.status_code == 422, too_much.text
    paid = await h.pay(invoice)
    assert paid.status_code == 201 and paid.json()["amount"] == "70.00"


async def test_a_fully_credited_invoice_is_closed(harness: Harness) -> None:
    h = harness
    invoice = await h.open_invoice()
    await h.publish(issued_note(h, invoice, "100.00", credited="100.00"))
    await status_changed(h, invoice, "credited", version=4)
    refused = await h.pay(invoice)
    assert refused.status_code == 409
    assert refused.json()["invoice_status"] == "credited"
    assert (await view(h, invoice))["payable"] is False
    assert h.sandbox.charge_calls == 0


async def test_a_refund_credit_note_is_refunded_once_and_names_the_note(harness: Harness) -> None:
    h = harness
    invoice = await h.open_invoice()
    first = await h.pay(invoice, amount="40.00")
    second = await h.pay(invoice, amount="60.00")
    assert first.status_code == second.status_code == 201
    note = issued_note(h, invoice, "50.00", credited="50.00", settlement="refund")
    await h.publish(note)
    await h.publish(note)  # redelivered: the same refunds, replayed by their keys
    assert h.sandbox.refund_calls == 2  # 40.00 from the oldest payment, 10.00 from the next
    refunds = [
        (await h.client.get(f"/v1/payments/{p.json()['id']}", headers=h.headers())).json()[
            "refunds"
        ]
        for p in (first, second)
    ]
    assert [[r["amount"] for r in rs] for rs in refunds] == [["40.00"], ["10.00"]]
    published = [e for e in await h.outbox() if e.type == PAYMENT_REFUNDED]
    assert len(published) == 2
    assert {e.data["credit_note_id"] for e in published} == {note.data["credit_note_id"]}
