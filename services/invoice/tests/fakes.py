"""In-memory implementations of the invoice service's ports (service_layer/ports.py), for
use-case tests that need no database and no peer: cosmicpython's FakeRepository and
FakeUnitOfWork, and the tax and discount peers as recording fakes.

The unit of work keeps the guarantees the use cases rely on from the SQL one: it works on
copies (an invoice it loads is a copy; nothing is visible to another unit of work before
`commit`; leaving without `commit` discards it), numbers are gapless (a rollback gives a
number back), and saving an invoice that another transaction saved since it was loaded
raises ConcurrentModification and stores nothing.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from types import TracebackType
from typing import Self

from billing_common.events import CloudEvent
from invoice_service.domain.einvoicing import CustomerEInvoiceSettings
from invoice_service.domain.errors import ConcurrentModification
from invoice_service.domain.model import (
    AppliedDiscount,
    Customer,
    Invoice,
    InvoiceSummary,
    PriceMode,
    TaxComponent,
)
from invoice_service.domain.pricing import DiscountResult, TaxLineResult, TaxResult
from invoice_service.domain.sellers import DocumentType, Seller, SellerSnapshot
from invoice_service.service_layer.ports import (
    DocumentStamp,
    InvoiceQuery,
    PendingCreation,
    ReceivedEvent,
    SellerQuery,
    StoredIdempotency,
    TaxLineRequest,
)


@dataclass
class TenantData:
    invoices: dict[str, Invoice] = field(default_factory=dict)
    idempotency: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (id, hash)
    numbers: dict[str, int] = field(default_factory=dict)
    received: list[ReceivedEvent] = field(default_factory=list)
    pending: dict[str, PendingCreation] = field(default_factory=dict)
    claimed: set[tuple[str, str]] = field(default_factory=set)  # (consumer, event id)
    sellers: dict[str, Seller] = field(default_factory=dict)
    default_seller: str | None = None
    # (seller id or "", series, document type) -> last number, for sellers' documents
    document_numbers: dict[tuple[str, str, str], int] = field(default_factory=dict)
    customer_settings: dict[str, CustomerEInvoiceSettings] = field(default_factory=dict)


@dataclass
class InvoiceStore:
    """What the committed transactions left behind, shared by every unit of work."""

    tenants: dict[str, TenantData] = field(default_factory=dict)
    outbox: list[tuple[CloudEvent, str]] = field(default_factory=list)
    commits: int = 0

    def data(self, tenant: str) -> TenantData:
        return self.tenants.setdefault(tenant, TenantData())

    def uow(self, tenant: str) -> FakeUnitOfWork:
        """The `UnitOfWorkFactory` of the use cases' dependencies."""
        return FakeUnitOfWork(self, tenant)

    def invoice(self, tenant: str, invoice_id: str) -> Invoice:
        return copy.deepcopy(self.data(tenant).invoices[invoice_id])


class DuplicateIdempotencyKey(Exception):
    """The fake's unique violation on (tenant, Idempotency-Key)."""


class FakeInvoiceRepository:
    def __init__(self, data: TenantData, tenant: str) -> None:
        self._data = data
        self._tenant = tenant
        self.loaded: dict[str, int] = {}  # invoice id -> version when loaded

    async def get(self, invoice_id: str, *, for_update: bool = False) -> Invoice | None:
        found = self._data.invoices.get(invoice_id)
        if found is None:
            return None
        self.loaded[invoice_id] = found.version
        return copy.deepcopy(found)

    async def stamp(self, invoice_id: str) -> DocumentStamp | None:
        found = self._data.invoices.get(invoice_id)
        return DocumentStamp.of(found) if found is not None else None

    async def find_by_idempotency_key(self, key: str) -> StoredIdempotency | None:
        if key not in self._data.idempotency:
            return None
        invoice_id, request_hash = self._data.idempotency[key]
        return StoredIdempotency(copy.deepcopy(self._data.invoices[invoice_id]), request_hash)

    async def add(self, invoice: Invoice, *, idempotency_key: str, request_hash: str) -> None:
        if idempotency_key in self._data.idempotency or invoice.id in self._data.invoices:
            raise DuplicateIdempotencyKey(idempotency_key)
        self._data.invoices[invoice.id] = copy.deepcopy(invoice)
        self._data.idempotency[idempotency_key] = (invoice.id, request_hash)
        self.loaded[invoice.id] = invoice.version

    async def save(self, invoice: Invoice) -> None:
        if invoice.id not in self.loaded:
            raise ValueError("save() takes an invoice loaded through this repository")
        if invoice.version == self.loaded[invoice.id]:
            return  # nothing changed
        self._data.invoices[invoice.id] = copy.deepcopy(invoice)

    async def list(self, query: InvoiceQuery) -> list[InvoiceSummary]:
        raise NotImplementedError("the queries are tested on SQLite (test_invoice_repository)")


