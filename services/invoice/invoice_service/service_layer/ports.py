"""The ports the invoice use cases depend on. Adapters implement them; bootstrap wires them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Protocol, Self

from billing_common.events import CloudEvent
from invoice_service.domain.credit_notes import CreditNote
from invoice_service.domain.einvoicing import CustomerEInvoiceSettings, EInvoiceFormat
from invoice_service.domain.languages import DEFAULT_LANGUAGE
from invoice_service.domain.model import (
    Customer,
    Invoice,
    InvoiceStatus,
    InvoiceSummary,
    PriceMode,
)
from invoice_service.domain.pricing import DiscountResult, TaxResult
from invoice_service.domain.sellers import DocumentType, Seller, SellerSnapshot


@dataclass(frozen=True, slots=True)
class TaxLineRequest:
    id: str
    description: str
    unit_price: Decimal
    quantity: Decimal
    category: str


class TaxPort(Protocol):
    async def calculate(
        self,
        *,
        tenant: str,
        currency: str,
        customer: Customer,
        price_mode: PriceMode,
        on: date,
        reference: str,
        lines: Sequence[TaxLineRequest],
        seller: SellerSnapshot | None = None,
    ) -> TaxResult:
        """`seller`: who supplies (its country, region and VAT id are sent; None: the tax
        service takes the supply as domestic). Raise PeerRejected for a 4xx the client can
        act on, PeerUnavailable when down."""

    async def discard(self, *, tenant: str, reference: str) -> None:
        """Remove the calculations made for `reference` (an invoice never stored)."""


class DiscountPort(Protocol):
    async def quote(
        self,
        *,
        tenant: str,
        customer: Customer,
        currency: str,
        amount: Decimal,
        coupon_codes: Sequence[str],
        reference: str,
    ) -> DiscountResult: ...

    async def redeem(
        self,
        *,
        tenant: str,
        idempotency_key: str,
        customer: Customer,
        currency: str,
        amount: Decimal,
        coupon_codes: Sequence[str],
        reference: str,
    ) -> DiscountResult: ...

    async def release(self, *, tenant: str, idempotency_key: str) -> None:
        """Give back the redemption made under `idempotency_key` (idempotent: nothing to
        release is fine). Raise PeerUnavailable when the discount service cannot answer."""


@dataclass(frozen=True, slots=True)
class PendingCreation:
    """An invoice creation that redeemed a discount and has not stored its invoice yet."""

    tenant_id: str
    invoice_id: str
    redemption_key: str
    started_at: datetime
    releasing: bool = False


class PendingCreations(Protocol):
    """Tenant-scoped record of creations in progress (see creation.create_invoice)."""

    async def get(self, invoice_id: str, *, for_update: bool = False) -> PendingCreation | None: ...

    async def put(self, pending: PendingCreation) -> None: ...

    async def begin(self, pending: PendingCreation) -> bool:
        """Record a creation (taking over an earlier attempt's record); False, writing
        nothing, if that earlier record is being released."""

    async def remove(self, invoice_id: str, *, unless_releasing: bool = False) -> bool:
        """Delete the record; False if there was none (or, with `unless_releasing`, it is
        being released)."""


class AbandonedCreations(Protocol):
    async def older_than(self, moment: datetime, limit: int) -> list[PendingCreation]:
        """Creations of every tenant started before `moment` and still recorded."""


class PdfRenderer(Protocol):
    def render(self, html: str) -> bytes:
        """Blocking (it renders, or waits for a worker process that does): call it in a
        worker thread. Raise PdfUnavailable when rendering is impossible on this machine,
        PdfRenderTimeout when the render ran past its time limit."""


class DocumentRenderer(Protocol):
    """Writes the documents from the invoice's (and credit note's) plain data: the HTML and,
    from it, the PDF. The production adapter does it in worker processes, so the API process
    loads neither the templates' engine, the locale data nor the PDF library. Blocking: call
    it in a worker thread. Raises PdfUnavailable, PdfRenderTimeout as PdfRenderer does."""

    def invoice_html(self, invoice: Invoice) -> str: ...

    def invoice_pdf(self, invoice: Invoice) -> bytes: ...

    def credit_note_pdf(self, note: CreditNote, invoice: Invoice) -> bytes: ...


class InvoiceHtml(Protocol):
    """Renders the invoice document; `version` names the template, so a new template
    invalidates cached documents."""

    version: str
    stylesheet: str

    def render(self, invoice: Invoice, *, embed_stylesheet: bool = True) -> str:
        """The HTML document; with embed_stylesheet=False it leaves out `stylesheet`, for a
        PDF renderer that applies the (pre-parsed) stylesheet itself."""
        ...

    def title(self, invoice: Invoice) -> str:
        """The document's title in its language ("Rechnung INV-000001"): the HTML <title>
        and the PDF's metadata."""
        ...


