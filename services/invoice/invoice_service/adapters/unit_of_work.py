"""The invoice service's SQL unit of work: the kernel's (one transaction, outbox, inbox,
UniqueViolation) building this service's tenant-scoped repositories.

On PostgreSQL the two writes every invoice makes go out as one statement each
(adapters/postgres_writes.py): storing a new invoice with its pending record's end and its
outbox row, and keeping each peer event it receives with its inbox claim. On SQLite, and
inside a transaction already begun, they are the repositories' statements in the session's
transaction, as before."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.db import PostgresDriver, postgres_driver
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
from invoice_service.adapters.pending_creations_repository import SqlPendingCreations
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
    PendingCreations,
    ReceivedEvent,
    ReceivedEventLog,
    SellerRepository,
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

    def _open(self) -> None:
        self._postgres = self.session.get_bind().dialect.name == "postgresql"
        drivers = self._drivers if self._postgres else None
        sellers = SqlSellerRepository(self.session, self.tenant, self._seller_cache, drivers)
        self.sellers = sellers
        self._invoices = SqlInvoiceRepository(
            self.session,
            self.tenant,
            sellers.observe_version if self._seller_cache else None,
            drivers,
        )
        self.invoices = self._invoices
        self.numbers = SqlNumberSeries(self.session, self.tenant)
        self._received = SqlReceivedEventLog(self.session, self.tenant)
        self.received = self._received
        self.pending = SqlPendingCreations(self.session, self.tenant, drivers)
        self.credit_notes = SqlCreditNoteRepository(self.session, self.tenant)
        self.balances = SqlCustomerBalance(self.session, self.tenant)
        self.customer_settings = SqlCustomerSettings(self.session, self.tenant)

    @contextlib.asynccontextmanager
    async def _drivers(self) -> AsyncIterator[PostgresDriver | None]:
        """The asyncpg connection for the block's hot-path statements (PostgreSQL): the
        session's, in its transaction, once the session has begun one; otherwise one of the
        pool's for this block only (`postgres`), so that a unit of work whose statements all
        go here never checks out a connection for its session nor commits it (the session's
        connection, commit and close were ~15 % of the process's CPU per invoice)."""
        if not self._postgres:
            yield None
            return
        if not self.postgres_dialect:
            # Sessions bound to no engine of their own: the session's connection is the one.
            yield await postgres_driver(self.session)
            return
        # The kernel's choice: the session's connection once it began, else a pooled one.
        async with self.postgres() as driver:
            yield driver

    @contextlib.asynccontextmanager
    async def _on_its_own(self) -> AsyncIterator[PostgresDriver | None]:
        """The asyncpg connection if a statement sent on it commits on its own: PostgreSQL,
        and nothing of this unit of work's transaction sent yet; else None."""
        async with self._drivers() as driver:
            yield None if driver is None or driver.in_transaction() else driver

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

    async def finish_creation(
        self,
        invoice: Invoice,
        *,
        idempotency_key: str,
        request_hash: str,
        event: CloudEvent,
        aggregate: str,
    ) -> bool:
        async with self._on_its_own() as driver:
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
                    self.session.get_bind().dialect,
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
        async with self._on_its_own() as driver:
            if driver is not None:
                return await postgres_writes.keep_event(
                    driver,
                    self.session.get_bind().dialect,
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
        async with self._on_its_own() as driver:
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
        dialect = self.session.get_bind().dialect
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
