"""The seed's invoice-creation and payment flows across the four real services, in one process
(embedded runtime): HTTP semantics between services, events through outboxes and the bus."""

from __future__ import annotations

from decimal import Decimal

from sqlmodel import select

from billing_common.event_schemas import PAYMENT_RECEIVED
from billing_common.outbox import OutboxMessage
from billing_launcher.seed_flows import (
    ORDER,
    create_invoice,
    finalize,
    get_invoice,
    key,
    pay,
    wait_payable,
    wait_status,
)
from tests.conftest import Platform


async def test_invoice_creation_applies_discount_before_tax(platform: Platform) -> None:
    h = platform.headers()
    invoice = await create_invoice(platform.clients["invoice"], h)
    # 10 % off 220.00 = 22.00, allocated 20.00 / 2.00; tax 19 % of 180.00 + 7 % of 18.00.
    assert invoice["status"] == "draft"
    assert Decimal(invoice["subtotal"]) == Decimal("220.00")
    assert Decimal(invoice["discount_total"]) == Decimal("22.00")
    assert Decimal(invoice["tax_total"]) == Decimal("35.46")
    assert Decimal(invoice["total"]) == Decimal("233.46")
    lines = invoice["lines"]
    assert sum(Decimal(line["total"]) for line in lines) == Decimal(invoice["total"])
    assert [t["name"] for t in lines[0]["taxes"]] and lines[0]["taxes"][0]["rate"] == "0.19"
    # The tax and discount services kept their history and published their events.
    calc = await platform.clients["tax"].get(
        f"/v1/tax/calculations/{invoice['tax_calculation_id']}", headers=h
    )
    assert calc.status_code == 200
    redemption = await platform.clients["discount"].get(
        f"/v1/discounts/redemptions/{invoice['discount_redemption_id']}", headers=h
    )
    assert redemption.status_code == 200
    assert Decimal(redemption.json()["total_discount"]) == Decimal("22.00")


async def test_payment_flow_partial_then_full_then_pdf(platform: Platform) -> None:
    h = platform.headers()
    inv, pay_client = platform.clients["invoice"], platform.clients["payment"]
    invoice = await create_invoice(inv, h)
    finalized = await finalize(inv, h, invoice["id"])
    assert finalized["number"] == "INV-000001"
    await wait_payable(pay_client, h, invoice["id"])

    first = await pay(pay_client, h, invoice["id"], "100.00")
    assert first.status_code == 201 and first.json()["status"] == "succeeded"
    partial = await wait_status(inv, h, invoice["id"], "partially_paid")
    assert Decimal(partial["amount_paid"]) == Decimal("100.00")

    rest = await pay(pay_client, h, invoice["id"], None)
    assert rest.status_code == 201 and Decimal(rest.json()["amount"]) == Decimal("133.46")
    paid = await wait_status(inv, h, invoice["id"], "paid")
    assert Decimal(paid["amount_paid"]) == Decimal(paid["total"])
    assert Decimal(paid["amount_due"]) == 0

    pdf = await inv.get(f"/v1/invoices/{invoice['id']}/pdf", headers=h)
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-type"] == "application/pdf"


async def test_declined_payment_leaves_the_invoice_open(platform: Platform) -> None:
    h = platform.headers()
    inv, pay_client = platform.clients["invoice"], platform.clients["payment"]
    invoice = await create_invoice(inv, h)
    await finalize(inv, h, invoice["id"])
    await wait_payable(pay_client, h, invoice["id"])
    declined = await pay(pay_client, h, invoice["id"], "10.00", token="tok_declined")
    assert declined.json()["status"] == "failed"
    assert declined.json()["failure_code"] == "card_declined"
    insufficient = await pay(pay_client, h, invoice["id"], "10.00", token="tok_insufficient_funds")
    assert insufficient.json()["failure_code"] == "insufficient_funds"
    await platform.settle()
    after = await get_invoice(inv, h, invoice["id"])
    assert after["status"] == "issued"
    assert Decimal(after["amount_paid"]) == 0
    # Both failures reached the invoice's history through billing.payment.failed.v1.
    assert sum(1 for e in after["history"] if "fail" in str(e).lower()) >= 2


async def test_refund_reopens_a_paid_invoice(platform: Platform) -> None:
    h = platform.headers()
    inv, pay_client = platform.clients["invoice"], platform.clients["payment"]
    invoice = await create_invoice(inv, h)
    await finalize(inv, h, invoice["id"])
    await wait_payable(pay_client, h, invoice["id"])
    payment = (await pay(pay_client, h, invoice["id"], None)).json()
    await wait_status(inv, h, invoice["id"], "paid")

    refund = await pay_client.post(
        f"/v1/payments/{payment['id']}/refunds",
        json={"amount": "33.46"},
        headers={**h, "Idempotency-Key": key()},
    )
    assert refund.status_code == 201, refund.text
    reopened = await wait_status(inv, h, invoice["id"], "partially_paid")
    assert Decimal(reopened["amount_paid"]) == Decimal("200.00")

    too_much = await pay_client.post(
        f"/v1/payments/{payment['id']}/refunds",
        json={"amount": "500.00"},
        headers={**h, "Idempotency-Key": key()},
    )
    assert too_much.status_code in (409, 422)
    assert too_much.headers["content-type"] == "application/problem+json"


