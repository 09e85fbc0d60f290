"""Transactional outbox, inbox and the unit of work that writes them.

An event is written to `outbox` in the same transaction as the change it reports; the relay
publishes it afterwards and marks it sent. A consumer records each processed event id in `inbox`
in the same transaction as the event's effect, so a redelivered event has no second effect.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from loguru import logger
from sqlalchemy import DateTime, Insert, Table, Text, func, insert, update
from sqlalchemy import select as core_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import Column, Field, SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.clock import utcnow as utcnow  # the kernel clock, long imported from here
from billing_common.db import PostgresDriver, pooled_driver, postgres_driver
from billing_common.events import CloudEvent
from billing_common.ports import EventBus
from billing_common.uniqueness import UniqueViolation


class OutboxMessage(SQLModel, table=True):
    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True, max_length=64)
    aggregate: str = Field(max_length=128, index=True)
    event_type: str = Field(max_length=128)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    published_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True, index=True)
    )
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=500)


_OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]


def outbox_row(event: CloudEvent, *, aggregate: str) -> dict[str, object]:
    """The outbox row of `event`, column by column, for units of work that write it with
    their own statement (billing_common.db.PostgresDriver.insert_all)."""
    return {
        "event_id": event.id,
        "aggregate": aggregate,
        "event_type": event.type,
        "payload": event.to_json().decode(),
        "created_at": utcnow(),
        "published_at": None,
        "attempts": 0,
        "last_error": None,
    }


def inbox_row(consumer: str, event: CloudEvent) -> dict[str, object]:
    """The inbox row that claims `event` for `consumer`, column by column (claim_event, and
    units of work that claim with their own statement)."""
    return {
        "consumer": consumer,
        "event_id": event.id,
        "event_type": event.type,
        "processed_at": utcnow(),
    }


class InboxRecord(SQLModel, table=True):
    __tablename__ = "inbox"

    consumer: str = Field(primary_key=True, max_length=64)
    event_id: str = Field(primary_key=True, max_length=64)
    event_type: str = Field(max_length=128)
    processed_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


_INBOX: Table = InboxRecord.__table__  # type: ignore[attr-defined]
_OUTBOX_INSERT = insert(_OUTBOX)


def _claim_statement(dialect: str) -> Insert:
    """The inbox claim as one statement: the row comes back only if this delivery wrote it."""
    dialect_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        dialect_insert(_INBOX)
        .on_conflict_do_nothing(index_elements=[_INBOX.c.consumer, _INBOX.c.event_id])
        .returning(_INBOX.c.event_id)
    )


_CLAIMS = {dialect: _claim_statement(dialect) for dialect in ("postgresql", "sqlite")}

# A relay pass on PostgreSQL runs on one pooled asyncpg connection, outside any transaction,
# so no snapshot or transaction stays open while the broker confirms (a pass used to sit
# "idle in transaction" for its whole publish). Its first statement takes the session
# advisory lock that keeps replicas from publishing the same rows concurrently (which could
# reorder them) and reads the batch in insertion order (`got`; no rows unless granted). The
# lock is taken only when some row is unpublished (CASE evaluates in order): a pass that
# finds nothing (a poll, or a wake-up whose rows the pass before already took) then holds
# nothing and needs no unlock, one round trip. The lock is released by the pass's last
# statement, after the mark committed; a pass that fails anywhere closes its connection
# instead (the server then releases the lock), so a session lock never stays behind on a
# pooled connection.
#
# Deployers: a session lock needs the same server session from lock to unlock, so the
# services must reach PostgreSQL directly or through a pooler in *session* mode. PgBouncer's
# transaction (or statement) pooling would hand the unlock to another server connection and
# leave the lock held by a connection no relay owns, and every relay would publish nothing.
# (A CTE with volatile functions is evaluated once and never inlined.)
_PG_BATCH_SQL = """
    WITH pass AS (
        SELECT CASE WHEN EXISTS (SELECT FROM outbox WHERE published_at IS NULL)
            THEN pg_try_advisory_lock($1::bigint) END AS got
    )
    SELECT pass.got, batch.id, batch.aggregate, batch.payload
    FROM pass LEFT JOIN LATERAL (
        SELECT id, aggregate, payload FROM outbox
        WHERE pass.got AND published_at IS NULL
        ORDER BY id
        LIMIT $2
    ) AS batch ON true
    ORDER BY batch.id