@dataclass(frozen=True, slots=True)
class InvoiceQuery:
    status: InvoiceStatus | None = None
    customer_id: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    issued_from: datetime | None = None
    issued_to: datetime | None = None
    limit: int = 50
    # Keyset position: rows strictly older than (created_at, id) in the newest-first order.
    after: tuple[datetime, str] | None = None


@dataclass(frozen=True, slots=True)
class StoredIdempotency:
    invoice: Invoice
    request_hash: str


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    event_id: str
    event_type: str
    source: str
    reference: str | None
    subject: str | None
    occurred_at: datetime
    received_at: datetime
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DocumentStamp:
    """What an invoice document's ETag and file name depend on, read without the lines,
    taxes, payments and history that rendering needs."""

    tenant_id: str
    invoice_id: str
    number: str | None
    version: int
    # The documents' language: a document in another language is another document.
    language: str = DEFAULT_LANGUAGE

    @classmethod
    def of(cls, invoice: Invoice) -> DocumentStamp:
        return cls(invoice.tenant_id, invoice.id, invoice.number, invoice.version, invoice.language)


class InvoiceRepository(Protocol):
    async def get(self, invoice_id: str, *, for_update: bool = False) -> Invoice | None: ...

    async def stamp(self, invoice_id: str) -> DocumentStamp | None:
        """The invoice's document stamp: one primary-key read of the header row."""

    async def find_by_idempotency_key(self, key: str) -> StoredIdempotency | None: ...

    async def add(self, invoice: Invoice, *, idempotency_key: str, request_hash: str) -> None: ...

    async def save(self, invoice: Invoice) -> None:
        """Write the changed header and the history and payments appended since loading.
        Raise ConcurrentModification if another transaction saved it meanwhile."""

    async def list(self, query: InvoiceQuery) -> list[InvoiceSummary]:
        """Newest first by (created_at, id), at most `query.limit`."""


class NumberSeries(Protocol):
    async def next_sequence(
        self,
        series: str,
        *,
        seller_id: str | None = None,
        document_type: DocumentType = DocumentType.INVOICE,
    ) -> int:
        """Take the next number of (seller, series, document type) in the current
        transaction (gapless: a rollback gives it back). Without a seller: the tenant's
        series of invoices as before sellers existed."""


@dataclass(frozen=True, slots=True)
class SellerQuery:
    active: bool | None = None
    limit: int = 50
    # Keyset position: rows after (created_at, id) in the oldest-first order.
    after: tuple[datetime, str] | None = None


class SellerRepository(Protocol):
    """Tenant-scoped sellers. One of them may be the tenant's default."""

    async def get(self, seller_id: str, *, for_update: bool = False) -> Seller | None: ...

    async def default(self) -> Seller | None: ...

    async def add(self, seller: Seller) -> None: ...

    async def save(self, seller: Seller, *, expected_version: int) -> None:
        """Raise ConcurrentModification if it changed since `expected_version`."""

    async def set_default(self, seller_id: str | None) -> None:
        """Make this seller the tenant's default (None: no default)."""

    async def list(self, query: SellerQuery) -> list[Seller]: ...

    async def in_use(self, seller_id: str) -> bool:
        """True if an invoice names the seller."""

    async def delete(self, seller_id: str) -> None: ...


class ReceivedEventLog(Protocol):
    async def add(self, event: ReceivedEvent) -> None: ...

    async def for_reference(self, reference: str) -> list[ReceivedEvent]: ...


@dataclass(frozen=True, slots=True)
class StoredCreditNote:
    credit_note: CreditNote
    request_hash: str


class CreditNoteRepository(Protocol):
    async def get(self, credit_note_id: str, *, for_update: bool = False) -> CreditNote | None: ...

    async def for_invoice(self, invoice_id: str) -> list[CreditNote]:
        """The invoice's credit notes, oldest first."""

    async def find_by_idempotency_key(self, key: str) -> StoredCreditNote | None: ...

    async def add(self, note: CreditNote, *, idempotency_key: str, request_hash: str) -> None: ...

    async def save(self, note: CreditNote) -> None:
        """Write its status, settlement and refunds; ConcurrentModification if it changed."""


