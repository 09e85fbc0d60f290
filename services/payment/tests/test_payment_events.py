"""Invoice events in through the in-process bus; payment events out through the outbox."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from sqlmodel import func, select

from billing_common.event_schemas import (
    INVOICE_CREATED,
    INVOICE_FINALIZED,
    INVOICE_VOIDED,
    PAYMENT_FAILED,
    PAYMENT_RECEIVED,
    PAYMENT_REFUNDED,
    InvoiceCreated,
)
from billing_common.events import CloudEvent, new_event
from payment_service.adapters.orm import PayableInvoiceRow
from payment_service.service_layer import invoice_events

from .conftest import Harness


async def payable_rows(h: Harness) -> int:
    async with h.app.state.ctx.sessions() as session:
        return int((await session.exec(select(func.count()).select_from(PayableInvoiceRow))).one())


async def view(h: Harness, invoice_id: str, tenant: str | None = None) -> dict[str, object]:
    response = await h.client.get(
        f"/v1/payable-invoices/{invoice_id}", headers=h.headers(tenant=tenant)
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_a_duplicate_event_gives_one_payable_row(harness: Harness) -> None:
    created = await harness.invoice_event(INVOICE_CREATED, "inv-1", amount_due="70.00")
    await harness.publish(created)  # redelivered: same event id
    await harness.publish(created)
    assert await payable_rows(harness) == 1
    draft = await view(harness, "inv-1")
    assert draft["state"] == "draft" and draft["payable"] is False
    assert draft["amount_due"] == "70.00"

    finalized = await harness.invoice_event(INVOICE_FINALIZED, "inv-1", amount_due="70.00")
    await harness.publish(finalized)
    assert await payable_rows(harness) == 1
    opened = await view(harness, "inv-1")
    assert opened["state"] == "open" and opened["outstanding"] == "70.00"
    # The created event arriving again (a new delivery of an old event) does not reopen a draft.
    await harness.publish(created)
    assert (await view(harness, "inv-1"))["state"] == "open"
    assert harness.platform.bus.dead_letters == []


async def test_finalized_without_created_makes_the_invoice_payable(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    await h.invoice_event(INVOICE_FINALIZED, "inv-2", amount_due="12.34", currency="USD")
    body = await view(h, "inv-2")
    assert body["state"] == "open" and body["currency"] == "USD"
    assert body["number"] == "INV-inv-2"
    paid = await h.pay("inv-2")
    assert paid.status_code == 201 and paid.json()["amount"] == "12.34"


async def test_void_stops_payments_even_when_it_arrives_first(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    await h.invoice_event(INVOICE_VOIDED, "inv-3")
    tombstone = await view(h, "inv-3")
    assert tombstone["state"] == "void" and tombstone["amount_due"] is None
    await h.invoice_event(INVOICE_CREATED, "inv-3")
    await h.invoice_event(INVOICE_FINALIZED, "inv-3")
    late = await view(h, "inv-3")
    assert late["state"] == "void" and late["amount_due"] == "100.00" and late["payable"] is False
    response = await h.pay("inv-3")
    assert response.status_code == 409 and response.json()["invoice_state"] == "void"


async def test_a_created_event_after_a_tombstone_fills_in_its_details(harness: Harness) -> None:
    # On PostgreSQL the one-statement write (new invoices only) must leave this event, its
    # claim included, to the general path.
    await harness.invoice_event(INVOICE_VOIDED, "inv-v")
    created = await harness.invoice_event(INVOICE_CREATED, "inv-v", amount_due="42.00")
    late = await view(harness, "inv-v")
    assert late["state"] == "void" and late["amount_due"] == "42.00"
    await harness.publish(created)  # redelivered
    assert await payable_rows(harness) == 1
    assert harness.platform.bus.dead_letters == []


async def test_one_invoice_id_in_two_tenants_gives_two_rows(harness: Harness) -> None:
    await harness.invoice_event(INVOICE_CREATED, "inv-t", amount_due="5.00", tenant="globex")
    await harness.invoice_event(INVOICE_CREATED, "inv-t", amount_due="7.00")
    assert await payable_rows(harness) == 2
    assert (await view(harness, "inv-t", tenant="globex"))["amount_due"] == "5.00"
    assert (await view(harness, "inv-t"))["amount_due"] == "7.00"
    assert harness.platform.bus.dead_letters == []


async def test_concurrent_deliveries_of_one_created_event_write_once(harness: Harness) -> None:
    event = new_event(
        source="/billing/invoice",
        event_type=INVOICE_CREATED,
        data=InvoiceCreated(
            invoice_id="inv-c",
            customer_id="cust-1",
            currency="EUR",
            total=Decimal("9.00"),
            amount_due=Decimal("9.00"),
            status="draft",
        ),
        subject="inv-c",
        tenant=harness.tenant,
    )
    deps = harness.app.state.deps
    await asyncio.gather(*(invoice_events.on_invoice_created(event, deps) for _ in range(4)))
    assert await payable_rows(harness) == 1
    assert (await view(harness, "inv-c"))["amount_due"] == "9.00"


async def test_events_are_applied_to_their_own_tenant(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    await h.open_invoice("inv-4", tenant="globex", amount_due="5.00")
    other = await h.client.get("/v1/payable-invoices/inv-4", headers=h.headers())
    assert other.status_code == 404
    assert (await view(h, "inv-4", tenant="globex"))["amount_due"] == "5.00"


async def test_events_that_can_never_apply_are_dead_lettered(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    no_tenant = new_event(
        source="/billing/invoice",
        event_type=INVOICE_CREATED,
        data=InvoiceCreated(
            invoice_id="inv-5",
            customer_id="c",
            currency="EUR",
            total=Decimal(1),
            amount_due=Decimal(1),
            status="draft",
        ),
    )
    bad_currency = new_event(
        source="/billing/invoice",
        event_type=INVOICE_CREATED,
        data=InvoiceCreated(
            invoice_id="inv-6",
            customer_id="c",
            currency="XYZ",
            total=Decimal(1),
            amount_due=Decimal(1),
            status="draft",
        ),
        tenant="acme",
    )
    bad_schema = CloudEvent(
        source="/billing/invoice", type=INVOICE_FINALIZED, data={"invoice_id": 1}, tenant="acme"
    )
    for event in (no_tenant, bad_currency, bad_schema):
        await h.publish(event)
    assert len(h.platform.bus.dead_letters) == 3
    assert await payable_rows(h) == 0


async def test_payment_events_are_relayed_to_the_bus(sqlite_harness: Harness) -> None:
    h = sqlite_harness
    received: list[CloudEvent] = []

    async def record(event: CloudEvent) -> None:
        received.append(event)

    for event_type in (PAYMENT_RECEIVED, PAYMENT_FAILED, PAYMENT_REFUNDED):
        h.platform.bus.subscribe("invoice-test", event_type, record)
    invoice = await h.open_invoice(amount_due="20.00")
    await h.pay(invoice, token="tok_declined")
    paid = (await h.pay(invoice)).json()
    await h.refund(paid["id"], amount="5.00")
    relay = h.app.state.ctx.relay
    while await relay.publish_pending():
        pass
    await h.platform.bus.wait_idle()
    assert [e.type for e in received] == [PAYMENT_FAILED, PAYMENT_RECEIVED, PAYMENT_REFUNDED]
    assert all(e.tenant == "acme" and e.source == "/billing/payment" for e in received)
    assert received[1].data["amount"] == "20.00"  # decimal strings on the wire
    assert received[2].data["amount"] == "5.00" and received[2].subject == paid["id"]
    assert await relay.pending_count() == 0
