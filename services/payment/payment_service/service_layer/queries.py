"""Reads: payments, pages of them, and what this service knows about an invoice."""

from __future__ import annotations

from dataclasses import dataclass

from payment_service.domain.errors import PayableInvoiceNotFound, PaymentNotFound
from payment_service.domain.model import (
    InvoiceBalance,
    PayableInvoice,
    Payment,
    PaymentStatus,
    invoice_balance,
)
from payment_service.service_layer.dependencies import Dependencies


@dataclass(frozen=True, slots=True)
class InvoiceView:
    invoice: PayableInvoice
    balance: InvoiceBalance | None  # None for a void tombstone without amounts


async def get_payment(tenant: str, payment_id: str, deps: Dependencies) -> Payment:
    async with deps.uow() as uow:
        payment = await uow.payments(tenant).get(payment_id)
    if payment is None:
        raise PaymentNotFound(f"payment {payment_id} not found")
    return payment


async def list_payments(
    tenant: str,
    deps: Dependencies,
    *,
    invoice_id: str | None,
    status: PaymentStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[Payment], int]:
    async with deps.uow() as uow:
        return await uow.payments(tenant).page(
            invoice_id=invoice_id, status=status, limit=limit, offset=offset
        )


async def payable_invoice(tenant: str, invoice_id: str, deps: Dependencies) -> InvoiceView:
    async with deps.uow() as uow:
        repo = uow.payments(tenant)
        invoice = await repo.get_invoice(invoice_id)
        if invoice is None:
            raise PayableInvoiceNotFound(
                f"invoice {invoice_id} is not known to the payment service (yet)",
                invoice_id=invoice_id,
            )
        if invoice.currency is None or invoice.amount_due is None:
            return InvoiceView(invoice, None)
        payments = await repo.for_invoice(invoice_id)
        return InvoiceView(invoice, invoice_balance(invoice, payments))


async def payment_by_reference(
    tenant: str, gateway: str, reference: str, deps: Dependencies
) -> Payment:
    async with deps.uow() as uow:
        payment = await uow.payments(tenant).by_reference(gateway, reference)
    if payment is None:
        raise PaymentNotFound(f"no {gateway} payment with reference {reference}")
    return payment
