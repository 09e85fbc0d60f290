"""The kernel's unit of work: lifecycle, outbox, inbox, and the one unique-violation signal
(`UniqueViolation`, never a SQLAlchemy type), on SQLite and PostgreSQL."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Column, MetaData, String, Table, UniqueConstraint, event, func, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.db import create_engine, session_factory
from billing_common.event_schemas import INVOICE_CREATED
from billing_common.events import CloudEvent
from billing_common.outbox import (
    InboxRecord,
    OutboxMessage,
    SqlUnitOfWork,
    TenantUnitOfWork,
    utcnow,
)
from billing_common.uniqueness import UniqueViolation, unique_violation_from

metadata = MetaData()
things = Table(
    "things",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(32), nullable=False),
    Column("code", String(32), nullable=False),
    UniqueConstraint("tenant_id", "code", name="uq_things_code"),
)


class ThingRepository:
    """A repository as the services write them: tenant-scoped, on the unit of work's session."""

    def __init__(self, uow: SqlUnitOfWork, tenant: str) -> None:
        self._session = uow.session
        self._tenant = tenant

    async def add(self, thing_id: str, code: str) -> None:
        await self._session.exec(
            insert(things).values(id=thing_id, tenant_id=self._tenant, code=code)
        )

    async def count(self) -> int:
        result = await self._session.exec(
            select(func.count()).select_from(things).where(things.c.tenant_id == self._tenant)
        )
        return int(result.one())


class ThingUnitOfWork(TenantUnitOfWork):
    things: ThingRepository

    def _open(self) -> None:
        self.things = ThingRepository(self, self.tenant)


def _inbox_record() -> InboxRecord:
    return InboxRecord(consumer="c", event_id="e1", event_type="t", processed_at=utcnow())


