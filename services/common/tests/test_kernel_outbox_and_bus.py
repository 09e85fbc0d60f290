import asyncio

import pytest
from sqlalchemy import text
from sqlmodel import SQLModel

from billing_common.adapters.inprocess_bus import InProcessEventBus
from billing_common.adapters.sql_state import KeyValueRow, SqlKeyValueStore
from billing_common.db import create_engine, session_factory
from billing_common.event_schemas import INVOICE_CREATED
from billing_common.events import CloudEvent
from billing_common.outbox import InboxRecord, OutboxMessage, OutboxRelay, SqlUnitOfWork
from billing_common.ports import EtagMismatch, PermanentEventError
from services.common.tests.sample_events import invoice_created

KERNEL_TABLES = [OutboxMessage.__table__, InboxRecord.__table__, KeyValueRow.__table__]


@pytest.fixture
async def engine(database_url: str):  # type: ignore[no-untyped-def]
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all, tables=KERNEL_TABLES)
    yield engine
    await engine.dispose()


class RecordingBus(InProcessEventBus):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[CloudEvent] = []
        self.fail = False

    async def publish(self, event: CloudEvent) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.published.append(event)
        await super().publish(event)


async def test_outbox_keeps_events_until_the_bus_takes_them_in_order(engine) -> None:  # type: ignore[no-untyped-def]
    bus = RecordingBus()
    relay = OutboxRelay(engine, bus, poll_seconds=60)
    sessions = session_factory(engine)
    for i in range(3):
        async with SqlUnitOfWork(sessions, relay) as uow:
            uow.emit(invoice_created(f"inv_{i}"), aggregate="invoice:x")
            await uow.commit()
    async with SqlUnitOfWork(sessions, relay) as uow:
        uow.emit(invoice_created("rolled-back"), aggregate="invoice:y")
        # no commit: leaving the block rolls back, and the event must vanish with the change

    bus.fail = True
    with pytest.raises(ConnectionError):
        await relay.publish_pending()
    assert await relay.pending_count() == 3

    bus.fail = False
    assert await relay.publish_pending() == 3
    assert [e.subject for e in bus.published] == ["inv_0", "inv_1", "inv_2"]
    assert await relay.pending_count() == 0
    assert await relay.publish_pending() == 0


async def test_relay_publishes_promptly_after_commit(engine) -> None:  # type: ignore[no-untyped-def]
    bus = RecordingBus()
    relay = OutboxRelay(engine, bus, poll_seconds=60)
    await relay.start()
    try:
        async with SqlUnitOfWork(session_factory(engine), relay) as uow:
            uow.emit(invoice_created("inv_fast"), aggregate="invoice:fast")
            await uow.commit()
        async with asyncio.timeout(5):
            while not bus.published:
                await asyncio.sleep(0.01)
    finally:
        await relay.stop()
    assert bus.published[0].subject == "inv_fast"


async def test_relay_publishes_one_aggregate_in_its_own_task(engine) -> None:  # type: ignore[no-untyped-def]
    # A task for the batch's one chain would start a turn of the event loop later, behind
    # every callback ready then: time on each event's way to the broker. Several aggregates
    # still go out concurrently, one task each.
    tasks: list[asyncio.Task[object] | None] = []

    class TaskNotingBus(RecordingBus):
        async def publish(self, event: CloudEvent) -> None:
            tasks.append(asyncio.current_task())
            await super().publish(event)

    bus = TaskNotingBus()
    relay = OutboxRelay(engine, bus, poll_seconds=60)
    sessions = session_factory(engine)
    async with SqlUnitOfWork(sessions, relay) as uow:
        uow.emit(invoice_created("invoice:a"), aggregate="invoice:a")
        await uow.commit()
    assert await relay.publish_pending() == 1
    assert tasks == [asyncio.current_task()]

    tasks.clear()
    for aggregate in ("invoice:a", "invoice:b"):
        async with SqlUnitOfWork(sessions, relay) as uow:
            uow.emit(invoice_created(aggregate), aggregate=aggregate)
            await uow.commit()
    assert await relay.publish_pending() == 2
    assert len(set(tasks)) == 2 and asyncio.current_task() not in tasks
    assert [e.subject for e in bus.published] == ["invoice:a", "invoice:a", "invoice:b"]


