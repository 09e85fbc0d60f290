"""A payment event's change of an invoice as the unit of work writes it on PostgreSQL
(`apply_event`): one read and one guarded write, nothing locked in between. What another
writer commits in between must make it read and decide again; another delivery of the same
event claiming it in between must leave it without effect. (The events' effects on both
databases: test_invoice_events.)"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from billing_common.event_schemas import INVOICE_PAID, INVOICE_STATUS_CHANGED
from billing_common.events import CloudEvent
from invoice_service.adapters import postgres_invoice_events
from invoice_service.domain.model import Invoice
from invoice_service.service_layer import payments

from .test_invoice_events import fetch, issued_invoice, received

pytestmark = pytest.mark.parametrize("migrated_database_url", ["postgresql"], indirect=True)


def _commit_after_the_first_read(
    monkeypatch: pytest.MonkeyPatch, deps: Any, *events: CloudEvent
) -> None:
    """Right after the next read, `events` are delivered and committed by units of work of
    their own, before that read's write."""
    pending = list(events)
    read = postgres_invoice_events.read

    async def read_then_commit(*args: Any, **kwargs: Any) -> Any:
        found = await read(*args, **kwargs)
        while pending:
            await payments.on_payment_received(pending.pop(0), deps)
        return found

    monkeypatch.setattr(postgres_invoice_events, "read", read_then_commit)


def _paying(event: CloudEvent, decided_on: list[Decimal]) -> Any:
    def change(invoice: Invoice | None) -> None:
        assert invoice is not None
        decided_on.append(invoice.amount_paid)
        invoice.apply_payment(
            payment_id=event.data["payment_id"],
            amount=Decimal(event.data["amount"]),
            currency="EUR",
            at=event.time,
            event_id=event.id,
        )

    return change


async def test_a_change_committed_between_read_and_write_is_read_and_decided_again(
    api_any_db: Any, make_body: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = api_any_db
    deps = api.app.state.deps
    invoice = await issued_invoice(api, make_body)
    first, second = received(invoice["id"], "19.00"), received(invoice["id"], "100.00")
    decided_on: list[Decimal] = []
    _commit_after_the_first_read(monkeypatch, deps, first)
    async with deps.uow("acme") as uow:
        assert await uow.apply_event("invoice", second, invoice["id"], _paying(second, decided_on))
    assert decided_on == [Decimal("0.00"), Decimal("19.00")]
    state = await fetch(api, invoice["id"])
    assert (state["status"], state["amount_paid"]) == ("paid", "119.00")
    assert [p["event_id"] for p in state["payments"]] == [first.id, second.id]


async def test_a_delivery_that_claimed_the_event_meanwhile_leaves_the_write_without_effect(
    api_any_db: Any, make_body: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = api_any_db
    deps = api.app.state.deps
    published = api.record(INVOICE_PAID, INVOICE_STATUS_CHANGED)
    invoice = await issued_invoice(api, make_body)
    payment = received(invoice["id"], "119.00")
    decided_on: list[Decimal] = []
    _commit_after_the_first_read(monkeypatch, deps, payment)
    async with deps.uow("acme") as uow:
        applied = await uow.apply_event(
            "invoice", payment, invoice["id"], _paying(payment, decided_on)
        )
    assert applied is False
    state = await fetch(api, invoice["id"])
    assert (state["status"], state["amount_paid"]) == ("paid", "119.00")
    assert [p["event_id"] for p in state["payments"]] == [payment.id]
    await api.settle()
    # Paid once; its status change (after the finalization's) in the order emitted.
    types = [e.type for e in published]
    assert types.count(INVOICE_PAID) == 1
    assert types[-2:] == [INVOICE_PAID, INVOICE_STATUS_CHANGED]
