"""The invoice service's SQL unit of work: the kernel's (one transaction, outbox, inbox,
UniqueViolation) building this service's tenant-scoped repositories.

On PostgreSQL the two writes every invoice makes go out as one statement each
(adapters/postgres_writes.py): storing a new invoice with its pending record's end and its
outbox row, and keeping each peer event it receives with its inbox claim. On SQLite, and
inside a transaction already begun, they are the repositories' statements in the session's
transaction, as before.

A unit of work builds its session only when a repository first uses it, and sends its
hot-path statements on one pooled connection for its whole life while it has no session
(_HotPathConnection): a warm creation builds no session and checks out two connections,
one per unit of work.

Nothing a unit of work builds points back at it but weakly (_HotPathConnection,
_SessionOnFirstUse): a finished one is freed by its reference count at once, not left with
its repositories for the cycle collector (under load, hundreds of them waited for it)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from types import TracebackType
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.pool import PoolProxiedConnection
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.db import PostgresDriver, postgres_driver, raw_checkout
from billing_common.events import CloudEvent
from billing_common.outbox import (
    OutboxMessage,
    OutboxRelay,
    TenantUnitOfWork,
    inbox_row,
    outbox_row,
)
from invoice_service.adapters import invoice_rows as rows
from invoice_service.adapters import postgres_invoice_events, postgres_writes
from invoice_service.adapters.credit_notes_repository import (
    SqlCreditNoteRepository,
    SqlCustomerBalance,
)
from invoice_service.adapters.customer_settings_repository import SqlCustomerSettings
from invoice_service.adapters.invoices_repository import SqlInvoiceRepository
from invoice_service.adapters.number_series_repository import SqlNumberSeries
from invoice_service.adapters.pending_creations_repository import (
    SqlPendingCreations,
    pending_row,
)
from invoice_service.adapters.received_events_repository import SqlReceivedEventLog
from invoice_service.adapters.seller_cache import SellerCache
from invoice_service.adapters.sellers_repository import SqlSellerRepository
from invoice_service.domain.errors import ConcurrentModification
from invoice_service.domain.model import Invoice
from invoice_service.service_layer.ports import (
    CreditNoteRepository,
    CustomerBalance,
    CustomerSettingsRepository,
    InvoiceRepository,
    NumberSeries,
    PendingCreation,
    PendingCreations,
    ReceivedEvent,
    ReceivedEventLog,
    SellerRepository,
    StoredIdempotency,
    UnitOfWorkFactory,
)

_OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]
# Reads and decisions an event's change gets on PostgreSQL when other writes to the invoice
# keep landing between its read and its write; then it is retried as any failed delivery.
_EVENT_ATTEMPTS = 5


class SqlInvoiceUnitOfWork(TenantUnitOfWork):
    """Implements service_layer.ports.UnitOfWork."""

    invoices: InvoiceRepository
    numbers: NumberSeries
    received: ReceivedEventLog
    pending: PendingCreations
    sellers: SellerRepository
    credit_notes: CreditNoteRepository
    balances: CustomerBalance
    customer_settings: CustomerSettingsRepository

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        relay: OutboxRelay | None,
        tenant: str,
        seller_cache: SellerCache | None = None,
    ) -> None:
        super().__init__(sessions, relay, tenant)
        self._seller_cache = seller_cache  # this process's, shared by its units of work
        self._hot = _HotPathConnection(self)

    def _open(self) -> None:
        # Nothing here touches the session: the repositories get a stand-in that opens it on
        # their first use of it, so a unit of work whose statements all go to asyncpg never
        # builds one (building and closing it were ~4-5 % of the process's CPU per invoice).
        session = cast(AsyncSession, _SessionOnFirstUse(self))
        engine = self._engine
        self._dialect = engine.dialect if engine is not None else self.session.get_bind().dialect
        self._postgres = self._dialect.name == "postgresql"
        drivers = self._hot if self._postgres else None
        sellers = SqlSellerRepository(session, self.tenant, self._seller_cache, drivers)
        self.sellers = sellers
        self._invoices = SqlInvoiceRepository(
            session,
            self.tenant,
            sellers.observe_version if self._seller_cache else None,
            drivers,
        )
        self.invoices = self._invoices
        self.numbers = SqlNumberSeries(session, self.tenant)
        self._received = SqlReceivedEventLog(session, self.tenant)
        self.received = self._received
        self.pending = SqlPendingCreations(session, self.tenant, drivers, dialect=self._dialect)
        self.credit_notes = SqlCreditNoteRepository(session, self.tenant)
        self.balances = SqlCustomerBalance(session, self.tenant)
        self.customer_settings = SqlCustomerSettings(session, self.tenant)

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            # The session may check a connection out of the pool at any moment from now on:
            # hold none of the hot path's meanwhile, so a unit of work never waits for the
            # pool while keeping a connection from it (a full pool would deadlock).
            self._hot.let_go()
        return super().session

    def _drivers(self) -> AbstractAsyncContextManager[PostgresDriver | None]:
        """The asyncpg connection for a block of hot-path statements (PostgreSQL): see
        _HotPathConnection (which the repositories get as their `drivers`: a bound method of
        this unit of work would hold it in a cycle)."""
        return self._hot

    @staticmethod
    def _on_its_own(driver: PostgresDriver | None) -> PostgresDriver | None:
        """`driver` if a statement sent on it commits on its own: PostgreSQL, and nothing of
        this unit of work's transaction sent yet; else None."""
        return None if driver is None or driver.in_transaction() else driver

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._hot.let_go()
        await super().__aexit__(exc_type, exc, tb)

    async def commit(self) -> None:
        session = self._session
        if (
            not self._outbox
            and session is not None
            and not session.in_transaction()
            and not (session.new or session.dirty or session.deleted)
        ):
            # Nothing went through the session (every statement went to `_drivers`, each
            # committed): a session commit would only build and end an empty transaction.
            if self._emitted and self._relay is not None:
                self._relay.notify()
            self._emitted = False
            return
        await super().commit()

    async def start_creation(
        self, idempotency_key: str, pending: PendingCreation
    ) -> tuple[StoredIdempotency | None, bool]:
        async with self._hot as driver:
            if driver is not None:  # one statement: the lookup and, if it finds none, begin
                found, begun = await postgres_writes.lookup_and_begin(
                    driver, self._dialect, idempotency_key, pending_row(self.tenant, pending)
                )
        if driver is None:
            stored = await self._invoices.find_by_idempotency_key(idempotency_key)
            if stored is not None:
                return stored, False
            return None, await self.pending.begin(pending)
        return await self._invoices.stored(found), begun

    async def finish_creation(
        self,
        invoice: Invoice,
        *,
        idempotency_key: str,
        request_hash: str,
        event: CloudEvent,
        aggregate: str,
    ) -> bool:
        async with self._hot as hot:
            driver = self._on_its_own(hot)
            if driver is not None:
                rows: list[tuple[Table, dict[str, Any]]] = [
                    (table, row)
                    for table, table_rows in self._invoices.new_rows(
                        invoice, idempotency_key=idempotency_key, request_hash=request_hash
                    )
                    for row in table_rows
                ]
                rows.append((_OUTBOX, outbox_row(event, aggregate=aggregate)))
                stored = await postgres_writes.finish_creation(
                    driver,
                    self._dialect,
                    tenant=self.tenant,
                    invoice_id=invoice.id,
                    rows=rows,
                )
        if driver is None:
            await self.invoices.add(
                invoice, idempotency_key=idempotency_key, request_hash=request_hash
            )
            if not await self.pending.remove(invoice.id, unless_releasing=True):
                return False
            self.emit(event, aggregate=aggregate)
            await self.commit()
            return True
        if not stored:
            return False
        self._emitted = True  # written and committed: the commit below wakes the relay
        await self.commit()
        return True

    async def keep_event(self, consumer: str, event: CloudEvent, kept: ReceivedEvent) -> bool:
        async with self._hot as hot:
            driver = self._on_its_own(hot)
            if driver is not None:
                return await postgres_writes.keep_event(
                    driver,
                    self._dialect,
                    claim=inbox_row(consumer, event),
                    received=self._received.row(kept),
                )
        if not await self.claim_event(consumer, event):
            return False
        await self.received.add(kept)
        await self.commit()
        return True

    async def apply_event(
        self,
        consumer: str,
        event: CloudEvent,
        invoice_id: str,
        change: Callable[[Invoice | None], None],
    ) -> bool:
        async with self._hot as hot:
            driver = self._on_its_own(hot)
            if driver is not None:
                return await self._apply_on_its_own(driver, consumer, event, invoice_id, change)
        if not await self.claim_event(consumer, event):
            return False
        invoice = await self.invoices.get(invoice_id, for_update=True)
        change(invoice)
        if invoice is not None:
            await self.invoices.save(invoice)
        await self.commit()
        return True

    async def _apply_on_its_own(
        self,
        driver: PostgresDriver,
        consumer: str,
        event: CloudEvent,
        invoice_id: str,
        change: Callable[[Invoice | None], None],
    ) -> bool:
        """apply_event on PostgreSQL: one snapshot read, one version-guarded write."""
        dialect = self._dialect
        for _ in range(_EVENT_ATTEMPTS):
            found = await postgres_invoice_events.read(
                driver,
                consumer=consumer,
                event_id=event.id,
                tenant=self.tenant,
                invoice_id=invoice_id,
            )
            if found.seen:
                return False
            invoice = None
            if found.header is not None:
                invoice = self._invoices.loaded(
                    found.header,
                    lines=found.lines,
                    taxes=found.taxes,
                    discounts=found.discounts,
                    history=found.history,
                    payments=found.payments,
                )
            self._outbox, self._emitted = [], False  # what an earlier attempt emitted
            change(invoice)
            changes = None if invoice is None else self._invoices.changes(invoice)
            outbox, self._outbox = self._outbox, []
            try:
                written = await postgres_invoice_events.write(
                    driver,
                    dialect,
                    tenant=self.tenant,
                    invoice_id=invoice_id,
                    loaded_version=changes.loaded_version if changes else None,
                    header=changes.header if changes else None,
                    inserts=[
                        (rows.HISTORY, changes.history if changes else []),
                        (rows.PAYMENTS, changes.payments if changes else []),
                        (postgres_invoice_events.INBOX, [inbox_row(consumer, event)]),
                        (_OUTBOX, outbox),
                    ],
                )
            except postgres_invoice_events.ClaimedMeanwhile:
                return False
            if written:
                if invoice is not None:
                    self._invoices.saved(invoice)
                self._emitted = bool(outbox)  # written and committed: commit wakes the relay
                await self.commit()
                return True
        raise ConcurrentModification(invoice_id)