"""
# The mark and the unlock go in ONE simple-protocol message (one round trip), and the mark's
# COMMIT comes before the unlock in it: the server runs the statements in order and skips the
# rest after an error, so the lock is never released before the mark is durable to other
# sessions (releasing it first would let another replica read and republish rows behind the
# ones this pass published). The simple protocol takes no parameters: the values are ints
# and a timestamp this module formats, never outside text.
#
# The mark commits with `synchronous_commit = off` (for its own transaction only): the
# events were published before it, so a crash that loses this commit only means those rows
# are published again, which at-least-once delivery allows (consumers claim each event id
# once in their inbox). WAL is replayed in order, so a lost mark loses every later mark too:
# rows are never republished out of their order. Not waiting for the WAL flush keeps a disk
# sync per batch out of the pass, and with it out of the next event's wait for the lock.
_PG_MARK_SQL = (
    "BEGIN; SET LOCAL synchronous_commit = off;"
    " UPDATE outbox SET published_at = '{published_at}'::timestamptz, attempts = attempts + 1"
    " WHERE id = ANY('{{{ids}}}'::integer[]); COMMIT; "
)
_PG_FAILED_SQL = "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1"
# An unlock of a lock not held answers false (a pooler in transaction mode, see above): an
# error then, not a silent pass.
_PG_UNLOCK_SQL = (
    "DO $$BEGIN IF NOT pg_advisory_unlock({key}::bigint) THEN"
    " RAISE EXCEPTION 'the outbox relay''s advisory lock was not held at unlock';"
    " END IF; END$$"
)


def _mark_and_unlock_sql(published: list[int], published_at: datetime, key: int) -> str:
    """The pass's last message: mark `published` sent (if any), commit, release the lock."""
    unlock = _PG_UNLOCK_SQL.format(key=int(key))
    if not published:
        return unlock
    ids = ",".join(str(int(row_id)) for row_id in published)
    return _PG_MARK_SQL.format(published_at=published_at.isoformat(), ids=ids) + unlock


# A pass's outcome: rows read, ids published, (id, error) of each row that failed.
_Pass = tuple[int, list[int], list[tuple[int, Exception]]]


def _error_text(exc: Exception) -> str:
    return str(exc)[:500] or type(exc).__name__


@runtime_checkable
class StoredEventPublisher(Protocol):
    """A bus that publishes an outbox row's payload as it is stored (the RabbitMQ bus): the
    same message as `publish(CloudEvent.from_json(payload))`, without that parse and the
    bus's serialising the envelope again."""

    async def publish_stored(self, payload: str) -> None: ...