class FakeNumberSeries:
    def __init__(self, data: TenantData) -> None:
        self._data = data

    async def next_sequence(
        self,
        series: str,
        *,
        seller_id: str | None = None,
        document_type: DocumentType = DocumentType.INVOICE,
    ) -> int:
        if seller_id is None and document_type is DocumentType.INVOICE:
            self._data.numbers[series] = self._data.numbers.get(series, 0) + 1
            return self._data.numbers[series]
        key = (seller_id or "", series, document_type.value)
        self._data.document_numbers[key] = self._data.document_numbers.get(key, 0) + 1
        return self._data.document_numbers[key]


class FakeSellerRepository:
    """The tenant's sellers in memory, with the version check the SQL repository makes."""

    def __init__(self, data: TenantData, tenant: str) -> None:
        self._data = data
        self._tenant = tenant

    async def get(self, seller_id: str, *, for_update: bool = False) -> Seller | None:
        return self._data.sellers.get(seller_id)

    async def default(self) -> Seller | None:
        chosen = self._data.sellers.get(self._data.default_seller or "")
        return chosen if chosen is not None and chosen.active else None

    async def add(self, seller: Seller) -> None:
        self._data.sellers[seller.id] = seller

    async def save(self, seller: Seller, *, expected_version: int) -> None:
        current = self._data.sellers.get(seller.id)
        if current is None or current.version != expected_version:
            raise ConcurrentModification(seller.id)
        self._data.sellers[seller.id] = seller

    async def set_default(self, seller_id: str | None) -> None:
        self._data.default_seller = seller_id

    async def list(self, query: SellerQuery) -> list[Seller]:
        found = sorted(self._data.sellers.values(), key=lambda s: (s.created_at, s.id))
        if query.active is not None:
            found = [s for s in found if s.active == query.active]
        if query.after is not None:
            found = [s for s in found if (s.created_at, s.id) > query.after]
        return found[: query.limit]

    async def in_use(self, seller_id: str) -> bool:
        return any(i.seller_id == seller_id for i in self._data.invoices.values())

    async def delete(self, seller_id: str) -> None:
        self._data.sellers.pop(seller_id, None)


class FakeReceivedEventLog:
    def __init__(self, data: TenantData) -> None:
        self._data = data

    async def add(self, event: ReceivedEvent) -> None:
        self._data.received.append(event)

    async def for_reference(self, reference: str) -> list[ReceivedEvent]:
        return [e for e in self._data.received if e.reference == reference]


class FakePendingCreations:
    def __init__(self, data: TenantData) -> None:
        self._data = data

    async def get(self, invoice_id: str, *, for_update: bool = False) -> PendingCreation | None:
        return self._data.pending.get(invoice_id)

    async def put(self, pending: PendingCreation) -> None:
        self._data.pending[pending.invoice_id] = pending

    async def begin(self, pending: PendingCreation) -> bool:
        earlier = self._data.pending.get(pending.invoice_id)
        if earlier is not None and earlier.releasing:
            return False
        self._data.pending[pending.invoice_id] = pending
        return True

    async def remove(self, invoice_id: str, *, unless_releasing: bool = False) -> bool:
        current = self._data.pending.get(invoice_id)
        if current is None or (unless_releasing and current.releasing):
            return False
        del self._data.pending[invoice_id]
        return True


class FakeCustomerSettings:
    def __init__(self, data: TenantData) -> None:
        self._data = data

    async def get(self, customer_id: str) -> CustomerEInvoiceSettings | None:
        return self._data.customer_settings.get(customer_id)

    async def put(self, settings: CustomerEInvoiceSettings) -> None:
        self._data.customer_settings[settings.customer_id] = settings


