"""The SQL repository of one tenant's payments, refunds, payable invoices and
Idempotency-Keys: maps rows to the domain and back, and filters every query by the tenant."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from billing_common.money import Money
from payment_service.adapters.orm import (
    IdempotencyKeyRow,
    PayableInvoiceRow,
    PaymentRow,
    PaymentStatusHistoryRow,
    RefundRow,
)
from payment_service.domain.model import (
    InvoiceState,
    PayableInvoice,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    StatusChange,
)
from payment_service.service_layer.ports import IdempotencyRecord


def _invoice(row: PayableInvoiceRow) -> PayableInvoice:
    return PayableInvoice(
        invoice_id=row.invoice_id,
        state=InvoiceState(row.state),
        customer_id=row.customer_id,
        currency=row.currency,
        total=row.total,
        amount_due=row.amount_due,
        number=row.number,
        version=row.invoice_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _refund(row: RefundRow) -> Refund:
    return Refund(
        id=row.id,
        payment_id=row.payment_id,
        amount=Money.of(row.amount, row.currency),
        idempotency_key=row.idempotency_key,
        status=RefundStatus(row.status),
        gateway_reference=row.gateway_reference,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
        attempts=row.attempts,
        lease_until=row.lease_until,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _change(row: PaymentStatusHistoryRow) -> StatusChange:
    return StatusChange(
        from_status=PaymentStatus(row.from_status) if row.from_status else None,
        to_status=PaymentStatus(row.to_status),
        reason=row.reason,
        at=row.at,
        amount=row.amount,
    )


def _payment(
    row: PaymentRow, refunds: Sequence[RefundRow], history: Sequence[PaymentStatusHistoryRow]
) -> Payment:
    return Payment(
        id=row.id,
        invoice_id=row.invoice_id,
        customer_id=row.customer_id,
        amount=Money.of(row.amount, row.currency),
        gateway=row.gateway,
        payment_method=row.payment_method,
        idempotency_key=row.idempotency_key,
        status=PaymentStatus(row.status),
        gateway_reference=row.gateway_reference,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
        refunded=Money.of(row.refunded_amount, row.currency),
        attempts=row.attempts,
        lease_until=row.lease_until,
        created_at=row.created_at,
        updated_at=row.updated_at,
        refunds=[_refund(r) for r in refunds],
        history=[_change(h) for h in history],
    )


class SqlPaymentRepository:
    def __init__(self, session: AsyncSession, tenant: str) -> None:
        self._session = session
        self.tenant = tenant
        self._looked_up: dict[str, PayableInvoiceRow | None] = {}

    # -- payable invoices -------------------------------------------------------------------

    async def get_invoice(
        self, invoice_id: str, *, for_update: bool = False
    ) -> PayableInvoice | None:
        """With `for_update`, PostgreSQL locks the row until commit: payments of one invoice
        are planned one at a time. (SQLite runs one transaction at a time anyway.)"""
        query = select(PayableInvoiceRow).where(
            PayableInvoiceRow.tenant_id == self.tenant,
            PayableInvoiceRow.invoice_id == invoice_id,
        )
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        row = (await self._session.exec(query)).first()
        self._looked_up[invoice_id] = row
        return _invoice(row) if row is not None else None

    async def save_invoice(self, invoice: PayableInvoice) -> None:
        # The row get_invoice just read (or found missing): asking the session again would
        # be a second SELECT for every invoice that is new here.
        if invoice.invoice_id in self._looked_up:
            row = self._looked_up[invoice.invoice_id]
        else:
            row = await self._session.get(PayableInvoiceRow, (self.tenant, invoice.invoice_id))
        if row is None:
            row = PayableInvoiceRow(
                tenant_id=self.tenant,
                invoice_id=invoice.invoice_id,
                state=str(invoice.state),
                created_at=invoice.created_at,
            )
            self._looked_up[invoice.invoice_id] = row
        row.state = str(invoice.state)
        row.customer_id = invoice.customer_id
        row.currency = invoice.currency
        row.total = invoice.total
        row.amount_due = invoice.amount_due
        row.number = invoice.number
        row.invoice_version = invoice.version
        row.updated_at = invoice.updated_at
        self._session.add(row)

    # -- payments ---------------------------------------------------------------------------

    async def _rows_for(
        self, payment_ids: Sequence[str], *, with_history: bool
    ) -> tuple[dict[str, list[RefundRow]], dict[str, list[PaymentStatusHistoryRow]]]:
        refunds: dict[str, list[RefundRow]] = {pid: [] for pid in payment_ids}
        history: dict[str, list[PaymentStatusHistoryRow]] = {pid: [] for pid in payment_ids}
        if not payment_ids:
            return refunds, history
        refund_rows = await self._session.exec(
            select(RefundRow)
            .where(RefundRow.tenant_id == self.tenant, col(RefundRow.payment_id).in_(payment_ids))
            .order_by(col(RefundRow.created_at), col(RefundRow.id))
            .execution_options(populate_existing=True)
        )
        for refund in refund_rows.all():
            refunds[refund.payment_id].append(refund)
        if with_history:
            history_rows = await self._session.exec(
                select(PaymentStatusHistoryRow)
                .where(
                    PaymentStatusHistoryRow.tenant_id == self.tenant,
                    col(PaymentStatusHistoryRow.payment_id).in_(payment_ids),
                )
                .order_by(col(PaymentStatusHistoryRow.id))
            )
            for change in history_rows.all():
                history[change.payment_id].append(change)
        return refunds, history

    async def get(self, payment_id: str, *, for_update: bool = False) -> Payment | None:
        """The payment with its refunds and history. `for_update` serialises concurrent
        changes of one payment (refunds, webhooks, gateway results) on PostgreSQL."""
        query = select(PaymentRow).where(
            PaymentRow.tenant_id == self.tenant, PaymentRow.id == payment_id
        )
        if for_update:
            query = query.with_for_update().execution_options(populate_existing=True)
        row = (await self._session.exec(query)).first()
        if row is None:
            return None
        refunds, history = await self._rows_for([row.id], with_history=True)
        return _payment(row, refunds[row.id], history[row.id])

    async def by_reference(self, gateway: str, reference: str) -> Payment | None:
        row = (
            await self._session.exec(
                select(PaymentRow.id).where(
                    PaymentRow.tenant_id == self.tenant,
                    PaymentRow.gateway == gateway,
                    PaymentRow.gateway_reference == reference,
                )
            )
        ).first()
        return await self.get(row) if row is not None else None

    async def for_invoice(self, invoice_id: str) -> list[Payment]:
        """Every payment of the invoice with its refunds (no history): enough for the balance."""
        rows = (
            await self._session.exec(
                select(PaymentRow)
                .where(PaymentRow.tenant_id == self.tenant, PaymentRow.invoice_id == invoice_id)
                .order_by(col(PaymentRow.created_at), col(PaymentRow.id))
                .execution_options(populate_existing=True)
            )
        ).all()
        refunds, _ = await self._rows_for([r.id for r in rows], with_history=False)
        return [_payment(r, refunds[r.id], []) for r in rows]

    async def page(
        self,
        *,
        invoice_id: str | None,
        status: PaymentStatus | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Payment], int]:
        """Newest first; returns the page and the number of matching payments."""
        conditions = [PaymentRow.tenant_id == self.tenant]
        if invoice_id is not None:
            conditions.append(PaymentRow.invoice_id == invoice_id)
        if status is not None:
            conditions.append(PaymentRow.status == str(status))
        total = (
            await self._session.exec(
                select(func.count()).select_from(PaymentRow).where(*conditions)
            )
        ).one()
        rows = (
            await self._session.exec(
                select(PaymentRow)
                .where(*conditions)
                .order_by(col(PaymentRow.created_at).desc(), col(PaymentRow.id).desc())
                .limit(limit)
                .offset(offset)
            )
        ).all()
        refunds, history = await self._rows_for([r.id for r in rows], with_history=True)
        return [_payment(r, refunds[r.id], history[r.id]) for r in rows], int(total)

    async def add(self, payment: Payment) -> None:
        row = PaymentRow(
            id=payment.id,
            tenant_id=self.tenant,
            invoice_id=payment.invoice_id,
            customer_id=payment.customer_id,
            currency=payment.amount.currency,
            amount=payment.amount.amount,
            refunded_amount=payment.refunded_amount.amount,
            status=str(payment.status),
            gateway=payment.gateway,
            payment_method=payment.payment_method,
            idempotency_key=payment.idempotency_key,
        )
        self._copy_state(payment, row)
        row.created_at = payment.created_at
        self._session.add(row)
        await self._write_refunds(payment)
        self._add_history(payment)

    async def save(self, payment: Payment) -> None:
        """Write back a payment loaded from this repository: its row, refunds and new history."""
        row = await self._session.get(PaymentRow, payment.id)
        if row is None or row.tenant_id != self.tenant:
            raise LookupError(f"payment {payment.id} was not loaded from this repository")
        self._copy_state(payment, row)
        self._session.add(row)
        await self._write_refunds(payment)
        self._add_history(payment)

    async def _write_refunds(self, payment: Payment) -> None:
        for refund in payment.refunds:
            refund_row = await self._session.get(RefundRow, refund.id)
            if refund_row is None:
                refund_row = RefundRow(
                    id=refund.id,
                    tenant_id=self.tenant,
                    payment_id=payment.id,
                    gateway=payment.gateway,
                    currency=refund.amount.currency,
                    amount=refund.amount.amount,
                    status=str(refund.status),
                    idempotency_key=refund.idempotency_key,
                    created_at=refund.created_at,
                )
            refund_row.status = str(refund.status)
            refund_row.gateway_reference = refund.gateway_reference
            refund_row.failure_code = refund.failure_code
            refund_row.failure_message = _clip(refund.failure_message)
            refund_row.attempts = refund.attempts
            refund_row.lease_until = refund.lease_until
            refund_row.updated_at = refund.updated_at
            self._session.add(refund_row)

    @staticmethod
    def _copy_state(payment: Payment, row: PaymentRow) -> None:
        row.status = str(payment.status)
        row.refunded_amount = payment.refunded_amount.amount
        row.gateway_reference = payment.gateway_reference
        row.failure_code = payment.failure_code
        row.failure_message = _clip(payment.failure_message)
        row.attempts = payment.attempts
        row.lease_until = payment.lease_until
        row.updated_at = payment.updated_at

    def _add_history(self, payment: Payment) -> None:
        for change in payment.new_history:
            self._session.add(
                PaymentStatusHistoryRow(
                    tenant_id=self.tenant,
                    payment_id=payment.id,
                    from_status=str(change.from_status) if change.from_status else None,
                    to_status=str(change.to_status),
                    reason=change.reason[:500],
                    amount=change.amount,
                    at=change.at,
                )
            )
        payment.new_history.clear()

    # -- idempotency keys ---------------------------------------------------------------------

    async def idempotency_record(self, key: str) -> IdempotencyRecord | None:
        row = (
            await self._session.exec(
                select(IdempotencyKeyRow)
                .where(IdempotencyKeyRow.tenant_id == self.tenant, IdempotencyKeyRow.key == key)
                .execution_options(populate_existing=True)
            )
        ).first()
        if row is None:
            return None
        return IdempotencyRecord(
            row.key, row.operation, row.request_hash, row.resource_id, row.created_at
        )

    def add_idempotency_record(self, record: IdempotencyRecord) -> None:
        self._session.add(
            IdempotencyKeyRow(
                tenant_id=self.tenant,
                key=record.key,
                operation=record.operation,
                request_hash=record.request_hash,
                resource_id=record.resource_id,
                created_at=record.created_at,
            )
        )


def _clip(text: str | None) -> str | None:
    return text[:500] if text is not None else None