class OutboxRelay:
    """Publishes unsent outbox rows in insertion order, promptly after each commit (notify)
    and on a slow poll as a safety net. On a publish failure it stops the batch, so events of
    one aggregate never overtake each other, and retries with back-off."""

    # Any constant works; it names the relay's PostgreSQL advisory lock so that replicas of a
    # service never publish the same rows concurrently (which could reorder them).
    ADVISORY_LOCK_KEY = 7_316_202_611

    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        *,
        poll_seconds: float = 1.0,
        batch_size: int = 100,
        max_backoff_seconds: float = 5.0,
    ) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
        self._bus = bus
        self._publish_payload: Callable[[str], Awaitable[None]] = (
            bus.publish_stored if isinstance(bus, StoredEventPublisher) else self._parsed
        )
        self._poll_seconds = poll_seconds
        self._batch_size = batch_size
        self._max_backoff = max_backoff_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # Health as metrics read (billing_common.health), never as readiness: a broker outage
        # must not take the API down, the rows wait here.
        self.healthy = True
        self.pending = 0  # unpublished rows when last counted (exact after a drain or failure)
        self.last_success_at: float | None = None  # Unix time of the last completed pass
        self._failures = 0

    def notify(self) -> None:
        self._wake.set()

    async def _parsed(self, payload: str) -> None:
        await self._bus.publish(CloudEvent.from_json(payload))

    @property
    def passing(self) -> bool:
        """Whether a pass (read, publish, mark) is under way."""
        return self._lock.locked()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self, *, flush_seconds: float = 0.0) -> None:
        """Stop the relay. With `flush_seconds`, first publish what the requests that just
        finished committed, for at most that long (a shutdown then does not leave their events
        waiting for the next start); whatever is left stays in the outbox."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if flush_seconds > 0:
            try:
                async with asyncio.timeout(flush_seconds):
                    while await self.publish_pending() == self._batch_size:
                        pass
            except Exception as exc:  # noqa: BLE001 - shutting down: the rows stay for later
                logger.warning("outbox relay stopped with events unpublished: {}", exc)

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that
            # arrives as the wake-up completes, and stop() then waits forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await self._wake.wait()
            self._wake.clear()
            try:
                while await self.publish_pending() == self._batch_size:
                    pass
                backoff = 0.05
                self._succeeded()
            except Exception as exc:  # noqa: BLE001 - the relay must outlive any failure
                await self._failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                self._wake.set()

    def _succeeded(self) -> None:
        if self._failures:
            logger.info("outbox relay resumed after {} failed attempt(s)", self._failures)
        self._failures = 0
        self.healthy = True
        self.last_success_at = time.time()

    async def _failed(self, exc: Exception) -> None:
        self._failures += 1
        self.healthy = False
        with contextlib.suppress(Exception):  # the database may be what failed
            self.pending = await self.pending_count()
        logger.warning(
            "outbox relay paused ({} unpublished, attempt {}): {}",
            self.pending,
            self._failures,
            exc,
        )

    async def publish_pending(self) -> int:
        """Publish one batch; return how many rows were published.

        Events of one aggregate go out one after another, each once the broker confirmed the
        one before; different aggregates go out concurrently, so a batch costs about one
        broker round trip per event of its longest chain, not one per row. On a bus failure
        that aggregate's later rows wait for the next batch, every row published stays
        marked, the failing row records the error, and the earliest failure is raised."""
        async with self._lock:
            if self._engine.dialect.name == "postgresql":
                found = await self._publish_postgres()
            else:
                found = await self._publish_sqlite()
        if found is None:
            return 0  # another replica holds the lock: its pass publishes these rows
        rows, published, failures = found
        if rows < self._batch_size:
            # The select saw every unpublished row: what is left is exactly what failed.
            self.pending = rows - len(published)
        if failures:
            raise min(failures, key=lambda failure: failure[0])[1]
        return len(published)

    async def _publish_postgres(self) -> _Pass | None:
        # discard_on_error: whatever fails (the database, a bug, a cancel), the connection
        # is closed rather than returned with the lock possibly still held.
        async with pooled_driver(self._engine, discard_on_error=True) as driver:
            found = await driver.fetch(_PG_BATCH_SQL, self.ADVISORY_LOCK_KEY, self._batch_size)
            if found[0]["got"] is None:
                return 0, [], []  # nothing unpublished: no lock was taken
            if not found[0]["got"]:
                return None
            rows = [(r["id"], r["aggregate"], r["payload"]) for r in found if r["id"] is not None]
            published, failures = await self._publish(rows)
            for row_id, exc in failures:  # rare: a statement each, before the final message
                await driver.execute(_PG_FAILED_SQL, row_id, _error_text(exc))
            await driver.execute(_mark_and_unlock_sql(published, utcnow(), self.ADVISORY_LOCK_KEY))
        return len(rows), published, failures

    async def _publish_sqlite(self) -> _Pass:
        async with self._sessions() as session, session.begin():
            connection = await session.connection()
            rows = [
                (r.id, r.aggregate, r.payload)
                for r in await connection.execute(
                    core_select(_OUTBOX.c.id, _OUTBOX.c.aggregate, _OUTBOX.c.payload)
                    .where(_OUTBOX.c.published_at.is_(None))
                    .order_by(_OUTBOX.c.id)
                    .limit(self._batch_size)
                )
            ]
            published, failures = await self._publish(rows)
            if published:
                await connection.execute(
                    update(_OUTBOX)
                    .where(_OUTBOX.c.id.in_(published))
                    .values(published_at=utcnow(), attempts=_OUTBOX.c.attempts + 1)
                )
            for row_id, exc in failures:
                await connection.execute(
                    update(_OUTBOX)
                    .where(_OUTBOX.c.id == row_id)
                    .values(attempts=_OUTBOX.c.attempts + 1, last_error=_error_text(exc))
                )
        return len(rows), published, failures

    async def _publish(
        self, rows: list[tuple[int, str, str]]
    ) -> tuple[list[int], list[tuple[int, Exception]]]:
        """Publish `rows` (id, aggregate, payload): the ids published, and (id, error) of the
        row that failed in each aggregate whose chain stopped."""
        chains: dict[str, list[tuple[int, str]]] = {}
        for row_id, aggregate, payload in rows:
            chains.setdefault(aggregate, []).append((row_id, payload))
        published: list[int] = []
        failures: list[tuple[int, Exception]] = []

        publish = self._publish_payload

        async def publish_chain(chain: list[tuple[int, str]]) -> None:
            for row_id, payload in chain:
                try:
                    await publish(payload)
                except Exception as exc:  # noqa: BLE001 - recorded on the row, raised after
                    failures.append((row_id, exc))
                    return  # later rows of this aggregate wait: its events keep their order
                published.append(row_id)

        if len(chains) == 1:
            # One aggregate (a wake-up's usual batch: the one event just committed): awaited
            # here, not in a task of gather's, whose start waits a turn of the event loop
            # behind every request callback ready then (on the event's way to the broker).
            await publish_chain(next(iter(chains.values())))
        else:
            await asyncio.gather(*(publish_chain(chain) for chain in chains.values()))
        return published, failures

    async def pending_count(self) -> int:
        async with self._sessions() as session:
            result = await session.exec(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.published_at.is_(None))  # type: ignore[union-attr]
            )
            return int(result.one())


class SqlUnitOfWork:
    """One database transaction: the kernel's unit-of-work base. Events emitted inside it land
    in the outbox atomically with the change, consumers claim events in the inbox in the same
    transaction as their effect, and the relay is woken after commit. A flush or commit that
    breaks a unique constraint raises `billing_common.uniqueness.UniqueViolation` (rolled
    back). A service subclass only builds its repositories on `self.session` in `_open`.

    The session is opened when first used: a unit of work whose statements all go to the
    asyncpg connection (`postgres`) never builds one, nor pays for its transaction
    bookkeeping, commit and close (about a fifth of a small request's CPU)."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay | None = None
    ) -> None:
        self._sessions = sessions
        self._relay = relay
        self._emitted = False
        self._outbox: list[dict[str, object]] = []
        self._session: AsyncSession | None = None
        engine = sessions.kw.get("bind")
        self._engine: AsyncEngine | None = engine if isinstance(engine, AsyncEngine) else None
        self.postgres_dialect = self._engine is not None and self._engine.dialect.name == (
            "postgresql"
        )
        """Whether `postgres` may be used (the engine is PostgreSQL's)."""

    @property
    def session(self) -> AsyncSession:
        """This unit of work's session, opened on first use."""
        session = self._session
        if session is None:
            session = self._session = self._sessions()
        return session

    @contextlib.asynccontextmanager
    async def postgres(self) -> AsyncIterator[PostgresDriver]:
        """PostgreSQL only: the asyncpg connection for hot-path statements. In the session's
        transaction when it has begun one; otherwise a pooled connection for the statements
        of this block only, each committing on its own, with no session involved."""
        session = self._session
        if session is not None and session.in_transaction():
            driver = await postgres_driver(session)
            assert driver is not None, "postgres() is for PostgreSQL only"
            yield driver
            return
        assert self._engine is not None and self.postgres_dialect, "for PostgreSQL only"
        async with pooled_driver(self._engine) as driver:
            yield driver

    @classmethod
    def factory(
        cls, sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay | None
    ) -> Callable[[], Self]:
        """Units of work on `sessions`; with `relay`, it is woken after each commit."""
        return partial(cls, sessions, relay)

    async def __aenter__(self) -> Self:
        self._session = None
        self._emitted = False
        self._outbox = []
        self._open()
        return self

    def _open(self) -> None:
        """Create repositories on `self.session`."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is None:
            return  # never opened: nothing to roll back
        try:
            # close() rolls back what is open and returns the connection: a rollback() first
            # would go through the session's transaction bookkeeping a second time (about a
            # fifth of a small read-only unit of work's CPU).
            await session.close()
        except Exception:
            if exc is None:
                raise
            # The database went away mid-transaction (it rolls back by itself): the error
            # the work raised is the one the caller must see, not the failed cleanup's.
            logger.warning("rollback after {!r} failed too", exc)

    def emit(self, event: CloudEvent, *, aggregate: str) -> None:
        # Kept here and written at commit with one Core INSERT (no ORM identity map, no
        # per-object flush), after the change: rows keep the order they were emitted in.
        self._outbox.append(outbox_row(event, aggregate=aggregate))
        self._emitted = True

    async def claim_event(self, consumer: str, event: CloudEvent) -> bool:
        """Record `event` as processed by `consumer` in this transaction.

        Returns False if it was processed before: the caller then does nothing. One
        statement (INSERT ... ON CONFLICT DO NOTHING RETURNING) both checks and claims. If
        two deliveries race on PostgreSQL, the second waits for the first's transaction:
        it gets False once the first commits, or the claim if the first rolled back."""
        connection = await self.session.connection()
        claimed = await connection.execute(
            _CLAIMS[connection.dialect.name], inbox_row(consumer, event)
        )
        return claimed.first() is not None

    async def commit(self) -> None:
        outbox, self._outbox = self._outbox, []
        try:
            if outbox:
                await self.session.flush()  # the change first: its constraint errors win
                await (await self.session.connection()).execute(
                    _OUTBOX_INSERT, outbox if len(outbox) > 1 else outbox[0]
                )
            if self._session is not None:
                await self._session.commit()
        except UniqueViolation:
            # Lost a race on a unique key: the unit of work is usable again (a caller that
            # answers with the winner's row reads it in a fresh transaction).
            await self.session.rollback()
            self._emitted = False
            raise
        if self._emitted and self._relay is not None:
            self._relay.notify()
        self._emitted = False

    async def rollback(self) -> None:
        self._outbox = []
        self._emitted = False
        if self._session is not None:
            await self._session.rollback()


class TenantUnitOfWork(SqlUnitOfWork):
    """A unit of work for one tenant: its repositories are built for `self.tenant`."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay | None,
        tenant: str,
    ) -> None:
        super().__init__(sessions, relay)
        self.tenant = tenant

    @classmethod
    def per_tenant(
        cls, sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay | None
    ) -> Callable[[str], Self]:
        """Units of work on `sessions` for any tenant; with `relay`, woken after each commit."""
        return partial(cls, sessions, relay)
