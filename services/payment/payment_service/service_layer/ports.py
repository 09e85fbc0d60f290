"""The ports the payment use cases depend on, and the records they exchange through them.

Adapters implement them (adapters/), bootstrap wires them; the gateway port itself is
domain/gateway.py. Nothing here knows SQL, HTTP or a framework.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from billing_common.events import CloudEvent
from payment_service.domain.model import InvoiceSnapshot, PayableInvoice, Payment, PaymentStatus


class ConcurrentWrite(Exception):
    """A request lost a race on a unique key (the commit raised the kernel's
    UniqueViolation) and the winner's result cannot be found either: send it again."""


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """What an Idempotency-Key was first used for: the operation, the fingerprint of the
    request and the resource (payment or refund) it created."""

    key: str
    operation: str
    request_hash: str
    resource_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class PaymentLocation:
    """Where a gateway reference points: the tenant, the payment and (for a refund) the
    refund. Webhooks name references, not tenants."""

    tenant: str
    payment_id: str
    refund_id: str | None = None


class StalledAttempts(Protocol):
    """Across tenants: gateway attempts whose lease ran out with no outcome recorded."""

    async def payments(self, now: datetime, limit: int) -> list[PaymentLocation]:
        """Pending payments, not waiting for a webhook, whose attempt's lease ended."""

    async def refunds(self, now: datetime, limit: int) -> list[PaymentLocation]:
        """The same for refunds (the location names the refund)."""


class PaymentRepository(Protocol):
    """One tenant's payments, refunds, payable invoices and Idempotency-Keys."""

    tenant: str

    async def get_invoice(
        self, invoice_id: str, *, for_update: bool = False
    ) -> PayableInvoice | None:
        """`for_update` serialises the payments of one invoice until commit."""

    async def save_invoice(self, invoice: PayableInvoice) -> None: ...

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        """The payment with its refunds and history; `for_update` serialises its changes."""

    async def by_reference(self, gateway: str, reference: str) -> Payment | None: ...

    async def for_invoice(self, invoice_id: str) -> list[Payment]:
        """Every payment of the invoice with its refunds (no history): enough for a balance."""

    async def page(
        self,
        *,
        invoice_id: str | None,
        status: PaymentStatus | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Payment], int]:
        """Newest first; the page and the number of matching payments."""

    async def add(self, payment: Payment) -> None: ...

    async def save(self, payment: Payment) -> None:
        """Write back a payment loaded from this repository, its refunds and new history."""

    async def idempotency_record(self, key: str) -> IdempotencyRecord | None: ...

    def add_idempotency_record(self, record: IdempotencyRecord) -> None:
        """Stored at commit; a second record for the key makes the commit raise UniqueViolation."""


class WebhookRepository(Protocol):
    """Across tenants: a webhook names a gateway reference, which names one payment/refund."""

    async def seen(self, gateway: str, event_id: str) -> bool: ...

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
        """Stored at commit; the event recorded twice makes the commit raise UniqueViolation."""

    async def payment_by_reference(
        self, gateway: str, reference: str
    ) -> PaymentLocation | None: ...

    async def refund_by_reference(self, gateway: str, reference: str) -> PaymentLocation | None: ...

    async def payment_of_tenant(
        self, gateway: str, tenant: str, payment_id: str
    ) -> PaymentLocation | None: ...

    async def refund_of_tenant(
        self, gateway: str, tenant: str, refund_id: str
    ) -> PaymentLocation | None: ...


class PaymentUnitOfWork(Protocol):
    """One transaction: the repositories, the outbox (`emit`) and the inbox (`claim_event`).
    Leaving it without `commit` rolls everything back."""

    @property
    def webhooks(self) -> WebhookRepository:
        """The cross-tenant repository webhooks use."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def payments(self, tenant: str) -> PaymentRepository:
        """The tenant's repository: every query it makes is filtered by the tenant."""

    def emit(self, event: CloudEvent, *, aggregate: str) -> None:
        """Put the event in the outbox, in this transaction."""

    async def claim_event(self, consumer: str, event: CloudEvent) -> bool:
        """Record the event as processed by `consumer`; False if it was processed before."""

    async def claim_new_invoice(
        self, consumer: str, event: CloudEvent, tenant: str, invoice: PayableInvoice
    ) -> bool:
        """Claim the event for `consumer` and add `invoice` (new), committed at once, where
        that can be done in one step: True if done. False, with nothing written, when the
        invoice is known here already, the event was claimed before, or this unit of work
        has no such step: the caller then claims and applies it the general way."""

    async def commit(self) -> None:
        """Raise billing_common.uniqueness.UniqueViolation when a unique key was taken
        meanwhile (rolled back then)."""


UnitOfWorkFactory = Callable[[], PaymentUnitOfWork]


class InvoiceDirectory(Protocol):
    async def lookup(self, tenant: str, invoice_id: str) -> InvoiceSnapshot | None:
        """The invoice as the invoice service knows it now; None if it does not exist.
        Raise billing_common.ports.PeerUnavailable when the invoice service cannot answer."""


class SandboxWebhooks(Protocol):
    """Builds the body the sandbox gateway would send when a pending charge settles (the
    sandbox confirm endpoint posts it, signed, to our own webhook endpoint)."""

    name: str

    def settlement_event(
        self,
        *,
        reference: str,
        outcome: Literal["succeeded", "failed"],
        created: int,
        failure_code: str | None = None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """Per gateway, the secret its webhooks are signed with (absent: refused), and how far
    from now a signature may be dated."""

    secrets: Mapping[str, str]
    tolerance_seconds: int = 300
