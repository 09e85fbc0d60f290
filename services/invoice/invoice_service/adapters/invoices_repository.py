"""The invoice repository in SQL: an invoice with its lines, taxes, discounts, payments and
history. Built for one tenant; every query filters by it: a caller can never read or change
another tenant's rows."""

from __future__ import annotations

import builtins
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, Select, String, Table, and_, bindparam, literal_column, or_, update
from sqlalchemy import select as core_select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from invoice_service.adapters import invoice_rows as rows
from invoice_service.adapters import postgres_writes
from invoice_service.adapters.json_columns import breakdown_of, postal_address_of, snapshot_of
from invoice_service.adapters.orm import InvoiceRow, InvoiceSellerVersionRow
from invoice_service.domain.einvoicing import EInvoiceFormat
from invoice_service.domain.errors import ConcurrentModification
from invoice_service.domain.languages import DEFAULT_LANGUAGE
from invoice_service.domain.model import (
    AppliedDiscount,
    Customer,
    CustomerKind,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    InvoiceSummary,
    PaymentFlag,
    PaymentKind,
    PaymentRecord,
    PriceMode,
    StatusChange,
    TaxComponent,
    TaxStatus,
)
from invoice_service.service_layer.ports import (
    DocumentStamp,
    InvoiceQuery,
    StoredIdempotency,
)

_INVOICES: Table = InvoiceRow.__table__  # type: ignore[attr-defined]
_SELLER_VERSIONS: Table = InvoiceSellerVersionRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class InvoiceChanges:
    """What saving an invoice writes: its header's changing columns (if its version is still
    `loaded_version`) and the history and payment rows appended since it was loaded."""

    loaded_version: int
    header: dict[str, Any]
    history: list[dict[str, Any]]
    payments: list[dict[str, Any]]


def _children_statement(table: Table, *order: str) -> Select[Any]:
    """One child table's rows of an invoice, in their stored order: a constant statement
    (compiled once, prepared once per connection), bound with the invoice and tenant."""
    return (
        core_select(table)
        .where(
            table.c.tenant_id == bindparam("tenant_id"),
            table.c.invoice_id == bindparam("invoice_id"),
        )
        .order_by(*(table.c[name] for name in order))
    )


_CHILDREN: dict[str, Select[Any]] = {
    rows.LINES.name: _children_statement(rows.LINES, "position"),
    rows.LINE_TAXES.name: _children_statement(rows.LINE_TAXES, "position", "seq"),
    rows.DISCOUNTS.name: _children_statement(rows.DISCOUNTS, "seq"),
    rows.HISTORY.name: _children_statement(rows.HISTORY, "seq"),
    rows.PAYMENTS.name: _children_statement(rows.PAYMENTS, "seq"),
}


def _sqlite_idempotency_statement() -> Select[Any]:
    """As postgres_writes' idempotency lookup: one row, with the tenant's seller version."""
    tenant = bindparam("tenant_id", type_=String)
    version = core_select(_SELLER_VERSIONS.c.version).where(_SELLER_VERSIONS.c.tenant_id == tenant)
    one = core_select(literal_column("1").label("one")).subquery("one")
    return core_select(
        _INVOICES.c.id, _INVOICES.c.request_hash, version.scalar_subquery()
    ).select_from(
        one.outerjoin(
            _INVOICES,
            and_(_INVOICES.c.tenant_id == tenant, _INVOICES.c.idempotency_key == bindparam("key")),
        )
    )


_SQLITE_IDEMPOTENCY = _sqlite_idempotency_statement()


