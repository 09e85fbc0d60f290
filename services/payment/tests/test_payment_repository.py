"""Repositories and the unit of work on SQLite and on the real PostgreSQL (`database_url`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from billing_common.db import create_engine, session_factory
from billing_common.event_schemas import PAYMENT_RECEIVED
from billing_common.events import CloudEvent
from billing_common.money import Money
from billing_common.outbox import OutboxRelay
from billing_common.uniqueness import UniqueViolation
from payment_service.adapters.stalled_attempts import SqlStalledAttempts
from payment_service.adapters.unit_of_work import SqlPaymentUnitOfWork
from payment_service.domain.model import (
    InvoiceState,
    PayableInvoice,
    Payment,
    PaymentStatus,
    RefundStatus,
)
from payment_service.service_layer.payments import emit_received
from payment_service.service_layer.ports import IdempotencyRecord, PaymentLocation

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
UowFactory = Callable[[], SqlPaymentUnitOfWork]


@pytest.fixture
async def uow(migrated_database_url: str) -> AsyncIterator[UowFactory]:
    engine = create_engine(migrated_database_url)
    sessions = session_factory(engine)
    try:
        yield lambda: SqlPaymentUnitOfWork(sessions)
    finally:
        await engine.dispose()


def payment(
    pid: str, amount: str = "10.10", invoice_id: str = "inv-1", at: datetime = NOW
) -> Payment:
    return Payment.start(
        payment_id=pid,
        invoice_id=invoice_id,
        customer_id="c-1",
        amount=Money.of(amount, "EUR"),
        gateway="sandbox",
        payment_method="tok_visa",
        idempotency_key=f"key-{pid}",
        now=at,
    )


async def test_invoice_roundtrip_keeps_decimals_exact(uow: UowFactory) -> None:
    invoice = PayableInvoice.created(
        invoice_id="inv-1",
        customer_id="c-1",
        currency="EUR",
        total=Decimal("0.30"),
        amount_due=Decimal("0.30"),
        now=NOW,
    )
    async with uow() as u:
        await u.payments("acme").save_invoice(invoice)
        await u.commit()
    async with uow() as u:
        loaded = await u.payments("acme").get_invoice("inv-1", for_update=True)
        assert loaded is not None
        assert loaded.amount_due == Decimal("0.30")
        assert loaded.state is InvoiceState.DRAFT
        assert loaded.created_at == NOW
        loaded.finalize(
            number="INV-7",
            customer_id="c-1",
            currency="EUR",
            total=Decimal("0.30"),
            amount_due=Decimal("0.10") + Decimal("0.20"),
            now=NOW + timedelta(minutes=1),
        )
        await u.payments("acme").save_invoice(loaded)
        await u.commit()
    async with uow() as u:
        again = await u.payments("acme").get_invoice("inv-1")
        assert again is not None and again.state is InvoiceState.ISSUED and again.number == "INV-7"
        assert again.amount_due_money == Money.of("0.30", "EUR")
        assert await u.payments("other").get_invoice("inv-1") is None


async def test_payment_with_refunds_and_history_roundtrip(uow: UowFactory) -> None:
    p = payment("p-1", "25.00")
    p.begin_attempt(NOW)
    async with uow() as u:
        await u.payments("acme").add(p)
        await u.commit()
    async with uow() as u:
        repo = u.payments("acme")
        loaded = await repo.get("p-1", for_update=True)
        assert loaded is not None
        assert loaded.attempts == 1 and loaded.lease_until is not None
        loaded.succeed("sbx_1", NOW, "charged")
        refund = loaded.request_refund(
            refund_id="r-1", amount=Money.of("5.00", "EUR"), idempotency_key="rk", now=NOW
        )
        refund.begin_attempt(NOW)
        await repo.save(loaded)
        await u.commit()
    async with uow() as u:
        repo = u.payments("acme")
        loaded = await repo.get("p-1", for_update=True)
        assert loaded is not None
        assert loaded.refunds[0].status is RefundStatus.PENDING
        assert loaded.refundable == Money.of("20.00", "EUR")
        loaded.complete_refund("r-1", "sbx_re_1", NOW)
        await repo.save(loaded)
        await u.commit()
    async with uow() as u:
        final = await u.payments("acme").get("p-1")
        assert final is not None
        assert final.status is PaymentStatus.PARTIALLY_REFUNDED
        assert final.refunded_amount == Money.of("5.00", "EUR")
        assert final.gateway_reference == "sbx_1"
        assert [(c.from_status, c.to_status) for c in final.history] == [
            (None, PaymentStatus.PENDING),
            (PaymentStatus.PENDING, PaymentStatus.SUCCEEDED),
            (PaymentStatus.SUCCEEDED, PaymentStatus.PARTIALLY_REFUNDED),
        ]
        assert final.history[-1].amount == Decimal("5.00")
        assert final.lease_until is None
        assert await u.payments("other").get("p-1") is None


async def test_idempotency_key_is_unique_per_tenant(uow: UowFactory) -> None:
    record = IdempotencyRecord("same-key", "payment", "h" * 64, "p-1", NOW)
    async with uow() as u:
        u.payments("acme").add_idempotency_record(record)
        u.payments("globex").add_idempotency_record(record)  # another tenant: fine
        await u.commit()
    async with uow() as u:
        u.payments("acme").add_idempotency_record(record)
        with pytest.raises(UniqueViolation):
            await u.commit()
    async with uow() as u:
        found = await u.payments("acme").idempotency_record("same-key")
        assert found is not None and found.resource_id == "p-1"
        assert await u.payments("initech").idempotency_record("same-key") is None


async def test_page_filters_and_counts_within_the_tenant(uow: UowFactory) -> None:
    async with uow() as u:
        repo = u.payments("acme")
        for index in range(5):
            p = payment(f"p-{index}", invoice_id="inv-a" if index < 3 else "inv-b",
                        at=NOW + timedelta(seconds=index))  # fmt: skip
            if index % 2 == 0:
                p.succeed(f"ref-{index}", NOW, "ok")
            await repo.add(p)
        await u.payments("globex").add(payment("other-tenant", invoice_id="inv-a"))
        await u.commit()
    async with uow() as u:
        repo = u.payments("acme")
        items, total = await repo.page(invoice_id=None, status=None, limit=2, offset=0)
        assert total == 5 and [p.id for p in items] == ["p-4", "p-3"]
        items, total = await repo.page(invoice_id=None, status=None, limit=2, offset=4)
        assert [p.id for p in items] == ["p-0"]
        items, total = await repo.page(
            invoice_id="inv-a", status=PaymentStatus.SUCCEEDED, limit=10, offset=0
        )
        assert total == 2 and {p.id for p in items} == {"p-0", "p-2"}
        assert len(items[0].history) == 2
        assert [p.id for p in await repo.for_invoice("inv-a")] == ["p-0", "p-1", "p-2"]


async def test_webhook_lookups_and_event_ids(uow: UowFactory) -> None:
    p = payment("p-1")
    p.succeed("sbx_ref", NOW, "ok")
    p.request_refund(refund_id="r-1", amount=None, idempotency_key="rk", now=NOW)
    p.refund_awaits_confirmation("r-1", "sbx_re", NOW)
    async with uow() as u:
        repo = u.payments("acme")
        await repo.add(p)
        await u.commit()
    async with uow() as u:
        repo = u.payments("acme")
        loaded = await repo.get("p-1")
        assert loaded is not None
        loaded.refund_awaits_confirmation("r-1", "sbx_re", NOW)
        await repo.save(loaded)
        await u.commit()
    async with uow() as u:
        found = await u.webhooks.payment_by_reference("sandbox", "sbx_ref")
        assert found is not None and (found.tenant, found.payment_id) == ("acme", "p-1")
        assert await u.webhooks.payment_by_reference("stripe", "sbx_ref") is None
        refund = await u.webhooks.refund_by_reference("sandbox", "sbx_re")
        assert refund is not None and refund.refund_id == "r-1"
        assert await u.webhooks.payment_of_tenant("sandbox", "globex", "p-1") is None
        assert await u.webhooks.payment_of_tenant("sandbox", "acme", "p-1") is not None
        assert not await u.webhooks.seen("sandbox", "evt_1")
        u.webhooks.record(
            gateway="sandbox",
            event_id="evt_1",
            event_type="payment.succeeded",
            outcome="applied",
            received_at=NOW,
            location=found,
        )
        await u.commit()
    async with uow() as u:
        assert await u.webhooks.seen("sandbox", "evt_1")
        u.webhooks.record(
            gateway="sandbox",
            event_id="evt_1",
            event_type="payment.succeeded",
            outcome="applied",
            received_at=NOW,
            location=None,
        )
        with pytest.raises(UniqueViolation):
            await u.commit()


async def test_one_gateway_reference_names_one_payment(uow: UowFactory) -> None:
    first, second = payment("p-1"), payment("p-2")
    first.succeed("dup", NOW, "ok")
    second.succeed("dup", NOW, "ok")
    async with uow() as u:
        await u.payments("acme").add(first)
        await u.payments("globex").add(second)
        with pytest.raises(UniqueViolation):
            await u.commit()


async def test_the_recovery_sweep_finds_only_attempts_whose_lease_ran_out(
    migrated_database_url: str,
) -> None:
    engine = create_engine(migrated_database_url)
    sessions = session_factory(engine)
    lease = timedelta(seconds=20)
    try:
        in_flight, stalled, settled, awaiting = (payment(f"p-{n}") for n in range(4))
        in_flight.begin_attempt(NOW + timedelta(seconds=5), lease)
        stalled.begin_attempt(NOW, lease)
        settled.begin_attempt(NOW, lease)
        settled.succeed("sbx_2", NOW, "charged")
        awaiting.begin_attempt(NOW, lease)
        awaiting.await_confirmation("sbx_3", NOW)
        paid = payment("p-9", "30.00")
        paid.succeed("sbx_9", NOW, "charged")
        paid.request_refund(
            refund_id="r-1", amount=Money.of("5.00", "EUR"), idempotency_key="rk", now=NOW
        ).begin_attempt(NOW, lease)
        async with SqlPaymentUnitOfWork(sessions) as u:
            for p in (in_flight, stalled, settled, awaiting, paid):
                await u.payments("acme" if p is not paid else "globex").add(p)
            await u.commit()

        sweep = SqlStalledAttempts(sessions)
        at = NOW + lease + timedelta(seconds=1)  # past every lease but in_flight's
        assert await sweep.payments(at, 10) == [PaymentLocation("acme", "p-1")]
        assert await sweep.refunds(at, 10) == [PaymentLocation("globex", "p-9", "r-1")]
        assert await sweep.payments(NOW + lease - timedelta(seconds=1), 10) == []
    finally:
        await engine.dispose()


async def test_a_commit_that_emitted_lets_the_relay_start_its_pass_first(
    migrated_database_url: str,
) -> None:
    # The relay used to start only once the request that committed had answered (its
    # serialising and logging before the loop came back to the woken relay).
    engine = create_engine(migrated_database_url)
    sessions = session_factory(engine)
    published: list[CloudEvent] = []

    class Bus:
        async def publish(self, event: CloudEvent) -> None:
            published.append(event)

    relay = OutboxRelay(engine, Bus(), poll_seconds=30)  # type: ignore[arg-type]
    await relay.start()
    try:
        await asyncio.sleep(0.05)  # the relay's first pass (nothing to publish) is over
        async with SqlPaymentUnitOfWork(sessions, relay) as unit:
            paid = payment("pay-relay")
            await unit.payments("t1").add(paid)
            emit_received(unit, "t1", paid)
            await unit.commit()
            assert relay.passing  # woken and under way before the commit returned
        async with asyncio.timeout(5):
            while len(published) < 1 or relay.passing:
                await asyncio.sleep(0.01)
        assert [event.type for event in published] == [PAYMENT_RECEIVED]
    finally:
        await relay.stop()
        await engine.dispose()
