"""Nothing is charged that is not owed, across the real invoice and payment services (embedded
runtime): status changes reach the payment service, a payment racing a status change is
refunded by itself, and a payment sent right after finalizing does not wait for the event.

"Holding the event" is deterministic: the invoice service's outbox relay is stopped, so its
events stay in its outbox (committed, not yet delivered) until the relay is started again."""

from __future__ import annotations

from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from sqlmodel import select

from billing_common.event_schemas import PAYMENT_REFUNDED
from billing_common.events import CloudEvent
from billing_common.outbox import OutboxMessage
from billing_launcher.seed_flows import create_invoice, finalize, get_invoice, pay, wait_payable
from tests.conftest import Platform


@asynccontextmanager
async def invoice_events_held(platform: Platform) -> Any:
    relay = platform.apps["invoice"].state.ctx.relay
    await relay.stop()
    try:
        yield
    finally:
        await relay.start()


async def finalized_and_known(platform: Platform, h: dict[str, str]) -> dict[str, Any]:
    invoice = await create_invoice(platform.clients["invoice"], h)
    await finalize(platform.clients["invoice"], h, invoice["id"])
    await wait_payable(platform.clients["payment"], h, invoice["id"])
    return invoice


async def payments_of(platform: Platform, h: dict[str, str], invoice_id: str) -> list[Any]:
    r = await platform.clients["payment"].get(
        "/v1/payments", params={"invoice_id": invoice_id}, headers=h
    )
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


async def test_an_uncollectible_invoice_is_never_charged(platform: Platform) -> None:
    h = platform.headers()
    invoice = await finalized_and_known(platform, h)
    written_off = await platform.clients["invoice"].post(
        f"/v1/invoices/{invoice['id']}/mark-uncollectible", json={"reason": "gone"}, headers=h
    )
    assert written_off.status_code == 200, written_off.text
    await platform.settle()

    refused = await pay(platform.clients["payment"], h, invoice["id"], None)
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/invoice-not-payable")
    assert problem["invoice_status"] == "uncollectible"
    assert await payments_of(platform, h, invoice["id"]) == []
    view = await platform.clients["payment"].get(f"/v1/payable-invoices/{invoice['id']}", headers=h)
    assert view.json()["status"] == "uncollectible" and view.json()["payable"] is False


async def test_a_payment_racing_a_write_off_is_refunded_by_itself(platform: Platform) -> None:
    h = platform.headers()
    inv, pay_client = platform.clients["invoice"], platform.clients["payment"]
    invoice = await finalized_and_known(platform, h)
    async with invoice_events_held(platform):
        written_off = await inv.post(f"/v1/invoices/{invoice['id']}/mark-uncollectible", headers=h)
        assert written_off.status_code == 200
        # The payment service has not heard of it yet: it charges.
        raced = await pay(pay_client, h, invoice["id"], None)
        assert raced.status_code == 201, raced.text
        assert raced.json()["status"] == "succeeded"
        await platform.embedded.bus.wait_idle()  # the invoice saw the payment, refused it
    await platform.settle()

    payment = (await pay_client.get(f"/v1/payments/{raced.json()['id']}", headers=h)).json()
    assert payment["status"] == "refunded"
    assert [Decimal(r["amount"]) for r in payment["refunds"]] == [Decimal(payment["amount"])]
    assert payment["refunds"][0]["status"] == "succeeded"

    after = await get_invoice(inv, h, invoice["id"])
    assert after["status"] == "uncollectible"
    assert Decimal(after["amount_paid"]) == 0
    flags = [(p["kind"], p["applied"], p["flag"]) for p in after["payments"]]
    assert flags == [
        ("payment", False, "not_payable"),
        ("refund", False, "refund_of_unapplied_payment"),
    ]
    # The refund went out as an event like any other.
    published = [e.type for e in await outbox_types(platform)]
    assert PAYMENT_REFUNDED in published
    # And a further payment is refused: the write-off has arrived now.
    again = await pay(pay_client, h, invoice["id"], None)
    assert again.status_code == 409


async def outbox_types(platform: Platform) -> list[Any]:
    async with platform.apps["payment"].state.ctx.sessions() as session:
        rows = (await session.exec(select(OutboxMessage))).all()
    return [CloudEvent.from_json(row.payload) for row in rows]


async def test_paying_right_after_finalizing_does_not_wait_for_the_event(
    platform: Platform,
) -> None:
    h = platform.headers()
    inv, pay_client = platform.clients["invoice"], platform.clients["payment"]
    seen_as_draft = await create_invoice(inv, h)
    await platform.settle()  # the payment service knows it as a draft
    async with invoice_events_held(platform):
        never_seen = await create_invoice(inv, h)  # the payment service never heard of it
        for invoice in (seen_as_draft, never_seen):
            await finalize(inv, h, invoice["id"])
            paid = await pay(pay_client, h, invoice["id"], None)
            assert paid.status_code == 201, paid.text
            assert paid.json()["status"] == "succeeded"
            assert Decimal(paid.json()["amount"]) == Decimal(invoice["total"])
        # An invoice that is still a draft is refused (asked, and it is a draft).
        draft = await create_invoice(inv, h)
        refused = await pay(pay_client, h, draft["id"], None)
        assert refused.status_code == 409 and refused.json()["invoice_status"] == "draft"
    await platform.settle()
    for invoice in (seen_as_draft, never_seen):
        assert (await get_invoice(inv, h, invoice["id"]))["status"] == "paid"
