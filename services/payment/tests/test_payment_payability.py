"""Every status change of an invoice reaches the payment service (billing.invoice.status_changed
.v1, ordered by the invoice's version), a charge is refused while the invoice is not payable,
and a payment the invoice refused is refunded once, on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

from billing_common.event_schemas import (
    INVOICE_PAYMENT_REJECTED,
    INVOICE_STATUS_CHANGED,
    PAYMENT_REFUNDED,
    InvoicePaymentRejected,
    InvoiceStatusChanged,
)
from billing_common.events import CloudEvent, new_event

from .conftest import Harness


async def status_changed(
    h: Harness, invoice_id: str, status: str, version: int, *, previous: str = "issued"
) -> CloudEvent:
    event = new_event(
        source="/billing/invoice",
        event_type=INVOICE_STATUS_CHANGED,
        data=InvoiceStatusChanged(
            invoice_id=invoice_id,
            number=f"INV-{invoice_id}",
            customer_id="cust-1",
            currency="EUR",
            status=status,
            previous_status=previous,
            total=Decimal("100.00"),
            amount_paid=Decimal("0.00"),
            amount_due=Decimal("100.00"),
            version=version,
        ),
        subject=invoice_id,
        tenant=h.tenant,
    )
    await h.publish(event)
    return event


async def test_an_uncollectible_invoice_is_refused_and_never_charged(harness: Harness) -> None:
    h = harness
    invoice = await h.open_invoice()
    await status_changed(h, invoice, "uncollectible", version=5)
    refused = await h.pay(invoice)
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == "/problems/invoice-not-payable"
    assert refused.json()["invoice_status"] == "uncollectible"
    assert refused.json()["invoice_state"] == "void"  # the former name, kept for old clients
    assert h.sandbox.charge_calls == 0
    # A stale event (lower version) or a late finalized event does not make it payable again.
    await status_changed(h, invoice, "issued", version=3, previous="draft")
    assert (await h.pay(invoice)).status_code == 409
    view = (await h.client.get(f"/v1/payable-invoices/{invoice}", headers=h.headers())).json()
    assert (view["status"], view["state"], view["payable"]) == ("uncollectible", "void", False)


async def test_status_changes_apply_in_version_order(harness: Harness) -> None:
    h = harness
    invoice = await h.open_invoice()
    await status_changed(h, invoice, "paid", version=4)
    await status_changed(h, invoice, "issued", version=3)  # older: ignored
    view = (await h.client.get(f"/v1/payable-invoices/{invoice}", headers=h.headers())).json()
    assert view["status"] == "paid"
    await status_changed(h, invoice, "partially_paid", version=6)  # a refund re-opened it
    view = (await h.client.get(f"/v1/payable-invoices/{invoice}", headers=h.headers())).json()
    assert (view["status"], view["payable"]) == ("partially_paid", True)
    assert (await h.pay(invoice, amount="10.00")).status_code == 201


async def test_a_payment_the_invoice_refused_is_refunded_once(harness: Harness) -> None:
    h = harness
    invoice = await h.open_invoice()
    paid = await h.pay(invoice)
    assert paid.status_code == 201 and paid.json()["status"] == "succeeded"
    rejected = new_event(
        source="/billing/invoice",
        event_type=INVOICE_PAYMENT_REJECTED,
        data=InvoicePaymentRejected(
            invoice_id=invoice,
            payment_id=paid.json()["id"],
            currency="EUR",
            amount=Decimal("100.00"),
            reason="not_payable",
            invoice_status="void",
        ),
        subject=invoice,
        tenant=h.tenant,
    )
    await h.publish(rejected)
    await h.publish(rejected)  # redelivered: no second refund
    payment = (await h.client.get(f"/v1/payments/{paid.json()['id']}", headers=h.headers())).json()
    assert payment["status"] == "refunded"
    assert [(r["amount"], r["status"]) for r in payment["refunds"]] == [("100.00", "succeeded")]
    assert h.sandbox.refund_calls == 1
    assert (await h.outbox_types()).count(PAYMENT_REFUNDED) == 1
