"""In-memory implementations of the payment service's ports (service_layer/ports.py), for
use-case tests that need no database: cosmicpython's FakeRepository and FakeUnitOfWork.

They keep the guarantees the use cases rely on from the SQL unit of work: nothing a unit
of work wrote is visible before `commit`, leaving without `commit` discards it, a loaded
payment is a copy (changing it changes nothing until `save`), and a commit that would take
a unique key someone else committed first (Idempotency-Key, webhook event, inbox record)
raises the kernel's UniqueViolation and stores nothing. `InMemoryDatabase.before_commit` lets
a test run a rival request at the exact moment a commit happens, which is how the lost race
is staged.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Self

from billing_common.events import CloudEvent
from billing_common.uniqueness import UniqueViolation
from payment_service.domain.model import PayableInvoice, Payment, PaymentStatus, RefundStatus
from payment_service.service_layer.ports import (
    IdempotencyRecord,
    PaymentLocation,
)


@dataclass
class WebhookRecord:
    event_type: str
    outcome: str
    received_at: datetime
    location: PaymentLocation | None


@dataclass
class InMemoryDatabase:
    """What the committed transactions left behind, shared by every unit of work."""

    invoices: dict[tuple[str, str], PayableInvoice] = field(default_factory=dict)
    payments: dict[tuple[str, str], Payment] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], IdempotencyRecord] = field(default_factory=dict)
    webhooks: dict[tuple[str, str], WebhookRecord] = field(default_factory=dict)
    inbox: set[tuple[str, str]] = field(default_factory=set)
    outbox: list[CloudEvent] = field(default_factory=list)
    commits: int = 0
    # Called once, just before the next commit is checked and applied (then cleared).
    before_commit: Callable[[], Awaitable[None]] | None = None

    def payment(self, tenant: str, payment_id: str) -> Payment:
        return copy.deepcopy(self.payments[(tenant, payment_id)])


@dataclass
class _Changes:
    invoices: dict[tuple[str, str], PayableInvoice] = field(default_factory=dict)
    payments: dict[tuple[str, str], Payment] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], IdempotencyRecord] = field(default_factory=dict)
    webhooks: dict[tuple[str, str], WebhookRecord] = field(default_factory=dict)
    inbox: set[tuple[str, str]] = field(default_factory=set)
    outbox: list[CloudEvent] = field(default_factory=list)

    def taken_out(self) -> _Changes:
        """The changes so far, leaving this (shared with the repositories) empty."""
        out = _Changes(
            dict(self.invoices),
            dict(self.payments),
            dict(self.idempotency),
            dict(self.webhooks),
            set(self.inbox),
            list(self.outbox),
        )
        self.clear()
        return out

    def clear(self) -> None:
        for part in (self.invoices, self.payments, self.idempotency, self.webhooks, self.inbox):
            part.clear()
        self.outbox.clear()


class FakePaymentRepository:
    def __init__(self, db: InMemoryDatabase, changes: _Changes, tenant: str) -> None:
        self._db = db
        self._changes = changes
        self.tenant = tenant

    def _visible_payments(self) -> dict[tuple[str, str], Payment]:
        return {**self._db.payments, **self._changes.payments}

    async def get_invoice(
        self, invoice_id: str, *, for_update: bool = False
    ) -> PayableInvoice | None:
        key = (self.tenant, invoice_id)
        found = self._changes.invoices.get(key) or self._db.invoices.get(key)
        return copy.deepcopy(found)

    async def save_invoice(self, invoice: PayableInvoice) -> None:
        self._changes.invoices[(self.tenant, invoice.invoice_id)] = copy.deepcopy(invoice)

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        return copy.deepcopy(self._visible_payments().get((self.tenant, payment_id)))

    async def by_reference(self, gateway: str, reference: str) -> Payment | None:
        for (tenant, _), payment in self._visible_payments().items():
            if (tenant, payment.gateway, payment.gateway_reference) == (
                self.tenant,
                gateway,
                reference,
            ):
                return copy.deepcopy(payment)
        return None

    async def for_invoice(self, invoice_id: str) -> list[Payment]:
        found = [
            p
            for (tenant, _), p in self._visible_payments().items()
            if tenant == self.tenant and p.invoice_id == invoice_id
        ]
        return copy.deepcopy(sorted(found, key=lambda p: (p.created_at, p.id)))

    async def page(
        self,
        *,
        invoice_id: str | None,
        status: PaymentStatus | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Payment], int]:
        found = [
            p
            for (tenant, _), p in self._visible_payments().items()
            if tenant == self.tenant
            and (invoice_id is None or p.invoice_id == invoice_id)
            and (status is None or p.status is status)
        ]
        found.sort(key=lambda p: (p.created_at, p.id), reverse=True)
        return copy.deepcopy(found[offset : offset + limit]), len(found)

    async def add(self, payment: Payment) -> None:
        await self.save(payment)

    async def save(self, payment: Payment) -> None:
        stored = copy.deepcopy(payment)
        stored.new_history.clear()
        payment.new_history.clear()
        self._changes.payments[(self.tenant, payment.id)] = stored

    async def idempotency_record(self, key: str) -> IdempotencyRecord | None:
        return self._db.idempotency.get((self.tenant, key)) or self._changes.idempotency.get(
            (self.tenant, key)
        )

    def add_idempotency_record(self, record: IdempotencyRecord) -> None:
        self._changes.idempotency[(self.tenant, record.key)] = record


class FakeWebhookRepository:
    def __init__(self, db: InMemoryDatabase, changes: _Changes) -> None:
        self._db = db
        self._changes = changes

    async def seen(self, gateway: str, event_id: str) -> bool:
        key = (gateway, event_id)
        return key in self._db.webhooks or key in self._changes.webhooks

    def record(
        self,
        *,
        gateway: str,
        event_id: str,
        event_type: str,
        outcome: str,
        received_at: datetime,
        location: PaymentLocation | None,
    ) -> None:
        self._changes.webhooks[(gateway, event_id)] = WebhookRecord(
            event_type, outcome, received_at, location
        )

    def _payments(self) -> dict[tuple[str, str], Payment]:
        return {**self._db.payments, **self._changes.payments}

    async def payment_by_reference(self, gateway: str, reference: str) -> PaymentLocation | None:
        for (tenant, payment_id), p in self._payments().items():
            if p.gateway == gateway and p.gateway_reference == reference:
                return PaymentLocation(tenant, payment_id)
        return None

    async def refund_by_reference(self, gateway: str, reference: str) -> PaymentLocation | None:
        for (tenant, payment_id), p in self._payments().items():
            for refund in p.refunds:
                if p.gateway == gateway and refund.gateway_reference == reference:
                    return PaymentLocation(tenant, payment_id, refund.id)
        return None

    async def payment_of_tenant(
        self, gateway: str, tenant: str, payment_id: str
    ) -> PaymentLocation | None:
        p = self._payments().get((tenant, payment_id))
        return PaymentLocation(tenant, payment_id) if p and p.gateway == gateway else None

    async def refund_of_tenant(
        self, gateway: str, tenant: str, refund_id: str
    ) -> PaymentLocation | None:
        for (owner, payment_id), p in self._payments().items():
            if (
                owner == tenant
                and p.gateway == gateway
                and any(r.id == refund_id for r in p.refunds)
            ):
                return PaymentLocation(tenant, payment_id, refund_id)
        return None


class FakeUnitOfWork:
    webhooks: FakeWebhookRepository

    def __init__(self, db: InMemoryDatabase) -> None:
        self._db = db
        self._changes = _Changes()
        self.committed = False

    async def __aenter__(self) -> Self:
        self._changes = _Changes()
        self.webhooks = FakeWebhookRepository(self._db, self._changes)
        self._repositories: dict[str, FakePaymentRepository] = {}
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._changes.clear()  # what was not committed is gone

    def payments(self, tenant: str) -> FakePaymentRepository:
        repository = self._repositories.get(tenant)
        if repository is None:
            repository = FakePaymentRepository(self._db, self._changes, tenant)
            self._repositories[tenant] = repository
        return repository

    def emit(self, event: CloudEvent, *, aggregate: str) -> None:
        self._changes.outbox.append(event)

    async def claim_event(self, consumer: str, event: CloudEvent) -> bool:
        key = (consumer, event.id)
        if key in self._db.inbox or key in self._changes.inbox:
            return False
        self._changes.inbox.add(key)
        return True

    async def claim_new_invoice(
        self, consumer: str, event: CloudEvent, tenant: str, invoice: PayableInvoice
    ) -> bool:
        return False  # no one-step write here: the use case takes the general path

    async def commit(self) -> None:
        hook, self._db.before_commit = self._db.before_commit, None
        if hook is not None:
            await hook()
        changes = self._changes.taken_out()
        taken = (
            changes.idempotency.keys() & self._db.idempotency.keys()
            or changes.webhooks.keys() & self._db.webhooks.keys()
            or changes.inbox & self._db.inbox
        )
        if taken:
            raise UniqueViolation(constraint=str(sorted(taken)[0]))
        self._db.invoices.update(changes.invoices)
        self._db.payments.update(changes.payments)
        self._db.idempotency.update(changes.idempotency)
        self._db.webhooks.update(changes.webhooks)
        self._db.inbox |= changes.inbox
        self._db.outbox.extend(changes.outbox)
        self._db.commits += 1
        self.committed = True


class FakeStalledAttempts:
    """The recovery sweep's query over what the committed transactions left behind."""

    def __init__(self, db: InMemoryDatabase) -> None:
        self._db = db

    async def payments(self, now: datetime, limit: int) -> list[PaymentLocation]:
        found = [
            (p.lease_until, PaymentLocation(tenant, p.id))
            for (tenant, _), p in self._db.payments.items()
            if p.status is PaymentStatus.PENDING and p.gateway_reference is None and p.stalled(now)
        ]
        return [location for _, location in sorted(found, key=lambda f: f[0] or now)][:limit]

    async def refunds(self, now: datetime, limit: int) -> list[PaymentLocation]:
        found = [
            (r.lease_until, PaymentLocation(tenant, p.id, r.id))
            for (tenant, _), p in self._db.payments.items()
            for r in p.refunds
            if r.status is RefundStatus.PENDING and r.gateway_reference is None and r.stalled(now)
        ]
        return [location for _, location in sorted(found, key=lambda f: f[0] or now)][:limit]