class FakeUnitOfWork:
    """One tenant's transaction on an `InvoiceStore`: works on a copy of the tenant's data,
    applies it on commit unless an invoice it saves was saved by another meanwhile."""

    def __init__(self, store: InvoiceStore, tenant: str) -> None:
        self._store = store
        self.tenant = tenant
        self.committed = False

    async def __aenter__(self) -> Self:
        self._data = copy.deepcopy(self._store.data(self.tenant))
        self.invoices = FakeInvoiceRepository(self._data, self.tenant)
        self.numbers = FakeNumberSeries(self._data)
        self.received = FakeReceivedEventLog(self._data)
        self.pending = FakePendingCreations(self._data)
        self.sellers = FakeSellerRepository(self._data, self.tenant)
        self.customer_settings = FakeCustomerSettings(self._data)
        self._outbox: list[tuple[CloudEvent, str]] = []
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._outbox = []  # what was not committed is gone, as on a rollback

    def emit(self, event: CloudEvent, *, aggregate: str) -> None:
        self._outbox.append((event, aggregate))

    async def claim_event(self, consumer: str, event: CloudEvent) -> bool:
        if (consumer, event.id) in self._data.claimed:
            return False
        self._data.claimed.add((consumer, event.id))
        return True

    async def start_creation(
        self, idempotency_key: str, pending: PendingCreation
    ) -> tuple[StoredIdempotency | None, bool]:
        stored = await self.invoices.find_by_idempotency_key(idempotency_key)
        if stored is not None:
            return stored, False
        return None, await self.pending.begin(pending)

    async def finish_creation(
        self,
        invoice: Invoice,
        *,
        idempotency_key: str,
        request_hash: str,
        event: CloudEvent,
        aggregate: str,
    ) -> bool:
        await self.invoices.add(invoice, idempotency_key=idempotency_key, request_hash=request_hash)
        if not await self.pending.remove(invoice.id, unless_releasing=True):
            return False
        self.emit(event, aggregate=aggregate)
        await self.commit()
        return True

    async def keep_event(self, consumer: str, event: CloudEvent, kept: ReceivedEvent) -> bool:
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
        if not await self.claim_event(consumer, event):
            return False
        invoice = await self.invoices.get(invoice_id, for_update=True)
        change(invoice)
        if invoice is not None:
            await self.invoices.save(invoice)
        await self.commit()
        return True

    async def commit(self) -> None:
        committed = self._store.data(self.tenant)
        for invoice_id, version in self.invoices.loaded.items():
            now = committed.invoices.get(invoice_id)
            mine = self._data.invoices[invoice_id]
            if now is not None and now.version != version and mine.version != version:
                raise ConcurrentModification(invoice_id)
        self._store.tenants[self.tenant] = self._data
        self._store.outbox.extend(self._outbox)
        self._store.commits += 1
        self._data = copy.deepcopy(self._data)
        self.invoices.loaded = {i: inv.version for i, inv in self._data.invoices.items()}
        self._outbox = []
        self.committed = True


# -- peers ------------------------------------------------------------------------------------


@dataclass
class FakeTax:
    """The tax peer: a flat rate on every line, and a record of what was asked."""

    rate: Decimal = Decimal("0.19")
    calculations: dict[str, str] = field(default_factory=dict)  # calculation id -> reference
    discarded: list[str] = field(default_factory=list)
    bases: list[list[Decimal]] = field(default_factory=list)

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
        calculation_id = str(uuid.uuid4())
        self.calculations[calculation_id] = reference
        self.bases.append([line.unit_price * line.quantity for line in lines])
        results = []
        for line in lines:
            net = line.unit_price * line.quantity
            tax = (net * self.rate).quantize(Decimal("0.01"))
            component = TaxComponent(rule_id="flat", name="VAT", rate=self.rate, amount=tax)
            results.append(TaxLineResult(line.id, net, tax, net + tax, (component,)))
        return TaxResult(calculation_id, tuple(results))

    async def discard(self, *, tenant: str, reference: str) -> None:
        self.discarded.append(reference)
        self.calculations = {k: v for k, v in self.calculations.items() if v != reference}


@dataclass
class FakeDiscounts:
    """The discount peer: a fixed discount when any coupon is given, redemptions by key."""

    discount: Decimal = Decimal("10.00")
    redeemed: dict[str, str] = field(default_factory=dict)  # idempotency key -> redemption id
    released: list[str] = field(default_factory=list)
    fail_redeem: Exception | None = None

    def _result(self, coupon_codes: Sequence[str], redemption_id: str | None) -> DiscountResult:
        if not coupon_codes:
            return DiscountResult(total_discount=Decimal(0), applied=())
        applied = (AppliedDiscount("coupon", "coupon", self.discount, coupon_codes[0]),)
        return DiscountResult(self.discount, applied, redemption_id=redemption_id)

    async def quote(
        self,
        *,
        tenant: str,
        customer: Customer,
        currency: str,
        amount: Decimal,
        coupon_codes: Sequence[str],
        reference: str,
    ) -> DiscountResult:
        return self._result(coupon_codes, None)

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
    ) -> DiscountResult:
        if self.fail_redeem is not None:
            raise self.fail_redeem
        redemption_id = self.redeemed.setdefault(idempotency_key, str(uuid.uuid4()))
        return self._result(coupon_codes, redemption_id)

    async def release(self, *, tenant: str, idempotency_key: str) -> None:
        if self.redeemed.pop(idempotency_key, None) is not None:
            self.released.append(idempotency_key)
