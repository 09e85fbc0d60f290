"""Paying an invoice.

Paying never charges twice: the Idempotency-Key and the pending payment are committed together
*before* the gateway is called, and the first gateway attempt is leased to the request that
created them. A repeated request (same key, same body) finds the payment and returns it; it
only calls the gateway again when the last attempt's outcome was unknown, and then with the
same gateway idempotency key. Gateway I/O never happens inside a database transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from loguru import logger

from billing_common.event_schemas import (
    PAYMENT_FAILED,
    PAYMENT_RECEIVED,
    PaymentFailed,
    PaymentReceived,
)
from billing_common.events import new_event
from billing_common.ports import PeerUnavailable
from billing_common.uniqueness import UniqueViolation
from payment_service.domain.errors import InvalidStatusTransition, PaymentNotFound
from payment_service.domain.gateway import (
    ChargeResult,
    ChargeStatus,
    GatewayUnavailable,
    PaymentGateway,
    WebhookNotification,
)
from payment_service.domain.model import (
    PayableInvoice,
    Payment,
    PaymentStatus,
    invoice_not_known,
    plan_payment,
)
from payment_service.service_layer.dependencies import Dependencies
from payment_service.service_layer.gateways import outcome_of
from payment_service.service_layer.idempotency import (
    RequestHash,
    gateway_idempotency_key,
    normalised,
    replayed,
    request_hash,
)
from payment_service.service_layer.outcomes import attempt_lease, recorded
from payment_service.service_layer.ports import (
    ConcurrentWrite,
    IdempotencyRecord,
    PaymentUnitOfWork,
)

SOURCE = "/billing/payment"
# The failure code of a payment or refund whose last attempt stalled with no outcome.
ABANDONED = "attempt_abandoned"


@dataclass(frozen=True, slots=True)
class PayCommand:
    invoice_id: str
    payment_method: str
    gateway: str
    amount: Decimal | None = None
    currency: str | None = None

    def fingerprint(self) -> RequestHash:
        return request_hash(
            "payment",
            {
                "invoice_id": self.invoice_id,
                "payment_method": self.payment_method,
                "gateway": self.gateway,
                "amount": normalised(self.amount),
                "currency": self.currency.upper() if self.currency else None,
            },
        )


@dataclass(frozen=True, slots=True)
class PaymentResult:
    payment: Payment
    created: bool  # False: an earlier request with the same Idempotency-Key made it


async def pay(
    tenant: str, idempotency_key: str, command: PayCommand, deps: Dependencies
) -> PaymentResult:
    gateway = deps.gateways.get(command.gateway)
    fingerprint = command.fingerprint()
    await _learn_if_unseen(tenant, command.invoice_id, deps)
    created: Payment | None = None
    invoice: PayableInvoice | None = None
    async with deps.uow() as uow:
        repo = uow.payments(tenant)
        payment_id = await replayed(repo, idempotency_key, "payment", fingerprint)
        if payment_id is None:
            # The lock serialises payments of one invoice (PostgreSQL); a request with
            # the same key that committed while we waited is seen by the second lookup.
            invoice = await repo.get_invoice(command.invoice_id, for_update=True)
            payment_id = await replayed(repo, idempotency_key, "payment", fingerprint)
        if payment_id is None:
            if invoice is None:
                raise invoice_not_known(command.invoice_id)
            amount = plan_payment(
                invoice,
                await repo.for_invoice(invoice.invoice_id),
                amount=command.amount,
                currency=command.currency,
            )
            now = deps.clock()
            payment = Payment.start(
                payment_id=deps.new_id(),
                invoice_id=invoice.invoice_id,
                customer_id=invoice.customer_id,
                amount=amount,
                gateway=gateway.name,
                payment_method=command.payment_method,
                idempotency_key=idempotency_key,
                now=now,
            )
            payment.begin_attempt(now, attempt_lease(gateway, deps))  # this request's
            await repo.add(payment)
            repo.add_idempotency_record(
                IdempotencyRecord(idempotency_key, "payment", fingerprint.value, payment.id, now)
            )
            try:
                await uow.commit()
                created = payment
            except UniqueViolation:
                logger.info("payment key {} lost a race; replaying", idempotency_key)
    if created is not None:
        return PaymentResult(await _charge(tenant, created, gateway, deps), created=True)
    if payment_id is None:
        async with deps.uow() as uow:
            repo = uow.payments(tenant)
            payment_id = await replayed(repo, idempotency_key, "payment", fingerprint)
        if payment_id is None:
            raise ConcurrentWrite("the payment could not be stored; retry the request")
    return PaymentResult(await resume_payment(tenant, payment_id, deps), created=False)


async def _learn_if_unseen(tenant: str, invoice_id: str, deps: Dependencies) -> None:
    """An invoice this service has not seen finalized (unknown, or a draft here) may have
    been finalized a moment ago, its event still on the way: ask the invoice service
    instead of refusing, and record the answer. Outside any transaction (network I/O)."""
    if deps.invoices is None:
        return
    async with deps.uow() as uow:
        known = await uow.payments(tenant).get_invoice(invoice_id)
    if known is not None and not known.needs_lookup:
        return
    try:
        snapshot = await deps.invoices.lookup(tenant, invoice_id)
    except PeerUnavailable as exc:
        # Then what this service knows decides (a refusal says to retry).
        logger.warning("could not ask the invoice service about {}: {}", invoice_id, exc)
        return
    if snapshot is None or snapshot.invoice_id != invoice_id:
        return
    async with deps.uow() as uow:
        repo = uow.payments(tenant)
        now = deps.clock()
        invoice = await repo.get_invoice(invoice_id, for_update=True)
        if invoice is None:
            invoice = PayableInvoice.learned(snapshot, now)
        else:
            invoice.learn(snapshot, now)
        await repo.save_invoice(invoice)
        try:
            await uow.commit()
        except UniqueViolation:
            # The finalized event created the row meanwhile: it says the same.
            logger.info("invoice {} was recorded concurrently", invoice_id)


async def resume_payment(tenant: str, payment_id: str, deps: Dependencies) -> Payment:
    """A repeated request, or the recovery sweep: call the gateway again only if the last
    outcome is unknown and no other attempt is in flight."""
    async with deps.uow() as uow:
        repo = uow.payments(tenant)
        payment = await repo.get(payment_id, for_update=True)
        if payment is None:
            raise PaymentNotFound(f"payment {payment_id} not found")
        gateway = deps.gateways.get(payment.gateway)
        now = deps.clock()
        if not payment.begin_attempt(now, attempt_lease(gateway, deps)):
            # The last attempt it may make stalled: its outcome is as unknown as after a
            # gateway error, and the same rule applies (the payment fails; a late webhook
            # saying otherwise is logged for reconciliation).
            if payment.stalled(now) and payment.gateway_error(
                ABANDONED, "no outcome was recorded for the last gateway attempt", now
            ):
                emit_failed(uow, tenant, payment)
                await repo.save(payment)
                await uow.commit()
            return payment
        await repo.save(payment)
        await uow.commit()
    return await _charge(tenant, payment, gateway, deps)


async def _charge(
    tenant: str, payment: Payment, gateway: PaymentGateway, deps: Dependencies
) -> Payment:
    result = await outcome_of(
        gateway,
        gateway.charge(
            amount=payment.amount,
            token=payment.payment_method,
            idempotency_key=gateway_idempotency_key("payment", payment.id),
            metadata={
                "tenant": tenant,
                "payment_id": payment.id,
                "invoice_id": payment.invoice_id,
            },
        ),
    )
    return await recorded(
        lambda: _apply_charge(tenant, payment.id, gateway.name, result, deps),
        f"payment {payment.id}",
        deps,
    )


async def _apply_charge(
    tenant: str,
    payment_id: str,
    gateway: str,
    result: ChargeResult | GatewayUnavailable,
    deps: Dependencies,
) -> Payment:
    async with deps.uow() as uow:
        repo = uow.payments(tenant)
        payment = await repo.get(payment_id, for_update=True)
        if payment is None:
            raise PaymentNotFound(f"payment {payment_id} not found")
        now = deps.clock()
        if isinstance(result, GatewayUnavailable):
            logger.warning("payment {}: gateway error {}", payment.id, result.message)
            if payment.gateway_error(result.code, result.message, now):
                emit_failed(uow, tenant, payment)
        elif result.status is ChargeStatus.PENDING and result.reference:
            if payment.status is PaymentStatus.PENDING:
                payment.await_confirmation(result.reference, now)
        elif result.status is ChargeStatus.SUCCEEDED:
            settle(uow, tenant, payment, True, result, f"charged by {gateway}", now)
        else:
            settle(uow, tenant, payment, False, result, f"declined by {gateway}", now)
        await repo.save(payment)
        await uow.commit()
    return payment


def settle(
    uow: PaymentUnitOfWork,
    tenant: str,
    payment: Payment,
    succeeded: bool,
    result: ChargeResult | WebhookNotification,
    reason: str,
    now: datetime,
) -> str:
    """Apply a final outcome; returns the effect. A contradiction (a success reported for
    a payment we already failed) is logged for reconciliation, never silently applied."""
    try:
        if succeeded:
            if payment.succeed(result.reference, now, reason):
                emit_received(uow, tenant, payment)
                return "applied"
        else:
            code = result.failure_code or "payment_failed"
            if payment.fail(code, result.failure_message, now, reason):
                emit_failed(uow, tenant, payment)
                return "applied"
    except InvalidStatusTransition as exc:
        logger.error("payment {} needs reconciliation: {} ({})", payment.id, exc, reason)
        return "conflict"
    return "none"


def emit_received(uow: PaymentUnitOfWork, tenant: str, payment: Payment) -> None:
    uow.emit(
        new_event(
            source=SOURCE,
            event_type=PAYMENT_RECEIVED,
            data=PaymentReceived(
                payment_id=payment.id,
                invoice_id=payment.invoice_id,
                currency=payment.amount.currency,
                amount=payment.amount.amount,
                gateway=payment.gateway,
                gateway_reference=payment.gateway_reference,
            ),
            subject=payment.id,
            tenant=tenant,
        ),
        aggregate=f"payment:{payment.id}",
    )


def emit_failed(uow: PaymentUnitOfWork, tenant: str, payment: Payment) -> None:
    uow.emit(
        new_event(
            source=SOURCE,
            event_type=PAYMENT_FAILED,
            data=PaymentFailed(
                payment_id=payment.id,
                invoice_id=payment.invoice_id,
                currency=payment.amount.currency,
                amount=payment.amount.amount,
                gateway=payment.gateway,
                failure_code=payment.failure_code or "payment_failed",
                failure_message=payment.failure_message,
            ),
            subject=payment.id,
            tenant=tenant,
        ),
        aggregate=f"payment:{payment.id}",
    )