@dataclass(frozen=True, slots=True)
class BalanceEntry:
    customer_id: str
    currency: str
    amount: Decimal
    credit_note_id: str | None
    description: str
    at: datetime


class CustomerBalance(Protocol):
    """The customer balance ledger (positive: owed to the customer)."""

    async def add(self, entry: BalanceEntry) -> None: ...

    async def balance(self, customer_id: str) -> dict[str, Decimal]: ...

    async def entries(self, customer_id: str) -> list[BalanceEntry]: ...


class CustomerSettingsRepository(Protocol):
    """Per-customer settings of the tenant (the default e-invoice format)."""

    async def get(self, customer_id: str) -> CustomerEInvoiceSettings | None: ...

    async def put(self, settings: CustomerEInvoiceSettings) -> None:
        """Insert or replace the customer's settings."""


class EInvoiceRequirements(Protocol):
    """What an e-invoice format needs that a document lacks (pure, no I/O): the writer's
    own pre-flight checks, asked at finalization to know which e-invoice can be offered."""

    def missing(self, invoice: Invoice, fmt: EInvoiceFormat) -> list[str]:
        """Empty: the finalized `invoice` can be written in `fmt`."""
        ...


class UnitOfWork(Protocol):
    """One transaction of one tenant: its repositories, the outbox (events emitted inside
    commit atomically with the change) and the inbox (events claimed once per consumer).
    Leaving it without `commit` rolls back."""

    invoices: InvoiceRepository
    numbers: NumberSeries
    received: ReceivedEventLog
    pending: PendingCreations
    sellers: SellerRepository
    credit_notes: CreditNoteRepository
    balances: CustomerBalance
    customer_settings: CustomerSettingsRepository

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def emit(self, event: CloudEvent, *, aggregate: str) -> None: ...

    async def claim_event(self, consumer: str, event: CloudEvent) -> bool:
        """False if `consumer` processed `event` before (then do nothing)."""
        ...

    async def commit(self) -> None: ...

    async def start_creation(
        self, idempotency_key: str, pending: PendingCreation
    ) -> tuple[StoredIdempotency | None, bool]:
        """The invoice stored with `idempotency_key`, if there is one (then nothing is
        written), else None and `pending.begin(pending)`'s answer: the idempotency lookup and
        the pending record at once (one statement on PostgreSQL, committing on its own when
        this unit of work has begun no transaction). Commit afterwards, as after `begin`."""
        ...

    async def finish_creation(
        self,
        invoice: Invoice,
        *,
        idempotency_key: str,
        request_hash: str,
        event: CloudEvent,
        aggregate: str,
    ) -> bool:
        """Store a new invoice, end its pending-creation record, emit `event`, and commit,
        all or nothing. False, writing nothing, when that record is gone or being released
        (the sweeper judged the attempt abandoned). UniqueViolation when the Idempotency-Key
        is taken. The unit of work is done afterwards."""
        ...

    async def keep_event(self, consumer: str, event: CloudEvent, kept: ReceivedEvent) -> bool:
        """Claim `event` for `consumer` and add `kept` to the received-events history, and
        commit, all or nothing; False, writing nothing, if it was claimed before. The unit
        of work is done afterwards."""
        ...

    async def apply_event(
        self,
        consumer: str,
        event: CloudEvent,
        invoice_id: str,
        change: Callable[[Invoice | None], None],
    ) -> bool:
        """Claim `event` for `consumer`, run `change` on the invoice as stored (None: there
        is none; it may emit events here, and raises to write nothing), save the invoice,
        and commit, all or nothing; False, doing nothing, if it was claimed before.
        `change` may run more than once (on a fresh read each time, what it emitted before
        dropped) when the invoice changed meanwhile. The unit of work is done afterwards."""
        ...


UnitOfWorkFactory = Callable[[str], UnitOfWork]
"""Builds a unit of work for one tenant."""


class CreditNoteHtml(Protocol):
    """Renders the credit note document (with its invoice, for the parties and references)."""

    version: str

    def render(self, note: CreditNote, invoice: Invoice, *, embed_stylesheet: bool = True) -> str:
        """The HTML document; embed_stylesheet=False as for InvoiceHtml.render."""
        ...

    def title(self, note: CreditNote, invoice: Invoice) -> str:
        """The document's title ("Gutschrift CN-0001"), in its invoice's language."""
        ...