class _SessionOnFirstUse:
    """What the repositories hold as the unit of work's session: the session is opened (the
    unit of work's `session`) on the first attribute a repository reads of it, not when the
    repositories are built. It holds the unit of work weakly (see the module's docstring)."""

    __slots__ = ("_uow",)

    def __init__(self, uow: SqlInvoiceUnitOfWork) -> None:
        self._uow = weakref.ref(uow)

    def __getattr__(self, name: str) -> Any:
        return getattr(_alive(self._uow).session, name)


def _alive(uow: weakref.ref[SqlInvoiceUnitOfWork]) -> SqlInvoiceUnitOfWork:
    """The unit of work a repository's stand-in belongs to; a repository is used only within
    its unit of work."""
    unit = uow()
    if unit is None:
        raise RuntimeError("a repository used after its unit of work was freed")
    return unit


_HELD = "held"


class _HotPathConnection:
    """Where a unit of work's hot-path statements go, as the async context manager around
    each block of them: None on SQLite; on PostgreSQL,

    - with no session opened: ONE pooled asyncpg connection, checked out by the first block
      and kept for the blocks after it until the unit of work ends (or opens its session),
      each statement committing on its own. A creation's idempotency lookup and pending
      record share it: one pool checkout and checkin where there were two (each pair ~1 %
      of the process's CPU per invoice);
    - with a session: the kernel's choice (`postgres`): the session's connection in its
      transaction once it has begun one, else a pooled one for the block only.

    Nothing is kept while a session exists, so a unit of work never waits for the pool (the
    session's checkout) while holding a connection of it: a full pool cannot deadlock.

    Called, it is itself: the `drivers` the repositories get. It holds its unit of work
    weakly (see the module's docstring)."""

    __slots__ = ("_blocks", "_driver", "_held", "_in_use", "_uow")

    def __init__(self, uow: SqlInvoiceUnitOfWork) -> None:
        self._uow = weakref.ref(uow)
        self._held: PoolProxiedConnection | None = None
        self._driver: PostgresDriver | None = None
        self._in_use = 0  # blocks on the held connection now open
        # Per open block: the kernel's block it delegates to, _HELD, or None (no connection
        # of its own: SQLite, or the session's).
        self._blocks: list[AbstractAsyncContextManager[PostgresDriver] | str | None] = []

    def __call__(self) -> _HotPathConnection:
        return self

    async def __aenter__(self) -> PostgresDriver | None:
        uow = _alive(self._uow)
        if not uow._postgres:
            self._blocks.append(None)
            return None
        if not uow.postgres_dialect:
            # Sessions bound to no engine of their own: the session's connection is the one.
            session_driver = await postgres_driver(uow.session)
            self._blocks.append(None)
            return session_driver
        engine = uow._engine
        if uow._session is not None or engine is None:
            block = uow.postgres()
            driver = await block.__aenter__()
            self._blocks.append(block)
            return driver
        if self._driver is None:
            held = self._held = await raw_checkout(engine)
            self._driver = PostgresDriver(held, held.driver_connection)
        self._blocks.append(_HELD)
        self._in_use += 1
        return self._driver

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        block = self._blocks.pop()
        if block is None:
            return None
        if block is not _HELD:
            return await block.__aexit__(exc_type, exc, tb)  # type: ignore[union-attr]
        self._in_use -= 1
        if exc is not None:
            # A statement failed: start the next block on a fresh connection; one that was
            # cancelled mid-statement is in an unknown state, never reused.
            self.let_go(discard=not isinstance(exc, Exception))
        elif _alive(self._uow)._session is not None:
            self.let_go()  # the session was opened meanwhile (see `let_go`)
        return None

    def let_go(self, *, discard: bool = False) -> None:
        """Give the held connection back to the pool (closed instead with `discard`); kept
        until its blocks end if one is open."""
        held = self._held
        if held is None or self._in_use:
            return
        self._held = self._driver = None
        if discard:
            held.invalidate()
        # Nothing was begun on it, so the pool's rollback-on-return sends nothing.
        held.close()


def uow_factory(
    sessions: async_sessionmaker[AsyncSession],
    relay: OutboxRelay | None,
    *,
    cache_sellers: bool = True,
) -> UnitOfWorkFactory:
    """Units of work per tenant; with `cache_sellers`, sharing one SellerCache (one per
    factory: per database, so two databases never share a copy)."""
    cache = SellerCache() if cache_sellers else None
    return partial(SqlInvoiceUnitOfWork, sessions, relay, seller_cache=cache)
