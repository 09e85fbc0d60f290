"""The outbox relay's pass on PostgreSQL: one pooled connection, a session advisory lock taken
with the batch read and released after the mark, no transaction open while publishing."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from billing_common.adapters.inprocess_bus import InProcessEventBus
from billing_common.db import create_engine, session_factory
from billing_common.events import CloudEvent
from billing_common.outbox import InboxRecord, OutboxMessage, OutboxRelay, SqlUnitOfWork
from services.common.tests.sample_events import invoice_created

pytestmark = pytest.mark.integration

KEY = OutboxRelay.ADVISORY_LOCK_KEY
# How pg_locks shows a bigint advisory key: its high and low 32 bits, objsubid 1.
_LOCK_HELD = """
    SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
    WHERE l.locktype = 'advisory' AND d.datname = current_database() AND l.granted
      AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1
"""


class HookBus(InProcessEventBus):
    """Runs `during` inside each publish (the relay's pass is then between read and mark)."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[str | None] = []
        self.during: Callable[[], Awaitable[None]] | None = None

    async def publish(self, event: CloudEvent) -> None:
        if self.during is not None:
            await self.during()
        self.published.append(event.subject)


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url)
    async with engine.begin() as conn:
        await conn.run_sync(
            SQLModel.metadata.create_all,
            tables=[OutboxMessage.__table__, InboxRecord.__table__],  # type: ignore[attr-defined]
        )
    yield engine
    await engine.dispose()


@pytest.fixture
async def observer(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """Another session on the same database, as another replica would see it."""
    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    await conn.execute("SET lock_timeout = '5s'")  # never wait forever on the relay's locks
    yield conn
    await conn.close()


async def _emit(engine: AsyncEngine, relay: OutboxRelay, subject: str) -> None:
    async with SqlUnitOfWork(session_factory(engine), relay) as uow:
        uow.emit(invoice_created(subject), aggregate=f"invoice:{subject}")
        await uow.commit()


async def _lock_held(observer: asyncpg.Connection) -> bool:
    return bool(await observer.fetchval(_LOCK_HELD, KEY >> 32, KEY & 0xFFFFFFFF))


async def _released(observer: asyncpg.Connection) -> bool:
    # A discarded connection's backend ends once the server reads the close: wait for it.
    async with asyncio.timeout(10):
        while await _lock_held(observer):
            await asyncio.sleep(0.02)
    return True


async def test_relay_releases_its_lock_after_every_pass(
    engine: AsyncEngine, observer: asyncpg.Connection
) -> None:
    bus = HookBus()
    relay = OutboxRelay(engine, bus, poll_seconds=60)
    seen_held: list[bool] = []

    async def note_lock() -> None:
        seen_held.append(await _lock_held(observer))

    # A pass that publishes: the lock is held while it publishes, and not after.
    bus.during = note_lock
    await _emit(engine, relay, "inv_ok")
    assert await relay.publish_pending() == 1
    assert seen_held == [True]
    assert not await _lock_held(observer)

    # A pass whose publish fails: the row records the error, the lock goes all the same.
    async def broker_down() -> None:
        raise ConnectionError("broker down")

    bus.during = broker_down
    await _emit(engine, relay, "inv_refused")
    with pytest.raises(ConnectionError):
        await relay.publish_pending()
    assert not await _lock_held(observer)
    assert await relay.pending_count() == 1

    # A pass whose database statement fails after the lock was taken (here the mark: the
    # table is gone meanwhile): the connection is discarded, and the lock with it.
    async def table_gone() -> None:
        await observer.execute("ALTER TABLE outbox RENAME TO outbox_away")

    bus.during = table_gone
    with pytest.raises(asyncpg.UndefinedTableError):
        await relay.publish_pending()
    assert await _released(observer)
    await observer.execute("ALTER TABLE outbox_away RENAME TO outbox")

    # A pass cancelled mid-publish (a shutdown): the same.
    blocked = asyncio.Event()

    async def hang() -> None:
        blocked.set()
        await asyncio.Event().wait()

    bus.during = hang
    task = asyncio.create_task(relay.publish_pending())
    await blocked.wait()
    assert await _lock_held(observer)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _released(observer)

    # And the next pass publishes what was left, in order.
    bus.during = None
    assert await relay.publish_pending() == 1
    assert bus.published[-1] == "inv_refused"
    assert await relay.pending_count() == 0
    assert not await _lock_held(observer)


async def test_relay_holds_no_transaction_open_while_publishing(
    engine: AsyncEngine, observer: asyncpg.Connection
) -> None:
    # A broker confirm takes a round trip or more: a transaction open meanwhile holds a
    # snapshot (and, under load, a pooled connection "idle in transaction") for nothing.
    bus = HookBus()
    relay = OutboxRelay(engine, bus, poll_seconds=60)
    states: list[list[str]] = []

    async def note_states() -> None:
        rows = await observer.fetch(
            "SELECT state FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        states.append(sorted(str(r["state"]) for r in rows))

    bus.during = note_states
    await _emit(engine, relay, "inv_1")
    assert await relay.publish_pending() == 1
    assert bus.published == ["inv_1"]
    assert len(states) == 1
    assert "idle" in states[0]  # the relay's own connection, between its statements
    assert not [state for state in states[0] if state.startswith("idle in transaction")]


async def _logged() -> None:
    # asyncpg hands each logged query to its loggers with call_soon: let them run.
    for _ in range(3):
        await asyncio.sleep(0)


async def test_relay_pass_round_trips(engine: AsyncEngine, observer: asyncpg.Connection) -> None:
    # Each invoice makes three services publish one event each: a pass's round trips are on
    # every answer's path (lock and read, then mark, commit and unlock in one message), and a
    # pass that finds nothing (a poll, a wake-up whose row the pass before took) needs one.
    sent: list[str] = []

    def log_query(record: asyncpg.connection.LoggedQuery) -> None:
        sent.append(record.query)

    def on_checkout(dbapi_connection: object, *_: object) -> None:
        dbapi_connection._connection.add_query_logger(log_query)  # type: ignore[attr-defined]

    event.listen(engine.sync_engine.pool, "checkout", on_checkout)
    bus = HookBus()
    relay = OutboxRelay(engine, bus, poll_seconds=60)
    await _emit(engine, relay, "inv_1")
    await _logged()
    sent.clear()
    assert await relay.publish_pending() == 1
    await _logged()
    assert len(sent) == 2, sent
    assert await observer.fetchval("SELECT published_at IS NOT NULL FROM outbox") is True
    assert not await _lock_held(observer)

    sent.clear()
    assert await relay.publish_pending() == 0
    await _logged()
    assert len(sent) == 1, sent
    assert not await _lock_held(observer)
    assert bus.published == ["inv_1"]