async def _with_inbox_record(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    sessions = session_factory(engine)
    async with SqlUnitOfWork(sessions) as unit:
        unit.session.add(_inbox_record())
        await unit.commit()
    return sessions


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        await conn.run_sync(
            SQLModel.metadata.create_all,
            tables=[OutboxMessage.__table__, InboxRecord.__table__],  # type: ignore[list-item]
        )
    yield engine
    await engine.dispose()


def _is_postgres(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


async def test_per_tenant_builds_repositories_for_the_tenant(engine: AsyncEngine) -> None:
    uow = ThingUnitOfWork.per_tenant(session_factory(engine), None)
    async with uow("acme") as unit:
        assert unit.tenant == "acme"
        await unit.things.add("t1", "A")
        await unit.things.add("t2", "B")
        await unit.commit()
    async with uow("acme") as unit:
        await unit.things.add("t3", "C")  # not committed: gone when the unit of work ends
    async with uow("acme") as unit:
        assert await unit.things.count() == 2
    async with uow("globex") as unit:
        assert await unit.things.count() == 0


async def test_a_duplicate_from_a_statement_is_a_unique_violation_naming_the_constraint(
    engine: AsyncEngine,
) -> None:
    uow = ThingUnitOfWork.per_tenant(session_factory(engine), None)
    async with uow("acme") as unit:
        await unit.things.add("t1", "SAME")
        await unit.commit()
    async with uow("acme") as unit:
        with pytest.raises(UniqueViolation) as caught:
            await unit.things.add("t2", "SAME")
    violation = caught.value
    assert not isinstance(violation, IntegrityError)
    assert violation.__cause__ is not None  # the driver's error, for the logs
    assert (violation.table, violation.columns) == ("things", ("tenant_id", "code"))
    assert violation.constraint == ("uq_things_code" if _is_postgres(engine) else None)


async def test_a_duplicate_at_commit_rolls_back_with_its_events(engine: AsyncEngine) -> None:
    sessions = await _with_inbox_record(engine)
    event = CloudEvent(source="/billing/test", type=INVOICE_CREATED, subject="i")
    async with SqlUnitOfWork(sessions) as unit:
        unit.emit(event, aggregate="invoice:i")
        unit.session.add(_inbox_record())
        with pytest.raises(UniqueViolation) as caught:
            await unit.commit()
        # Rolled back, and usable again: a caller can read the winner in the same block.
        outbox = await unit.session.exec(select(func.count()).select_from(OutboxMessage))
        assert outbox.one() == 0  # the event went with the change
    assert caught.value.table == "inbox"
    assert set(caught.value.columns) == {"consumer", "event_id"}


async def test_a_duplicate_at_flush_is_a_unique_violation(engine: AsyncEngine) -> None:
    async with SqlUnitOfWork(await _with_inbox_record(engine)) as unit:
        unit.session.add(_inbox_record())
        with pytest.raises(UniqueViolation):
            await unit.session.flush()


async def test_other_integrity_errors_are_not_unique_violations(engine: AsyncEngine) -> None:
    async with ThingUnitOfWork(session_factory(engine), None, "acme") as unit:
        with pytest.raises(IntegrityError) as caught:
            await unit.session.exec(insert(things).values(id="t1", tenant_id="acme"))
    assert unique_violation_from(caught.value) is None


async def test_two_deliveries_racing_to_claim_an_event_only_the_first_claims(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    event = CloudEvent(id="e1", source="/billing/test", type=INVOICE_CREATED)
    if not _is_postgres(engine):
        # SQLite has one connection per engine: the second delivery only claims after the
        # first committed, so it never races; it is refused.
        async with SqlUnitOfWork(sessions) as unit:
            assert await unit.claim_event("payment", event)
            await unit.commit()
        async with SqlUnitOfWork(sessions) as unit:
            assert not await unit.claim_event("payment", event)
        return

    async def claim_and_commit() -> bool:
        async with SqlUnitOfWork(sessions) as unit:
            claimed = await unit.claim_event("payment", event)
            await unit.commit()
            return claimed

    # The second claim waits on the first's uncommitted row, then is refused (not an error).
    async with SqlUnitOfWork(sessions) as first:
        assert await first.claim_event("payment", event)
        second = asyncio.create_task(claim_and_commit())
        await asyncio.sleep(0.05)  # lets the second claim reach the row lock (any order works)
        await first.commit()
    assert await second is False


async def test_a_claim_rolled_back_leaves_the_event_to_the_next_delivery(
    engine: AsyncEngine,
) -> None:
    sessions = session_factory(engine)
    event = CloudEvent(id="e1", source="/billing/test", type=INVOICE_CREATED)
    async with SqlUnitOfWork(sessions) as unit:
        assert await unit.claim_event("payment", event)  # the effect failed: no commit
    async with SqlUnitOfWork(sessions) as unit:
        assert await unit.claim_event("payment", event)
        await unit.commit()


def _counting_statements(engine: AsyncEngine) -> list[str]:
    """The SQL of each statement `engine` sends from now on (BEGIN/COMMIT are not sent as
    statements through the cursor, so only the work's own statements are counted)."""
    sent: list[str] = []

    def record(*args: object) -> None:
        sent.append(str(args[2]))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return sent


async def test_a_claim_is_one_statement_and_a_duplicate_is_refused(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    event_ = CloudEvent(id="e1", source="/billing/test", type=INVOICE_CREATED)
    sent = _counting_statements(engine)
    async with SqlUnitOfWork(sessions) as unit:
        assert await unit.claim_event("payment", event_)
        await unit.commit()
    assert len(sent) == 1
    assert "ON CONFLICT" in sent[0].upper()
    sent.clear()
    async with SqlUnitOfWork(sessions) as unit:
        assert not await unit.claim_event("payment", event_)
    assert len(sent) == 1
    async with sessions() as session:
        count = await session.exec(select(func.count()).select_from(InboxRecord))
        assert count.one() == 1


async def test_emitted_events_are_one_insert_at_commit_in_order(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    events = [CloudEvent(source="/billing/test", type=INVOICE_CREATED) for _ in range(3)]
    sent = _counting_statements(engine)
    async with SqlUnitOfWork(sessions) as unit:
        unit.emit(events[0], aggregate="invoice:i")
        await unit.commit()
    assert [sql.split()[:3] for sql in sent] == [["INSERT", "INTO", "outbox"]]
    sent.clear()
    async with SqlUnitOfWork(sessions) as unit:
        unit.emit(events[1], aggregate="invoice:i")
        unit.emit(events[2], aggregate="invoice:i")
        await unit.commit()
    assert len(sent) == 1  # one executemany for the transaction's rows
    async with sessions() as session:
        rows = await session.exec(select(OutboxMessage).order_by(OutboxMessage.id))  # type: ignore[arg-type]
        assert [row.event_id for row in rows] == [e.id for e in events]


def test_errors_that_report_no_unique_violation_translate_to_none() -> None:
    assert unique_violation_from(ValueError("UNIQUE constraint failed: x.y")) is None
    assert unique_violation_from(RuntimeError("boom")) is None


def _engine_connections(engine: AsyncEngine) -> list[object]:
    """Every SQLAlchemy engine connection opened from now on (a session's statements open
    one; `SqlUnitOfWork.postgres` outside a session's transaction does not)."""
    opened: list[object] = []
    event.listen(engine.sync_engine, "engine_connect", opened.append)
    return opened


async def test_postgres_outside_a_transaction_commits_on_its_own_with_no_session(
    engine: AsyncEngine,
) -> None:
    if not _is_postgres(engine):
        pytest.skip("the asyncpg connection is PostgreSQL's")
    sessions = session_factory(engine)
    opened = _engine_connections(engine)
    async with SqlUnitOfWork(sessions) as unit:
        async with unit.postgres() as driver:
            assert not driver.in_transaction()
            await driver.insert_all([("things", {"id": "t1", "tenant_id": "a", "code": "A"})])
        await unit.commit()
    # Not committed, but each statement commits on its own: it stays.
    async with SqlUnitOfWork(sessions) as unit, unit.postgres() as driver:
        await driver.insert_all([("things", {"id": "t2", "tenant_id": "a", "code": "B"})])
    assert opened == []  # neither unit of work opened a session's connection
    async with ThingUnitOfWork(sessions, None, "a") as unit:
        assert await unit.things.count() == 2


async def test_postgres_joins_the_sessions_transaction_and_rolls_back_with_it(
    engine: AsyncEngine,
) -> None:
    if not _is_postgres(engine):
        pytest.skip("the asyncpg connection is PostgreSQL's")
    uow = ThingUnitOfWork.per_tenant(session_factory(engine), None)
    async with uow("a") as unit:
        await unit.things.add("t1", "A")  # SQLAlchemy begins the transaction
        async with unit.postgres() as driver:
            assert driver.in_transaction()
            await driver.insert_all([("things", {"id": "t2", "tenant_id": "a", "code": "B"})])
        await unit.rollback()
    async with uow("a") as unit:
        assert await unit.things.count() == 0