async def test_inbox_claims_an_event_once_per_consumer(engine) -> None:  # type: ignore[no-untyped-def]
    sessions = session_factory(engine)
    event = invoice_created("inv_1")
    async with SqlUnitOfWork(sessions) as uow:
        assert await uow.claim_event("payment", event)
        await uow.commit()
    async with SqlUnitOfWork(sessions) as uow:
        assert not await uow.claim_event("payment", event)
        assert await uow.claim_event("invoice", event)
        await uow.commit()


async def test_sql_state_store_with_etags_and_ttl(engine) -> None:  # type: ignore[no-untyped-def]
    store = SqlKeyValueStore(engine)
    assert await store.get("k") is None
    etag = await store.set("k", {"v": 1})
    item = await store.get("k")
    assert item is not None and item.value == {"v": 1} and item.etag == etag
    with pytest.raises(EtagMismatch):
        await store.set("k", {"v": 2}, etag="stale")
    etag2 = await store.set("k", {"v": 2}, etag=etag)
    with pytest.raises(EtagMismatch):
        await store.delete("k", etag=etag)
    await store.delete("k", etag=etag2)
    assert await store.get("k") is None
    await store.set("short", 1, ttl_seconds=-1)
    assert await store.get("short") is None


async def test_inprocess_bus_retries_then_dead_letters_and_isolates_consumers() -> None:
    bus = InProcessEventBus(max_attempts=3, backoff_seconds=0.001)
    seen: dict[str, int] = {"flaky": 0, "poison": 0, "permanent": 0, "steady": 0}

    async def flaky(event: CloudEvent) -> None:
        seen["flaky"] += 1
        if seen["flaky"] < 2:
            raise RuntimeError("transient")

    async def poison(event: CloudEvent) -> None:
        seen["poison"] += 1
        raise RuntimeError("always")

    async def permanent(event: CloudEvent) -> None:
        seen["permanent"] += 1
        raise PermanentEventError("never applies")

    async def steady(event: CloudEvent) -> None:
        seen["steady"] += 1

    bus.subscribe("a", INVOICE_CREATED, flaky)
    bus.subscribe("b", INVOICE_CREATED, poison)
    bus.subscribe("c", INVOICE_CREATED, permanent)
    await bus.start()
    bus.subscribe("d", INVOICE_CREATED, steady)  # joining a running bus
    try:
        await bus.publish(invoice_created("inv_1"))
        await bus.wait_idle()
    finally:
        await bus.stop()
    assert seen == {"flaky": 2, "poison": 3, "permanent": 1, "steady": 1}
    assert sorted(d.consumer for d in bus.dead_letters) == ["b", "c"]


async def test_relay_leaves_the_outbox_to_the_replica_holding_its_lock(postgres_url: str) -> None:
    # The lock, the batch and the relaxed commit are one statement on PostgreSQL: a relay that
    # is not granted the lock must publish nothing and leave its pending count alone.
    engine = create_engine(postgres_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.create_all, tables=KERNEL_TABLES)
        bus = RecordingBus()
        relay = OutboxRelay(engine, bus, poll_seconds=60)
        async with SqlUnitOfWork(session_factory(engine), relay) as uow:
            uow.emit(invoice_created("inv_a"), aggregate="invoice:a")
            uow.emit(invoice_created("inv_b"), aggregate="invoice:a")
            await uow.commit()
        relay.pending = 7
        async with engine.connect() as other_replica, other_replica.begin():
            await other_replica.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": OutboxRelay.ADVISORY_LOCK_KEY}
            )
            assert await relay.publish_pending() == 0
            assert bus.published == []
            assert relay.pending == 7
        assert await relay.publish_pending() == 2
        assert [e.subject for e in bus.published] == ["inv_a", "inv_b"]
        assert await relay.pending_count() == 0
        assert relay.pending == 0
        assert await relay.publish_pending() == 0
    finally:
        await engine.dispose()