async def test_duplicate_payment_event_has_no_second_effect(platform: Platform) -> None:
    h = platform.headers()
    inv, pay_client = platform.clients["invoice"], platform.clients["payment"]
    invoice = await create_invoice(inv, h)
    await finalize(inv, h, invoice["id"])
    await wait_payable(pay_client, h, invoice["id"])
    await pay(pay_client, h, invoice["id"], "50.00")
    await wait_status(inv, h, invoice["id"], "partially_paid")

    ctx = platform.apps["payment"].state.ctx
    async with ctx.sessions() as session:
        rows = (
            await session.exec(
                select(OutboxMessage).where(OutboxMessage.event_type == PAYMENT_RECEIVED)
            )
        ).all()
    assert len(rows) == 1
    from billing_common.events import CloudEvent

    for _ in range(3):  # at-least-once delivery: the same event again, three times
        await platform.embedded.bus.publish(CloudEvent.from_json(rows[0].payload))
    await platform.settle()
    after = await get_invoice(inv, h, invoice["id"])
    assert Decimal(after["amount_paid"]) == Decimal("50.00")
    assert after["status"] == "partially_paid"


async def test_identical_concurrent_payments_charge_once(platform: Platform) -> None:
    import asyncio

    h = platform.headers()
    inv, pay_client = platform.clients["invoice"], platform.clients["payment"]
    invoice = await create_invoice(inv, h)
    await finalize(inv, h, invoice["id"])
    await wait_payable(pay_client, h, invoice["id"])
    same_key = key()
    answers = await asyncio.gather(
        *(pay(pay_client, h, invoice["id"], "20.00", idempotency_key=same_key) for _ in range(8))
    )
    ids = {a.json()["id"] for a in answers if a.status_code in (200, 201)}
    assert len(ids) == 1
    await platform.settle()
    after = await get_invoice(inv, h, invoice["id"])
    assert Decimal(after["amount_paid"]) == Decimal("20.00")


async def test_tenants_never_see_each_other(platform: Platform) -> None:
    inv = platform.clients["invoice"]
    invoice = await create_invoice(inv, platform.headers("demo"))
    other = await inv.get(f"/v1/invoices/{invoice['id']}", headers=platform.headers("other"))
    assert other.status_code == 404
    assert ORDER["currency"] == invoice["currency"]


def _signed(secret: str, body: bytes) -> dict[str, str]:
    """The documented scheme, written independently: HMAC-SHA256 over "<t>.<raw body>"."""
    import hashlib
    import hmac
    import time

    timestamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Billing-Signature": f"t={timestamp},v1={mac}", "content-type": "application/json"}


async def test_async_payment_settles_by_webhook_and_a_duplicate_has_no_effect(
    platform: Platform,
) -> None:
    import json

    from payment_service.bootstrap import DEV_SANDBOX_WEBHOOK_SECRET

    h = platform.headers()
    inv, pay_client = platform.clients["invoice"], platform.clients["payment"]
    invoice = await create_invoice(inv, h)
    await finalize(inv, h, invoice["id"])
    await wait_payable(pay_client, h, invoice["id"])
    pending = (await pay(pay_client, h, invoice["id"], "30.00", token="tok_async")).json()
    assert pending["status"] == "pending"

    import time

    webhook = {
        "id": "evt_e2e_1",
        "type": "payment.succeeded",
        "created": int(time.time()),
        "data": {"gateway_reference": pending["gateway_reference"]},
    }
    body = json.dumps(webhook).encode()
    first = await pay_client.post(
        "/v1/webhooks/sandbox", content=body, headers=_signed(DEV_SANDBOX_WEBHOOK_SECRET, body)
    )
    assert first.status_code == 200, first.text
    await wait_status(inv, h, invoice["id"], "partially_paid")
    again = await pay_client.post(
        "/v1/webhooks/sandbox", content=body, headers=_signed(DEV_SANDBOX_WEBHOOK_SECRET, body)
    )
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] is True
    forged = await pay_client.post(
        "/v1/webhooks/sandbox", content=body, headers=_signed("wrong-secret", body)
    )
    assert forged.status_code in (400, 401)
    await platform.settle()
    after = await get_invoice(inv, h, invoice["id"])
    assert Decimal(after["amount_paid"]) == Decimal("30.00")
