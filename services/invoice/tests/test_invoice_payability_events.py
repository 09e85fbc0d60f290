"""What the payment service needs to hear, on SQLite and PostgreSQL: every status change as
billing.invoice.status_changed.v1 (with the version that orders them), and a payment the
invoice refuses as billing.invoice.payment_rejected.v1; the automatic refund of that payment
then changes nothing here."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from billing_common.event_schemas import (
    INVOICE_PAYMENT_REJECTED,
    INVOICE_STATUS_CHANGED,
    PAYMENT_REFUNDED,
    PaymentRefunded,
)
from billing_common.events import new_event

from .test_invoice_events import deliver, fetch, issued_invoice, received


async def test_every_status_change_is_published_in_version_order(api_any_db, make_body) -> None:
    api = api_any_db
    changes = api.record(INVOICE_STATUS_CHANGED)
    invoice = await issued_invoice(api, make_body)
    await deliver(api, received(invoice["id"], "19.00"))
    await api.settle()
    written_off = await api.client.post(
        f"/v1/invoices/{invoice['id']}/mark-uncollectible", headers=api.headers()
    )
    assert written_off.status_code == 200
    await api.settle()
    seen = [(e.data["previous_status"], e.data["status"]) for e in changes]
    assert seen == [
        ("draft", "issued"),
        ("issued", "partially_paid"),
        ("partially_paid", "uncollectible"),
    ]
    versions = [e.data["version"] for e in changes]
    assert versions == sorted(versions) and len(set(versions)) == 3


async def test_a_refused_payment_is_reported_and_its_refund_changes_nothing(
    api_any_db: Any, make_body: Any
) -> None:
    api = api_any_db
    rejected = api.record(INVOICE_PAYMENT_REJECTED)
    invoice = await issued_invoice(api, make_body)
    voided = await api.client.post(f"/v1/invoices/{invoice['id']}/void", headers=api.headers())
    assert voided.status_code == 200
    payment_id = uuid.uuid4().hex
    await deliver(api, received(invoice["id"], "119.00", payment_id=payment_id))
    await api.settle()
    assert [(e.data["payment_id"], e.data["reason"]) for e in rejected] == [
        (payment_id, "not_payable")
    ]
    assert rejected[0].data["invoice_status"] == "void"
    refund = new_event(
        source="/billing/payment",
        event_type=PAYMENT_REFUNDED,
        data=PaymentRefunded(
            payment_id=payment_id,
            refund_id=uuid.uuid4().hex,
            invoice_id=invoice["id"],
            currency="EUR",
            amount=Decimal("119.00"),
            gateway="sandbox",
        ),
        subject=payment_id,
        tenant="acme",
    )
    await deliver(api, refund)
    after = await fetch(api, invoice["id"])
    assert after["status"] == "void" and Decimal(after["amount_paid"]) == 0
    assert [(p["kind"], p["applied"], p["flag"]) for p in after["payments"]] == [
        ("payment", False, "not_payable"),
        ("refund", False, "refund_of_unapplied_payment"),
    ]
