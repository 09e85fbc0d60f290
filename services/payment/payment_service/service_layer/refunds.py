"""Refunding a payment, fully or partly: the same discipline as paying (the key and the
pending refund committed before the gateway call, the first attempt leased to its request)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from loguru import logger

from billing_common.event_schemas import PAYMENT_REFUNDED, PaymentRefunded
from billing_common.events import new_event
from billing_common.money import Money
from billing_common.uniqueness import UniqueViolation
from payment_service.domain.errors import (
    InvalidStatusTransition,
    PaymentNotFound,
    PaymentNotRefundable,
)
from payment_service.domain.gateway import (
    ChargeStatus,
    GatewayUnavailable,
    PaymentGateway,
    RefundResult,
)
from payment_service.domain.model import Payment, Refund
from payment_service.service_layer.dependencies import Dependencies
from payment_service.service_layer.gateways import outcome_of
from payment_service.service_layer.idempotency import (
    gateway_idempotency_key,
    normalised,
    replayed,
    request_hash,
)
from payment_service.service_layer.outcomes import attempt_lease, recorded
from payment_service.service_layer.payments import ABANDONED, SOURCE
from payment_service.service_layer.ports import (
    ConcurrentWrite,
    IdempotencyRecord,
    PaymentUnitOfWork,
)


def credit_note_of_refund_key(key: str) -> str | None:
    """The credit note a refund was made for (its key is creditnote-refund:<id>[:<part>])."""
    prefix = "creditnote-refund:"
    if not key.startswith(prefix):
        return None
    return key.removeprefix(prefix).split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    payment: Payment
    refund: Refund
    created: bool


async def refund(
    tenant: str,
    payment_id: str,
    idempotency_key: str,
    amount: Decimal | None,
    deps: Dependencies,
) -> RefundOutcome:
    fingerprint = request_hash("refund", {"payment_id": payment_id, "amount": normalised(amount)})
    created: tuple[Payment, Refund, PaymentGateway] | None = None
    async with deps.uow() as uow:
        repo = uow.payments(tenant)
        refund_id = await replayed(repo, idempotency_key, "refund", fingerprint)
        payment: Payment | None = None
        if refund_id is None:
            payment = await repo.get(payment_id, for_update=True)
            if payment is None:
                raise PaymentNotFound(f"payment {payment_id} not found")
            refund_id = await replayed(repo, idempotency_key, "refund", fingerprint)
        if refund_id is None and payment is not None:
            gateway = deps.gateways.get(payment.gateway)
            if payment.gateway_reference is None:
                raise PaymentNotRefundable(
                    f"payment {payment.id} has no gateway reference to refund"
                )
            now = deps.clock()
            money = None if amount is None else Money.of(amount, payment.amount.currency)
            requested = payment.request_refund(
                refund_id=deps.new_id(),
                amount=money,
                idempotency_key=idempotency_key,
                now=now,
            )
            requested.begin_attempt(now, attempt_lease(gateway, deps))
            await repo.save(payment)
            repo.add_idempotency_record(
                IdempotencyRecord(idempotency_key, "refund", fingerprint.value, requested.id, now)
            )
            try:
                await uow.commit()
                created = (payment, requested, gateway)
            except UniqueViolation:
                logger.info("refund key {} lost a race; replaying", idempotency_key)
    if created is not None:
        stored, requested, gateway = created
        done = await _refund_call(tenant, stored, requested, gateway, deps)
        return RefundOutcome(done, done.refund(requested.id), created=True)
    if refund_id is None:
        async with deps.uow() as uow:
            repo = uow.payments(tenant)
            refund_id = await replayed(repo, idempotency_key, "refund", fingerprint)
        if refund_id is None:
            raise ConcurrentWrite("the refund could not be stored; retry the request")
    resumed = await resume_refund(tenant, payment_id, refund_id, deps)
    return RefundOutcome(resumed, resumed.refund(refund_id), created=False)


async def resume_refund(
    tenant: str, payment_id: str, refund_id: str, deps: Dependencies
) -> Payment:
    """A repeated request, or the recovery sweep: see payments.resume_payment."""
    async with deps.uow() as uow:
        repo = uow.payments(tenant)
        payment = await repo.get(payment_id, for_update=True)
        if payment is None:
            raise PaymentNotFound(f"payment {payment_id} not found")
        gateway = deps.gateways.get(payment.gateway)
        pending = payment.refund(refund_id)
        now = deps.clock()
        if not pending.begin_attempt(now, attempt_lease(gateway, deps)):
            if pending.stalled(now) and payment.refund_gateway_error(
                refund_id, ABANDONED, "no outcome was recorded for the last gateway attempt", now
            ):  # as in payments.resume_payment
                await repo.save(payment)
                await uow.commit()
            return payment
        await repo.save(payment)
        await uow.commit()
    return await _refund_call(tenant, payment, pending, gateway, deps)


async def _refund_call(
    tenant: str,
    payment: Payment,
    pending: Refund,
    gateway: PaymentGateway,
    deps: Dependencies,
) -> Payment:
    assert payment.gateway_reference is not None
    result = await outcome_of(
        gateway,
        gateway.refund(
            charge_reference=payment.gateway_reference,
            amount=pending.amount,
            idempotency_key=gateway_idempotency_key("refund", pending.id),
            metadata={
                "tenant": tenant,
                "payment_id": payment.id,
                "refund_id": pending.id,
                "invoice_id": payment.invoice_id,
            },
        ),
    )

    return await recorded(
        lambda: _apply_refund_result(tenant, payment.id, pending.id, result, deps),
        f"refund {pending.id}",
        deps,
    )


async def _apply_refund_result(
    tenant: str,
    payment_id: str,
    refund_id: str,
    result: RefundResult | GatewayUnavailable,
    deps: Dependencies,
) -> Payment:
    async with deps.uow() as uow:
        repo = uow.payments(tenant)
        current = await repo.get(payment_id, for_update=True)
        if current is None:
            raise PaymentNotFound(f"payment {payment_id} not found")
        now = deps.clock()
        if isinstance(result, GatewayUnavailable):
            logger.warning("refund {}: gateway error {}", refund_id, result.message)
            current.refund_gateway_error(refund_id, result.code, result.message, now)
        elif result.status is ChargeStatus.SUCCEEDED:
            complete_refund(uow, tenant, current, refund_id, result.reference, now)
        elif result.status is ChargeStatus.PENDING and result.reference:
            current.refund_awaits_confirmation(refund_id, result.reference, now)
        else:
            current.fail_refund(
                refund_id, result.failure_code or "refund_failed", result.failure_message, now
            )
        await repo.save(current)
        await uow.commit()
    return current


def complete_refund(
    uow: PaymentUnitOfWork,
    tenant: str,
    payment: Payment,
    refund_id: str,
    reference: str | None,
    now: datetime,
) -> str:
    """Apply a refund's success; returns the effect (see payments.settle)."""
    try:
        if not payment.complete_refund(refund_id, reference, now):
            return "none"
    except InvalidStatusTransition as exc:
        logger.error("refund {} needs reconciliation: {}", refund_id, exc)
        return "conflict"
    done = payment.refund(refund_id)
    uow.emit(
        new_event(
            source=SOURCE,
            event_type=PAYMENT_REFUNDED,
            data=PaymentRefunded(
                payment_id=payment.id,
                refund_id=done.id,
                invoice_id=payment.invoice_id,
                currency=done.amount.currency,
                amount=done.amount.amount,
                gateway=payment.gateway,
                credit_note_id=credit_note_of_refund_key(done.idempotency_key),
            ),
            subject=payment.id,
            tenant=tenant,
        ),
        aggregate=f"payment:{payment.id}",
    )
    return "applied"