class SqlInvoiceRepository:
    def __init__(
        self,
        session: AsyncSession,
        tenant: str,
        seller_version: Callable[[int], None] | None = None,
        drivers: postgres_writes.Drivers | None = None,
    ) -> None:
        self._session = session
        self._tenant = tenant
        self._drivers = drivers or postgres_writes.session_drivers(session)
        # Told the tenant's seller version whenever a statement here read it.
        self._seller_version = seller_version
        # What was loaded per invoice id: (version, history count, payment count). `save`
        # writes only what was appended since, and only if nobody saved in between.
        self._loaded: dict[str, tuple[int, int, int]] = {}

    # ---- reads ---------------------------------------------------------------------------

    async def get(self, invoice_id: str, *, for_update: bool = False) -> Invoice | None:
        # Core statements on the unit of work's connection: the aggregate is built from plain
        # rows, with no ORM identity map or instrumented objects (this is the path of every
        # payment event as well as of every API read).
        statement = core_select(_INVOICES).where(
            _INVOICES.c.tenant_id == self._tenant, _INVOICES.c.id == invoice_id
        )
        if for_update:
            # PostgreSQL: concurrent changes of one invoice queue here. SQLite runs one
            # transaction at a time per service, so it needs no lock (and has no FOR UPDATE).
            statement = statement.with_for_update()
        connection = await self._session.connection()
        row = (await connection.execute(statement)).first()
        return None if row is None else await self._load(connection, row)

    async def stamp(self, invoice_id: str) -> DocumentStamp | None:
        row = (
            await (await self._session.connection()).execute(
                core_select(
                    _INVOICES.c.tenant_id,
                    _INVOICES.c.id,
                    _INVOICES.c.number,
                    _INVOICES.c.version,
                    _INVOICES.c.language,
                ).where(_INVOICES.c.tenant_id == self._tenant, _INVOICES.c.id == invoice_id)
            )
        ).first()
        if row is None:
            return None
        return DocumentStamp(
            row.tenant_id, row.id, row.number, row.version, row.language or DEFAULT_LANGUAGE
        )

    async def find_by_idempotency_key(self, key: str) -> StoredIdempotency | None:
        # Every creation asks, and almost every one finds nothing: a SELECT of the id (on
        # PostgreSQL prepared, on the asyncpg connection), the whole aggregate only for a
        # replay. It reads the tenant's seller version too, for the seller lookup the
        # creation makes next in this unit of work: one round trip for both.
        async with self._drivers() as driver:
            if driver is not None:
                found = await postgres_writes.find_by_idempotency_key(driver, self._tenant, key)
        if driver is None:
            found = (
                await (await self._session.connection()).execute(
                    _SQLITE_IDEMPOTENCY, {"tenant_id": self._tenant, "key": key}
                )
            ).one()
        return await self.stored(found)

    async def stored(self, found: Any) -> StoredIdempotency | None:
        """What find_by_idempotency_key answers for its lookup's row `found` (id,
        request_hash, seller version): also the creation's lookup (unit of work's
        start_creation)."""
        if self._seller_version is not None:
            self._seller_version(int(found[2] or 0))
        if found[0] is None:
            return None
        invoice = await self.get(found[0])
        return None if invoice is None else StoredIdempotency(invoice, found[1])

    async def _children(
        self, connection: AsyncConnection, table: Table, invoice_id: str
    ) -> Sequence[Row[Any]]:
        """An invoice's rows in one child table, in their stored order."""
        found: Sequence[Row[Any]] = (
            await connection.execute(
                _CHILDREN[table.name], {"invoice_id": invoice_id, "tenant_id": self._tenant}
            )
        ).all()
        return found

    async def _load(self, connection: AsyncConnection, row: Row[Any]) -> Invoice:
        invoice_id = row.id
        return self.loaded(
            row,
            lines=await self._children(connection, rows.LINES, invoice_id),
            taxes=await self._children(connection, rows.LINE_TAXES, invoice_id),
            discounts=await self._children(connection, rows.DISCOUNTS, invoice_id),
            history=await self._children(connection, rows.HISTORY, invoice_id),
            payments=await self._children(connection, rows.PAYMENTS, invoice_id),
        )

    def loaded(
        self,
        row: Any,
        *,
        lines: Sequence[Any],
        taxes: Sequence[Any],
        discounts: Sequence[Any],
        history: Sequence[Any],
        payments: Sequence[Any],
    ) -> Invoice:
        """The invoice of a header row and its child rows (in their stored order; any rows
        whose columns read as attributes), remembered for `save` as loaded here."""
        taxes_by_line: dict[int, list[TaxComponent]] = defaultdict(list)
        for tax in taxes:
            taxes_by_line[tax.position].append(
                TaxComponent(tax.rule_id, tax.name, tax.rate, tax.amount, tax.compound)
            )
        invoice = Invoice(
            id=row.id,
            tenant_id=row.tenant_id,
            customer=Customer(
                id=row.customer_id,
                type=row.customer_type,
                country=row.customer_country,
                region=row.customer_region,
                tax_status=TaxStatus(row.customer_tax_status),
                tax_id=row.customer_tax_id,
                name=row.customer_name,
                email=row.customer_email,
                address=row.customer_address,
                location_country=row.customer_location_country,
                location_region=row.customer_location_region,
                kind=CustomerKind(row.customer_kind) if row.customer_kind else None,
                exemption_certificate=row.customer_exemption_certificate,
                postal_address=postal_address_of(
                    row.customer_address_country,
                    row.customer_street,
                    row.customer_city,
                    row.customer_postcode,
                    row.customer_subdivision,
                ),
                buyer_reference=row.buyer_reference,
            ),
            currency=row.currency,
            price_mode=PriceMode(row.price_mode),
            series=row.series,
            lines=[
                InvoiceLine(
                    position=line.position,
                    description=line.description,
                    quantity=line.quantity,
                    unit_price=line.unit_price,
                    category=line.category,
                    subtotal=line.subtotal,
                    discount=line.discount,
                    net=line.net,
                    tax=line.tax,
                    total=line.total,
                    taxes=tuple(taxes_by_line.get(line.position, ())),
                    exemption=line.exemption,
                    vat_category=line.vat_category,
                    vat_exemption_reason=line.vat_exemption_reason,
                    vat_exemption_reason_code=line.vat_exemption_reason_code,
                )
                for line in lines
            ],
            discounts=[AppliedDiscount(d.kind, d.name, d.amount, d.code) for d in discounts],
            created_at=row.created_at,
            due_days=row.due_days,
            status=InvoiceStatus(row.status),
            number=row.number,
            sequence=row.sequence if row.seller_id is None else row.seller_sequence,
            amount_paid=row.amount_paid,
            amount_credited=row.amount_credited or row.amount_paid - row.amount_paid,
            tax_calculation_id=row.tax_calculation_id,
            discount_redemption_id=row.discount_redemption_id,
            memo=row.memo,
            issued_at=row.issued_at,
            due_date=row.due_date,
            paid_at=row.paid_at,
            voided_at=row.voided_at,
            updated_at=row.updated_at,
            version=row.version,
            history=[
                StatusChange(
                    InvoiceStatus(h.from_status) if h.from_status else None,
                    InvoiceStatus(h.to_status),
                    h.at,
                    h.reason,
                    h.actor,
                    h.event_id,
                )
                for h in history
            ],
            payments=[
                PaymentRecord(
                    kind=PaymentKind(p.kind),
                    payment_id=p.payment_id,
                    amount=p.amount,
                    currency=p.currency,
                    at=p.at,
                    applied=p.applied,
                    event_id=p.event_id,
                    refund_id=p.refund_id,
                    flag=PaymentFlag(p.flag) if p.flag else None,
                    detail=p.detail,
                )
                for p in payments
            ],
            seller_id=row.seller_id,
            seller=snapshot_of(row.seller_snapshot),
            tax_treatment=row.tax_treatment,
            tax_breakdown=breakdown_of(row.tax_breakdown),
            language=row.language or DEFAULT_LANGUAGE,
            requested_language=row.requested_language,
            einvoice_format=EInvoiceFormat(row.einvoice_format) if row.einvoice_format else None,
        )
        self._loaded[invoice.id] = (invoice.version, len(invoice.history), len(invoice.payments))
        return invoice

    async def list(self, query: InvoiceQuery) -> list[InvoiceSummary]:
        statement = select(InvoiceRow).where(InvoiceRow.tenant_id == self._tenant)
        if query.status is not None:
            statement = statement.where(InvoiceRow.status == query.status.value)
        if query.customer_id is not None:
            statement = statement.where(InvoiceRow.customer_id == query.customer_id)
        if query.created_from is not None:
            statement = statement.where(col(InvoiceRow.created_at) >= query.created_from)
        if query.created_to is not None:
            statement = statement.where(col(InvoiceRow.created_at) < query.created_to)
        if query.issued_from is not None:
            statement = statement.where(col(InvoiceRow.issued_at) >= query.issued_from)
        if query.issued_to is not None:
            statement = statement.where(col(InvoiceRow.issued_at) < query.issued_to)
        if query.after is not None:
            created_at, invoice_id = query.after
            statement = statement.where(
                or_(
                    col(InvoiceRow.created_at) < created_at,
                    and_(col(InvoiceRow.created_at) == created_at, col(InvoiceRow.id) < invoice_id),
                )
            )
        statement = statement.order_by(
            col(InvoiceRow.created_at).desc(), col(InvoiceRow.id).desc()
        ).limit(query.limit)
        rows = (await self._session.exec(statement)).all()
        return [
            InvoiceSummary(
                id=row.id,
                number=row.number,
                series=row.series,
                status=InvoiceStatus(row.status),
                customer_id=row.customer_id,
                currency=row.currency,
                subtotal=row.subtotal,
                discount_total=row.discount_total,
                tax_total=row.tax_total,
                total=row.total,
                amount_paid=row.amount_paid,
                amount_credited=row.amount_credited or row.amount_paid - row.amount_paid,
                created_at=row.created_at,
                issued_at=row.issued_at,
                due_date=row.due_date,
            )
            for row in rows
        ]

    # ---- writes --------------------------------------------------------------------------

    def new_rows(
        self, invoice: Invoice, *, idempotency_key: str, request_hash: str
    ) -> builtins.list[tuple[Table, builtins.list[dict[str, Any]]]]:
        """The rows of a new invoice, table by table, children after the header they
        reference (a table without rows has an empty list)."""
        self._check_tenant(invoice)
        header = rows.invoice_row(
            invoice, idempotency_key=idempotency_key, request_hash=request_hash
        )
        return [
            (rows.INVOICES, [{**header, **self._header(invoice)}]),
            (rows.LINES, rows.line_rows(invoice)),
            (rows.LINE_TAXES, rows.tax_rows(invoice)),
            (rows.DISCOUNTS, rows.discount_rows(invoice)),
            (rows.HISTORY, rows.history_rows(invoice, 0)),
            (rows.PAYMENTS, rows.payment_rows(invoice, 0)),
        ]

    async def add(self, invoice: Invoice, *, idempotency_key: str, request_hash: str) -> None:
        """The invoice's rows as core INSERTs, one statement per table (children after the
        header they reference): no ORM unit-of-work bookkeeping on the hot path."""
        connection = await self._session.connection()
        for table, table_rows in self.new_rows(
            invoice, idempotency_key=idempotency_key, request_hash=request_hash
        ):
            await rows.insert(connection, table, table_rows)
        self._loaded[invoice.id] = (invoice.version, len(invoice.history), len(invoice.payments))

    async def save(self, invoice: Invoice) -> None:
        change = self.changes(invoice)
        if change is None:
            return  # nothing changed
        result = await (await self._session.connection()).execute(
            update(_INVOICES)
            .where(
                _INVOICES.c.tenant_id == self._tenant,
                _INVOICES.c.id == invoice.id,
                _INVOICES.c.version == change.loaded_version,
            )
            .values(**change.header)
        )
        if result.rowcount != 1:
            raise ConcurrentModification(invoice.id)
        connection = await self._session.connection()
        await rows.insert(connection, rows.HISTORY, change.history)
        await rows.insert(connection, rows.PAYMENTS, change.payments)
        self.saved(invoice)

    def changes(self, invoice: Invoice) -> InvoiceChanges | None:
        """What `save` writes for `invoice` (loaded through this repository): None if it did
        not change since."""
        self._check_tenant(invoice)
        loaded = self._loaded.get(invoice.id)
        if loaded is None:
            raise ValueError("save() takes an invoice loaded through this repository")
        version, history_count, payment_count = loaded
        if invoice.version == version:
            return None
        return InvoiceChanges(
            loaded_version=version,
            header=self._header(invoice),
            history=rows.history_rows(invoice, history_count),
            payments=rows.payment_rows(invoice, payment_count),
        )

    def saved(self, invoice: Invoice) -> None:
        """`invoice`'s changes are stored: later saves write only what comes after."""
        self._loaded[invoice.id] = (invoice.version, len(invoice.history), len(invoice.payments))

    def _check_tenant(self, invoice: Invoice) -> None:
        if invoice.tenant_id != self._tenant:
            raise ValueError("an invoice of another tenant cannot be written here")

    @staticmethod
    def _header(invoice: Invoice) -> dict[str, Any]:
        totals = invoice.totals
        # A seller's invoice counts in seller_sequence (see uq_invoice_seller_number).
        by_seller = invoice.seller_id is not None
        return {
            "status": invoice.status.value,
            "series": invoice.series,
            "sequence": None if by_seller else invoice.sequence,
            "seller_sequence": invoice.sequence if by_seller else None,
            "seller_snapshot": (
                json.dumps(invoice.seller.to_dict()) if invoice.seller is not None else None
            ),
            "number": invoice.number,
            "subtotal": totals.subtotal,
            "discount_total": totals.discount_total,
            "net_total": totals.net_total,
            "tax_total": totals.tax_total,
            "total": totals.total,
            "amount_paid": invoice.amount_paid,
            "amount_credited": invoice.amount_credited or None,
            "updated_at": invoice.updated_at or invoice.created_at,
            "issued_at": invoice.issued_at,
            "due_date": invoice.due_date,
            "paid_at": invoice.paid_at,
            "voided_at": invoice.voided_at,
            "version": invoice.version,
            "language": invoice.language,
            "einvoice_format": invoice.einvoice_format.value if invoice.einvoice_format else None,
        }
