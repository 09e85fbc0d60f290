"""Repository, unit of work and numbering tests, each on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import select

from billing_common.cursors import decode_timestamp_and_id
from billing_common.db import DatabaseUnavailable, create_engine, session_factory
from billing_common.events import CloudEvent
from billing_common.outbox import OutboxMessage
from billing_common.testing import postgres_shutting_down
from billing_common.uniqueness import UniqueViolation
from invoice_service.adapters.unit_of_work import uow_factory
from invoice_service.domain.errors import ConcurrentModification, InvalidTransition
from invoice_service.domain.model import (
    AppliedDiscount,
    Customer,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    PaymentFlag,
    PriceMode,
    TaxComponent,
    TaxStatus,
)
from invoice_service.service_layer import events, queries, status_changes
from invoice_service.service_layer.dependencies import Dependencies
from invoice_service.service_layer.ports import (
    InvoiceQuery,
    PendingCreation,
    ReceivedEvent,
    UnitOfWorkFactory,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
D = Decimal


class NoPeers:
    """Finalization and events never call peers; any call is a test failure."""

    async def calculate(self, **_: Any) -> Any:
        raise AssertionError("tax must not be called")

    async def quote(self, **_: Any) -> Any:
        raise AssertionError("discount must not be called")

    async def redeem(self, **_: Any) -> Any:
        raise AssertionError("discount must not be called")


@pytest.fixture
async def uow(migrated_database_url: str) -> AsyncIterator[UnitOfWorkFactory]:
    engine = create_engine(migrated_database_url, pool_size=25)
    try:
        yield uow_factory(session_factory(engine), None)
    finally:
        await engine.dispose()


def deps(uow: UnitOfWorkFactory) -> Dependencies:
    return Dependencies(uow=uow, tax=NoPeers(), discounts=NoPeers(), clock=lambda: T0)


def make_invoice(
    invoice_id: str,
    tenant: str = "acme",
    *,
    customer_id: str = "c-1",
    created_at: datetime = T0,
    series: str = "INV",
) -> Invoice:
    lines = [
        InvoiceLine(
            position=1,
            description="Metered API calls <b>",
            quantity=D("1500.5"),
            unit_price=D("0.000123"),
            category="standard",
            subtotal=D("0.18"),
            discount=D("0.01"),
            net=D("0.17"),
            tax=D("0.03"),
            total=D("0.20"),
            taxes=(TaxComponent("rule-1", "DE VAT standard", D("0.19"), D("0.03")),),
        ),
        InvoiceLine(
            position=2,
            description="Book",
            quantity=D("1"),
            unit_price=D("33.33"),
            category="reduced",
            subtotal=D("33.33"),
            discount=D("3.33"),
            net=D("30.00"),
            tax=D("2.10"),
            total=D("32.10"),
            taxes=(
                TaxComponent("rule-2", "Federal", D("0.05"), D("1.50")),
                TaxComponent(None, "Regional", D("0.02"), D("0.60"), compound=True),
            ),
            exemption=None,
        ),
    ]
    return Invoice.create(
        id=invoice_id,
        tenant_id=tenant,
        customer=Customer(
            "c-x" if customer_id is None else customer_id,
            "premium",
            "CA",
            "QC",
            TaxStatus.STANDARD,
            None,
            "Acme",
            "a@example.com",
            "1 Road\nTown",
        ),
        currency="EUR",
        price_mode=PriceMode.EXCLUSIVE,
        series=series,
        lines=lines,
        discounts=[AppliedDiscount("coupon", "Welcome", D("3.34"), "WELCOME")],
        due_days=30,
        at=created_at,
        actor="user:alice",
        tax_calculation_id="tax-1",
        discount_redemption_id="red-1",
        memo="thanks",
    )


async def add(uow: UnitOfWorkFactory, invoice: Invoice, key: str | None = None) -> None:
    async with uow(invoice.tenant_id) as unit:
        await unit.invoices.add(invoice, idempotency_key=key or invoice.id, request_hash="h" * 64)
        await unit.commit()


async def test_round_trip_keeps_every_value_exactly(uow: UnitOfWorkFactory) -> None:
    original = make_invoice("inv-1")
    await add(uow, original, key="key-1")
    async with uow("acme") as unit:
        loaded = await unit.invoices.get("inv-1")
        stored = await unit.invoices.find_by_idempotency_key("key-1")
    assert loaded is not None and stored is not None
    assert stored.request_hash == "h" * 64 and stored.invoice.id == "inv-1"
    assert loaded.lines == original.lines  # Decimals exact: 0.000123, 1500.5
    assert loaded.lines[0].unit_price == D("0.000123")
    assert loaded.discounts == original.discounts
    assert loaded.customer == original.customer
    assert loaded.history == original.history
    assert loaded.created_at == T0 and loaded.created_at.tzinfo is not None
    assert loaded.totals == original.totals
    assert (loaded.status, loaded.version, loaded.memo) == (InvoiceStatus.DRAFT, 1, "thanks")
    assert str(loaded.amount_paid) == "0.00"


async def test_save_appends_history_and_payments(uow: UnitOfWorkFactory) -> None:
    await add(uow, make_invoice("inv-1"))
    async with uow("acme") as unit:
        invoice = await unit.invoices.get("inv-1", for_update=True)
        assert invoice is not None
        invoice.finalize(number="INV-000001", sequence=1, at=T0 + timedelta(minutes=1))
        invoice.apply_payment(
            payment_id="p1",
            amount=D("10.00"),
            currency="EUR",
            at=T0 + timedelta(minutes=2),
            event_id="ev-1",
        )
        invoice.apply_payment(
            payment_id="p2",
            amount=D("1.00"),
            currency="USD",
            at=T0 + timedelta(minutes=3),
            event_id="ev-2",
        )
        await unit.invoices.save(invoice)
        await unit.commit()
    async with uow("acme") as unit:
        again = await unit.invoices.get("inv-1")
        assert again is not None
        again.apply_payment(payment_id="p3", amount=D("22.30"), currency="EUR", at=T0)
        await unit.invoices.save(again)
        await unit.commit()
    async with uow("acme") as unit:
        final = await unit.invoices.get("inv-1")
    assert final is not None
    assert final.status is InvoiceStatus.PAID and final.amount_paid == D("32.30")
    assert [h.to_status for h in final.history] == [
        InvoiceStatus.DRAFT,
        InvoiceStatus.ISSUED,
        InvoiceStatus.PARTIALLY_PAID,
        InvoiceStatus.PAID,
    ]
    assert [p.payment_id for p in final.payments] == ["p1", "p2", "p3"]
    assert final.payments[1].flag is PaymentFlag.CURRENCY_MISMATCH
    assert final.number == "INV-000001" and final.due_date == (T0 + timedelta(days=30)).date()
    assert final.version == again.version


async def test_save_detects_a_concurrent_writer(uow: UnitOfWorkFactory) -> None:
    await add(uow, make_invoice("inv-1"))
    async with uow("acme") as unit:
        invoice = await unit.invoices.get("inv-1")
        assert invoice is not None
        # Another transaction saved the invoice after we read it.
        await unit.session.exec(text("UPDATE invoice_invoices SET version = version + 1"))  # type: ignore[call-overload]
        invoice.void(at=T0)
        with pytest.raises(ConcurrentModification):
            await unit.invoices.save(invoice)


async def test_tenants_never_see_each_other(uow: UnitOfWorkFactory) -> None:
    await add(uow, make_invoice("inv-a", "acme"), key="same-key")
    await add(uow, make_invoice("inv-b", "globex"), key="same-key")  # keys are per tenant
    async with uow("globex") as unit:
        assert await unit.invoices.get("inv-a") is None
        stored = await unit.invoices.find_by_idempotency_key("same-key")
        assert stored is not None and stored.invoice.id == "inv-b"
        assert [s.id for s in await unit.invoices.list(InvoiceQuery())] == ["inv-b"]
        foreign = make_invoice("inv-c", "acme")
        with pytest.raises(ValueError, match="another tenant"):
            await unit.invoices.add(foreign, idempotency_key="k", request_hash="h")


async def test_idempotency_key_is_unique_per_tenant(uow: UnitOfWorkFactory) -> None:
    await add(uow, make_invoice("inv-1"), key="k")
    with pytest.raises(UniqueViolation):
        await add(uow, make_invoice("inv-2"), key="k")
    async with uow("acme") as unit:
        assert await unit.invoices.get("inv-2") is None


async def test_list_filters_and_cursor_pagination(uow: UnitOfWorkFactory) -> None:
    for n in range(7):
        await add(
            uow,
            make_invoice(
                f"inv-{n}",
                customer_id="c-even" if n % 2 == 0 else "c-odd",
                created_at=T0 + timedelta(hours=n),
            ),
        )
    # Two invoices created in the same instant: the id breaks the tie.
    await add(uow, make_invoice("inv-7a", created_at=T0 + timedelta(hours=3)))
    for n in (1, 2):
        await status_changes.finalize_invoice("acme", f"inv-{n}", "user:x", deps(uow))

    seen: list[str] = []
    cursor = None
    while True:
        page = await queries.list_invoices(
            "acme",
            InvoiceQuery(limit=3, after=decode_timestamp_and_id(cursor) if cursor else None),
            deps(uow),
        )
        seen += [s.id for s in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ["inv-6", "inv-5", "inv-4", "inv-7a", "inv-3", "inv-2", "inv-1", "inv-0"]

    async def ids(**filters: Any) -> list[str]:
        page = await queries.list_invoices("acme", InvoiceQuery(**filters), deps(uow))
        return [s.id for s in page.items]

    assert await ids(status=InvoiceStatus.ISSUED) == ["inv-2", "inv-1"]
    assert await ids(customer_id="c-odd") == ["inv-5", "inv-3", "inv-1"]
    assert await ids(created_from=T0 + timedelta(hours=2), created_to=T0 + timedelta(hours=4)) == [
        "inv-7a",
        "inv-3",
        "inv-2",
    ]
    assert await ids(issued_from=T0, issued_to=T0 + timedelta(days=1)) == ["inv-2", "inv-1"]
    assert await ids(issued_from=T0 + timedelta(days=1)) == []
    summary = (await queries.list_invoices("acme", InvoiceQuery(limit=1), deps(uow))).items[0]
    assert (summary.total, summary.amount_due, summary.currency) == (D("32.30"), D("32.30"), "EUR")


async def test_received_events_by_reference(uow: UnitOfWorkFactory) -> None:
    async with uow("acme") as unit:
        for n, ref in enumerate(["inv-1", "inv-1", None]):
            await unit.received.add(
                ReceivedEvent(
                    f"ev-{n}",
                    "billing.tax.calculated.v1",
                    "/t",
                    ref,
                    None,
                    T0,
                    T0 + timedelta(seconds=n),
                    {"total_tax": "1.00"},
                )
            )
        await unit.commit()
    async with uow("acme") as unit:
        events = await unit.received.for_reference("inv-1")
    async with uow("globex") as unit:
        assert await unit.received.for_reference("inv-1") == []
    assert [e.event_id for e in events] == ["ev-0", "ev-1"]
    assert events[0].data == {"total_tax": "1.00"}


# ---- the writes of a creation and of a kept peer event ----------------------------------


async def _begin_pending(
    uow: UnitOfWorkFactory, invoice_id: str, *, releasing: bool = False
) -> None:
    async with uow("acme") as unit:
        pending = PendingCreation("acme", invoice_id, f"invoice:acme:{invoice_id}", T0)
        assert await unit.pending.begin(pending)
        if releasing:
            await unit.pending.put(replace(pending, releasing=True))
        await unit.commit()


async def _finish(uow: UnitOfWorkFactory, invoice: Invoice, key: str) -> bool:
    async with uow(invoice.tenant_id) as unit:
        return await unit.finish_creation(
            invoice,
            idempotency_key=key,
            request_hash="h" * 64,
            event=events.created(invoice),
            aggregate=events.aggregate(invoice),
        )


async def _outbox_events(uow: UnitOfWorkFactory) -> list[str]:
    async with uow("acme") as unit:
        session = unit.session  # type: ignore[attr-defined]
        return [row.aggregate for row in (await session.exec(select(OutboxMessage))).all()]


async def test_finish_creation_stores_every_value_ends_the_record_and_emits(
    uow: UnitOfWorkFactory,
) -> None:
    original = make_invoice("inv-1")
    await _begin_pending(uow, "inv-1")
    assert await _finish(uow, original, "key-1")
    async with uow("acme") as unit:
        loaded = await unit.invoices.get("inv-1")
        stored = await unit.invoices.find_by_idempotency_key("key-1")
        assert await unit.pending.get("inv-1") is None
    assert loaded is not None and stored is not None
    assert stored.request_hash == "h" * 64 and stored.invoice.id == "inv-1"
    assert loaded.lines == original.lines  # Decimals exact: 0.000123, 1500.5
    assert loaded.discounts == original.discounts
    assert loaded.customer == original.customer
    assert loaded.history == original.history
    assert loaded.created_at == T0 and loaded.created_at.tzinfo is not None
    assert loaded.totals == original.totals
    assert (loaded.status, loaded.version, loaded.memo) == (InvoiceStatus.DRAFT, 1, "thanks")
    assert await _outbox_events(uow) == ["invoice:inv-1"]


@pytest.mark.parametrize("record", ["gone", "releasing"])
async def test_finish_creation_writes_nothing_without_a_live_pending_record(
    uow: UnitOfWorkFactory, record: str
) -> None:
    if record == "releasing":
        await _begin_pending(uow, "inv-1", releasing=True)
    assert not await _finish(uow, make_invoice("inv-1"), "key-1")
    async with uow("acme") as unit:
        assert await unit.invoices.get("inv-1") is None
        assert await unit.invoices.find_by_idempotency_key("key-1") is None
        kept = await unit.pending.get("inv-1")
    assert (kept is not None and kept.releasing) if record == "releasing" else kept is None
    assert await _outbox_events(uow) == []


async def test_finish_creation_with_a_taken_key_raises_and_writes_nothing(
    uow: UnitOfWorkFactory,
) -> None:
    await add(uow, make_invoice("inv-1"), key="k")
    await _begin_pending(uow, "inv-2")
    with pytest.raises(UniqueViolation):
        await _finish(uow, make_invoice("inv-2"), "k")
    async with uow("acme") as unit:
        assert await unit.invoices.get("inv-2") is None
        assert await unit.pending.get("inv-2") is not None  # given back by the caller
    assert await _outbox_events(uow) == []


async def test_start_creation_begins_a_new_creation_or_answers_the_stored_invoice(
    uow: UnitOfWorkFactory,
) -> None:
    pending = PendingCreation("acme", "inv-2", "invoice:acme:key-2", T0)
    async with uow("acme") as unit:
        assert await unit.start_creation("key-2", pending) == (None, True)
        await unit.commit()
    async with uow("acme") as unit:
        assert await unit.pending.get("inv-2") == pending
    # An invoice stored with the key: it is the answer, and no pending record is written.
    await add(uow, make_invoice("inv-1"), key="key-1")
    async with uow("acme") as unit:
        stored, begun = await unit.start_creation(
            "key-1", PendingCreation("acme", "inv-1", "invoice:acme:key-1", T0)
        )
        await unit.commit()
    assert stored is not None and stored.invoice.id == "inv-1" and not begun
    async with uow("acme") as unit:
        assert await unit.pending.get("inv-1") is None
    # Another tenant's invoice with the same key is not this tenant's.
    async with uow("globex") as unit:
        other = PendingCreation("globex", "inv-9", "invoice:globex:key-1", T0)
        assert await unit.start_creation("key-1", other) == (None, True)


async def test_start_creation_takes_an_earlier_attempt_over_unless_it_is_being_released(
    uow: UnitOfWorkFactory,
) -> None:
    await _begin_pending(uow, "inv-1")
    later = PendingCreation("acme", "inv-1", "invoice:acme:inv-1", T0 + timedelta(minutes=5))
    async with uow("acme") as unit:
        assert await unit.start_creation("key-1", later) == (None, True)
        await unit.commit()
    async with uow("acme") as unit:
        assert await unit.pending.get("inv-1") == later
    await _begin_pending(uow, "inv-3", releasing=True)
    async with uow("acme") as unit:
        again = PendingCreation("acme", "inv-3", "invoice:acme:inv-3", T0 + timedelta(hours=1))
        assert await unit.start_creation("key-3", again) == (None, False)
        await unit.commit()
    async with uow("acme") as unit:
        kept = await unit.pending.get("inv-3")
    assert kept is not None and kept.releasing and kept.started_at == T0


def _peer_event(event_id: str) -> CloudEvent:
    return CloudEvent(
        id=event_id,
        type="billing.tax.calculated.v1",
        source="/tax",
        tenant="acme",
        data={"reference": "inv-1", "total_tax": "1.00"},
    )


async def test_keep_event_claims_and_keeps_once(uow: UnitOfWorkFactory) -> None:
    event = _peer_event("ev-1")
    kept = ReceivedEvent("ev-1", event.type, "/tax", "inv-1", None, T0, T0, {"total_tax": "1.00"})
    async with uow("acme") as unit:
        assert await unit.keep_event("invoice", event, kept)
    async with uow("acme") as unit:  # a redelivery: claimed before, nothing kept twice
        assert not await unit.keep_event("invoice", event, replace(kept, received_at=T0))
    async with uow("acme") as unit:  # another consumer has its own claim
        assert await unit.claim_event("other", event)
    async with uow("acme") as unit:
        assert await unit.received.for_reference("inv-1") == [kept]
    async with uow("acme") as unit:
        assert not await unit.claim_event("invoice", event)


async def test_a_finished_unit_of_work_is_freed_without_the_cycle_collector(
    uow: UnitOfWorkFactory,
) -> None:
    """Nothing a unit of work builds (its repositories, its session stand-in, its hot-path
    connection) holds it strongly, so the last reference to a finished one frees it at once
    (issue 11: each was a reference cycle, and under load hundreds of them waited for the
    cycle collector, holding the invoice process's memory up)."""
    event = _peer_event("ev-1")
    kept = ReceivedEvent("ev-1", event.type, "/tax", "inv-1", None, T0, T0, {"total_tax": "1.00"})
    invoice = make_invoice("inv-1")
    pending = PendingCreation("acme", "inv-1", "invoice:acme:key-1", T0)
    finished: list[weakref.ref[Any]] = []
    gc.collect()
    gc.disable()  # only reference counting frees anything from here on
    try:
        async with uow("acme") as unit:  # a creation: asyncpg only on PostgreSQL
            assert await unit.start_creation("key-1", pending) == (None, True)
            await unit.commit()
        finished.append(weakref.ref(unit))
        async with uow("acme") as unit:
            assert await unit.finish_creation(
                invoice,
                idempotency_key="key-1",
                request_hash="h" * 64,
                event=events.created(invoice),
                aggregate=events.aggregate(invoice),
            )
        finished.append(weakref.ref(unit))
        async with uow("acme") as unit:  # a kept peer event
            assert await unit.keep_event("invoice", event, kept)
        finished.append(weakref.ref(unit))
        async with uow("acme") as unit:  # through the session
            assert await unit.received.for_reference("inv-1") == [kept]
            assert await unit.invoices.get("inv-1", for_update=True) is not None
        finished.append(weakref.ref(unit))
        del unit
        assert [ref() for ref in finished] == [None, None, None, None]
    finally:
        gc.enable()


# ---- the unit of work's one connection for the hot path (PostgreSQL) --------------------

_POSTGRES_ONLY = pytest.mark.parametrize("migrated_database_url", ["postgresql"], indirect=True)


@pytest.fixture
async def one_connection(migrated_database_url: str) -> AsyncIterator[Any]:
    """An engine whose pool has ONE connection, given up on after 2 s of waiting."""
    engine = create_engine(migrated_database_url, pool_size=1, pool_timeout=2)
    try:
        yield engine
    finally:
        await engine.dispose()


@_POSTGRES_ONLY
async def test_a_unit_of_work_lets_its_connection_go_before_its_session_takes_one(
    one_connection: Any,
) -> None:
    uow = uow_factory(session_factory(one_connection), None)
    await add(uow, make_invoice("inv-1"), key="k")
    async with uow("acme") as unit:
        # The lookup's connection is kept for the unit of work's next hot-path statement...
        assert await unit.invoices.find_by_idempotency_key("nothing-here") is None
        assert await unit.pending.begin(PendingCreation("acme", "inv-2", "invoice:acme:2", T0))
        # ...and given back before the session checks one out: with one connection in the
        # pool, holding it would leave the session waiting for it until the pool timed out.
        stored = await unit.invoices.find_by_idempotency_key("k")  # a replay: session reads
        assert stored is not None and stored.invoice.id == "inv-1"
        assert await unit.pending.begin(PendingCreation("acme", "inv-3", "invoice:acme:3", T0))
        await unit.commit()
    async with uow("acme") as unit:
        assert await unit.pending.get("inv-2") is not None
        assert await unit.pending.get("inv-3") is not None
    assert one_connection.sync_engine.pool.checkedout() == 0


@_POSTGRES_ONLY
async def test_a_failed_or_cancelled_statement_leaves_the_next_a_good_connection(
    one_connection: Any,
) -> None:
    uow = uow_factory(session_factory(one_connection), None)
    async with uow("acme") as unit:
        drivers = unit._drivers  # type: ignore[attr-defined]
        with pytest.raises(Exception, match="division by zero"):
            async with drivers() as driver:
                failed_on = await driver.fetchval("SELECT pg_backend_pid()")
                await driver.fetchval("SELECT 1 / 0")
        async with drivers() as driver:  # a fresh checkout, of the same (good) connection
            assert await driver.fetchval("SELECT pg_backend_pid()") == failed_on
        # Cancelled mid-statement: that connection's state is unknown, it is closed, never
        # handed to the next block (nor back to the pool).
        seen: list[Any] = []

        async def sleep_in_a_block() -> None:
            async with drivers() as driver:
                seen.append(await driver.fetchval("SELECT pg_backend_pid()"))
                await driver.fetchval("SELECT pg_sleep(30)")

        sleeping = asyncio.ensure_future(sleep_in_a_block())
        await asyncio.sleep(0.2)
        sleeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeping
        async with drivers() as driver:
            assert await driver.fetchval("SELECT 3") == 3
            assert seen and await driver.fetchval("SELECT pg_backend_pid()") != seen[0]
    assert one_connection.sync_engine.pool.checkedout() == 0


@_POSTGRES_ONLY
async def test_a_server_refusing_connections_while_it_shuts_down_is_unavailable(
    one_connection: Any,
) -> None:
    """57P03 on connect ("the database system is shutting down") is a 503, not a 500."""
    uow = uow_factory(session_factory(one_connection), None)
    with postgres_shutting_down(one_connection):
        async with uow("acme") as unit:
            with pytest.raises(DatabaseUnavailable):
                await unit.invoices.find_by_idempotency_key("k")
    async with uow("acme") as unit:  # the server is back
        assert await unit.invoices.find_by_idempotency_key("k") is None


# ---- numbering --------------------------------------------------------------------------


async def test_sequences_per_tenant_and_series_and_rollback_leaves_no_gap(
    uow: UnitOfWorkFactory,
) -> None:
    async with uow("acme") as unit:
        assert [await unit.numbers.next_sequence("INV") for _ in range(3)] == [1, 2, 3]
        assert await unit.numbers.next_sequence("CRN") == 1
        await unit.commit()
    async with uow("acme") as unit:
        assert await unit.numbers.next_sequence("INV") == 4
        await unit.rollback()  # the transaction fails: its number goes back
    async with uow("globex") as unit:
        assert await unit.numbers.next_sequence("INV") == 1
        await unit.commit()
    async with uow("acme") as unit:
        assert await unit.numbers.next_sequence("INV") == 4


async def test_refused_finalization_takes_no_number(uow: UnitOfWorkFactory) -> None:
    await add(uow, make_invoice("inv-1"))
    await add(uow, make_invoice("inv-2"))
    first = await status_changes.finalize_invoice("acme", "inv-1", "user:x", deps(uow))
    with pytest.raises(InvalidTransition):
        await status_changes.finalize_invoice("acme", "inv-1", "user:x", deps(uow))
    second = await status_changes.finalize_invoice("acme", "inv-2", "user:x", deps(uow))
    assert (first.number, second.number) == ("INV-000001", "INV-000002")


async def test_concurrent_finalizations_get_consecutive_numbers(uow: UnitOfWorkFactory) -> None:
    count = 20
    for n in range(count):
        await add(uow, make_invoice(f"inv-{n:02d}"))
    other_series = make_invoice("crn-1", series="CRN")
    await add(uow, other_series)

    results = await asyncio.gather(
        *(
            status_changes.finalize_invoice("acme", f"inv-{n:02d}", "user:x", deps(uow))
            for n in range(count)
        ),
        status_changes.finalize_invoice("acme", "crn-1", "user:x", deps(uow)),
    )
    sequences = sorted(r.sequence for r in results[:count] if r.sequence is not None)
    assert sequences == list(range(1, count + 1))
    assert sorted(r.number for r in results[:count]) == [
        f"INV-{n:06d}" for n in range(1, count + 1)
    ]
    assert results[-1].number == "CRN-000001"

    async with uow("acme") as unit:
        stored = [await unit.invoices.get(f"inv-{n:02d}") for n in range(count)]
        finalized_events = (
            await unit.session.exec(
                select(OutboxMessage).where(
                    OutboxMessage.event_type == "billing.invoice.finalized.v1"
                )
            )
        ).all()
    assert sorted(i.sequence for i in stored if i and i.sequence) == list(range(1, count + 1))
    assert len(finalized_events) == count + 1


async def test_pending_begin_takes_over_a_record_but_not_one_being_released(
    uow: UnitOfWorkFactory,
) -> None:
    first = PendingCreation("acme", "inv-p", "invoice:acme:k", T0)
    retry = PendingCreation("acme", "inv-p", "invoice:acme:k", T0 + timedelta(seconds=5))
    async with uow("acme") as unit:
        assert await unit.pending.begin(first)
        await unit.commit()
    async with uow("acme") as unit:
        assert await unit.pending.begin(retry)  # a retry after a crash takes the record over
        await unit.commit()
    async with uow("acme") as unit:
        assert await unit.pending.get("inv-p") == retry
        await unit.pending.put(replace(retry, releasing=True))
        await unit.commit()
    async with uow("acme") as unit:
        assert not await unit.pending.begin(first)  # the release must finish first
        await unit.commit()
    async with uow("acme") as unit:
        assert await unit.pending.get("inv-p") == replace(retry, releasing=True)
    async with uow("other") as unit:  # the same invoice id of another tenant is its own
        assert await unit.pending.begin(replace(first, tenant_id="other"))
