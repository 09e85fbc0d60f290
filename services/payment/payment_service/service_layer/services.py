"""Use cases of the payment service.

Paying never charges twice: the Idempotency-Key and the pending payment are committed together
*before* the gateway is called, and the first gateway attempt is leased to the request that
created them. A repeated request (same key, same body) finds the payment and returns it; it
only calls the gateway again when the last attempt's outcome was unknown, and then with the
same gateway idempotency key. Gateway I/O never happens inside a database transaction.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TypeVar

from loguru import logger
from pydantic import BaseModel, ValidationError

from billing_common.event_schemas import (
    PAYMENT_FAILED,
    PAYMENT_RECEIVED,
    PAYMENT_REFUNDED,
    InvoiceCreated,
    InvoiceFinalized,
    InvoicePaymentRejected,
    InvoiceStatusChanged,
    InvoiceVoided,
    PaymentFailed,
    PaymentReceived,
    PaymentRefunded,
)
from billing_common.events import CloudEvent, new_event
from billing_common.money import Money, MoneyError, format_amount
from billing_common.ports import PeerUnavailable, PermanentEventError
from payment_service.adapters.repository import (
    IdempotencyRecord,
    PaymentLocation,
    PaymentRepository,
)
from payment_service.domain.errors import (
    AmountExceedsRefundable,
    IdempotencyKeyReused,
    InvalidStatusTransition,
    PayableInvoiceNotFound,
    PaymentNotFound,
    PaymentNotRefundable,
)
from payment_service.domain.gateway import (
    ChargeResult,
    ChargeStatus,
    GatewayUnavailable,
    PaymentGateway,
    RefundResult,
    WebhookKind,
    WebhookNotification,
)
from payment_service.domain.model import (
    CAPTURED,
    InvoiceBalance,
    InvoiceState,
    PayableInvoice,
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
    invoice_balance,
    invoice_not_known,
    plan_payment,
)
from payment_service.service_layer.gateways import GatewayRegistry
from payment_service.service_layer.ports import InvoiceDirectory
from payment_service.service_layer.unit_of_work import ConcurrentWrite, PaymentUnitOfWork

SOURCE = "/billing/payment"
CONSUMER = "payment"

Clock = Callable[[], datetime]
UnitOfWorkFactory = Callable[[], PaymentUnitOfWork]
SchemaT = TypeVar("SchemaT", bound=BaseModel)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _normalised(amount: Decimal | None) -> str | None:
    return None if amount is None else format_amount(amount.normalize())


def request_hash(operation: str, fields: Mapping[str, str | None]) -> str:
    """Fingerprint of a request's meaning (not its bytes): "10.0" and "10.00" are the same."""
    canonical = json.dumps({"operation": operation, **fields}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PayCommand:
    invoice_id: str
    payment_method: str
    gateway: str
    amount: Decimal | None = None
    currency: str | None = None

    def fingerprint(self) -> str:
        return request_hash(
            "payment",
            {
                "invoice_id": self.invoice_id,
                "payment_method": self.payment_method,
                "gateway": self.gateway,
                "amount": _normalised(self.amount),
                "currency": self.currency.upper() if self.currency else None,
            },
        )


@dataclass(frozen=True, slots=True)
class PaymentResult:
    payment: Payment
    created: bool  # False: an earlier request with the same Idempotency-Key made it


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    payment: Payment
    refund: Refund
    created: bool


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    duplicate: bool
    effect: str  # applied | none (already so) | ignored (not for us) | conflict (logged)
    payment_id: str | None = None


@dataclass(frozen=True, slots=True)
class InvoiceView:
    invoice: PayableInvoice
    balance: InvoiceBalance | None  # None for a void tombstone without amounts


def auto_refund_key(payment_id: str) -> str:
    """The Idempotency-Key of the refund this service makes by itself for a payment the
    invoice refused: one per payment, so redelivered events refund it once."""
    return f"auto-refund:{payment_id}"


class AutoRefundIncomplete(Exception):
    """The automatic refund's gateway outcome is not known yet: the event is delivered again
    and the refund retried under the same key."""


def gateway_idempotency_key(kind: str, resource_id: str) -> str:
    """Keys sent to the gateway derive from our ids: unique across tenants (one gateway
    account serves them all) and the same on every retry of one payment or refund."""
    return f"billing-{kind}-{resource_id}"


async def _replayed(
    repo: PaymentRepository, key: str, operation: str, fingerprint: str
) -> str | None:
    """The resource an earlier request with this key created, or None if the key is new."""
    record = await repo.idempotency_record(key)
    if record is None:
        return None
    if record.operation != operation or record.request_hash != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different request; "
            "use a new key for a new request",
            first_used_at=record.created_at.isoformat(),
        )
    return record.resource_id


class PaymentService:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        gateways: GatewayRegistry,
        *,
        invoices: InvoiceDirectory | None = None,
        clock: Clock = utcnow,
        new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self._uow = uow
        self._gateways = gateways
        self._invoices = invoices
        self._clock = clock
        self._new_id = new_id

    # -- paying ----------------------------------------------------------------------------

    async def pay(self, tenant: str, idempotency_key: str, command: PayCommand) -> PaymentResult:
        gateway = self._gateways.get(command.gateway)
        fingerprint = command.fingerprint()
        await self._learn_if_unseen(tenant, command.invoice_id)
        created: Payment | None = None
        invoice: PayableInvoice | None = None
        async with self._uow() as uow:
            repo = uow.payments(tenant)
            payment_id = await _replayed(repo, idempotency_key, "payment", fingerprint)
            if payment_id is None:
                # The lock serialises payments of one invoice (PostgreSQL); a request with
                # the same key that committed while we waited is seen by the second lookup.
                invoice = await repo.get_invoice(command.invoice_id, for_update=True)
                payment_id = await _replayed(repo, idempotency_key, "payment", fingerprint)
            if payment_id is None:
                if invoice is None:
                    raise invoice_not_known(command.invoice_id)
                amount = plan_payment(
                    invoice,
                    await repo.for_invoice(invoice.invoice_id),
                    amount=command.amount,
                    currency=command.currency,
                )
                now = self._clock()
                payment = Payment.start(
                    payment_id=self._new_id(),
                    invoice_id=invoice.invoice_id,
                    customer_id=invoice.customer_id,
                    amount=amount,
                    gateway=gateway.name,
                    payment_method=command.payment_method,
                    idempotency_key=idempotency_key,
                    now=now,
                )
                payment.begin_attempt(now)  # the first attempt belongs to this request
                await repo.add(payment)
                repo.add_idempotency_record(
                    IdempotencyRecord(idempotency_key, "payment", fingerprint, payment.id, now)
                )
                try:
                    await uow.commit()
                    created = payment
                except ConcurrentWrite:
                    logger.info("payment key {} lost a race; replaying", idempotency_key)
        if created is not None:
            return PaymentResult(await self._charge(tenant, created, gateway), created=True)
        if payment_id is None:
            async with self._uow() as uow:
                repo = uow.payments(tenant)
                payment_id = await _replayed(repo, idempotency_key, "payment", fingerprint)
            if payment_id is None:
                raise ConcurrentWrite("the payment could not be stored; retry the request")
        return PaymentResult(await self._resume_payment(tenant, payment_id), created=False)

    async def _learn_if_unseen(self, tenant: str, invoice_id: str) -> None:
        """An invoice this service has not seen finalized (unknown, or a draft here) may have
        been finalized a moment ago, its event still on the way: ask the invoice service
        instead of refusing, and record the answer. Outside any transaction (network I/O)."""
        if self._invoices is None:
            return
        async with self._uow() as uow:
            known = await uow.payments(tenant).get_invoice(invoice_id)
        if known is not None and not known.needs_lookup:
            return
        try:
            snapshot = await self._invoices.lookup(tenant, invoice_id)
        except PeerUnavailable as exc:
            # Then what this service knows decides (a refusal says to retry).
            logger.warning("could not ask the invoice service about {}: {}", invoice_id, exc)
            return
        if snapshot is None or snapshot.invoice_id != invoice_id:
            return
        async with self._uow() as uow:
            repo = uow.payments(tenant)
            now = self._clock()
            invoice = await repo.get_invoice(invoice_id, for_update=True)
            if invoice is None:
                invoice = PayableInvoice.learned(snapshot, now)
            else:
                invoice.learn(snapshot, now)
            await repo.save_invoice(invoice)
            try:
                await uow.commit()
            except ConcurrentWrite:
                # The finalized event created the row meanwhile: it says the same.
                logger.info("invoice {} was recorded concurrently", invoice_id)

    async def _resume_payment(self, tenant: str, payment_id: str) -> Payment:
        """A repeated request: retry the gateway only if the last outcome was unknown."""
        async with self._uow() as uow:
            repo = uow.payments(tenant)
            payment = await repo.get(payment_id, for_update=True)
            if payment is None:
                raise PaymentNotFound(f"payment {payment_id} not found")
            if not payment.begin_attempt(self._clock()):
                return payment
            await repo.save(payment)
            await uow.commit()
        return await self._charge(tenant, payment, self._gateways.get(payment.gateway))

    async def _charge(self, tenant: str, payment: Payment, gateway: PaymentGateway) -> Payment:
        result: ChargeResult | GatewayUnavailable
        try:
            result = await gateway.charge(
                amount=payment.amount,
                token=payment.payment_method,
                idempotency_key=gateway_idempotency_key("payment", payment.id),
                metadata={
                    "tenant": tenant,
                    "payment_id": payment.id,
                    "invoice_id": payment.invoice_id,
                },
            )
        except GatewayUnavailable as exc:
            result = exc
        except Exception as exc:  # noqa: BLE001 - an adapter bug still leaves the outcome unknown
            logger.opt(exception=exc).error("gateway {} raised unexpectedly", gateway.name)
            result = GatewayUnavailable("gateway_error", f"{type(exc).__name__}: {exc}")
        return await self._apply_charge(tenant, payment.id, gateway.name, result)

    async def _apply_charge(
        self,
        tenant: str,
        payment_id: str,
        gateway: str,
        result: ChargeResult | GatewayUnavailable,
    ) -> Payment:
        async with self._uow() as uow:
            repo = uow.payments(tenant)
            payment = await repo.get(payment_id, for_update=True)
            if payment is None:
                raise PaymentNotFound(f"payment {payment_id} not found")
            now = self._clock()
            if isinstance(result, GatewayUnavailable):
                logger.warning("payment {}: gateway error {}", payment.id, result.message)
                if payment.gateway_error(result.code, result.message, now):
                    self._emit_failed(uow, tenant, payment)
            elif result.status is ChargeStatus.PENDING and result.reference:
                if payment.status is PaymentStatus.PENDING:
                    payment.await_confirmation(result.reference, now)
            elif result.status is ChargeStatus.SUCCEEDED:
                self._settle(uow, tenant, payment, True, result, f"charged by {gateway}", now)
            else:
                self._settle(uow, tenant, payment, False, result, f"declined by {gateway}", now)
            await repo.save(payment)
            await uow.commit()
        return payment

    def _settle(
        self,
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
                    self._emit_received(uow, tenant, payment)
                    return "applied"
            else:
                code = result.failure_code or "payment_failed"
                if payment.fail(code, result.failure_message, now, reason):
                    self._emit_failed(uow, tenant, payment)
                    return "applied"
        except InvalidStatusTransition as exc:
            logger.error("payment {} needs reconciliation: {} ({})", payment.id, exc, reason)
            return "conflict"
        return "none"

    # -- refunds ---------------------------------------------------------------------------

    async def refund(
        self, tenant: str, payment_id: str, idempotency_key: str, amount: Decimal | None
    ) -> RefundOutcome:
        fingerprint = request_hash(
            "refund", {"payment_id": payment_id, "amount": _normalised(amount)}
        )
        created: tuple[Payment, Refund, PaymentGateway] | None = None
        async with self._uow() as uow:
            repo = uow.payments(tenant)
            refund_id = await _replayed(repo, idempotency_key, "refund", fingerprint)
            payment: Payment | None = None
            if refund_id is None:
                payment = await repo.get(payment_id, for_update=True)
                if payment is None:
                    raise PaymentNotFound(f"payment {payment_id} not found")
                refund_id = await _replayed(repo, idempotency_key, "refund", fingerprint)
            if refund_id is None and payment is not None:
                gateway = self._gateways.get(payment.gateway)
                if payment.gateway_reference is None:
                    raise PaymentNotRefundable(
                        f"payment {payment.id} has no gateway reference to refund"
                    )
                now = self._clock()
                money = None if amount is None else Money.of(amount, payment.amount.currency)
                refund = payment.request_refund(
                    refund_id=self._new_id(),
                    amount=money,
                    idempotency_key=idempotency_key,
                    now=now,
                )
                refund.begin_attempt(now)
                await repo.save(payment)
                repo.add_idempotency_record(
                    IdempotencyRecord(idempotency_key, "refund", fingerprint, refund.id, now)
                )
                try:
                    await uow.commit()
                    created = (payment, refund, gateway)
                except ConcurrentWrite:
                    logger.info("refund key {} lost a race; replaying", idempotency_key)
        if created is not None:
            stored, refund, gateway = created
            done = await self._refund_call(tenant, stored, refund, gateway)
            return RefundOutcome(done, done.refund(refund.id), created=True)
        if refund_id is None:
            async with self._uow() as uow:
                repo = uow.payments(tenant)
                refund_id = await _replayed(repo, idempotency_key, "refund", fingerprint)
            if refund_id is None:
                raise ConcurrentWrite("the refund could not be stored; retry the request")
        resumed = await self._resume_refund(tenant, payment_id, refund_id)
        return RefundOutcome(resumed, resumed.refund(refund_id), created=False)

    async def _resume_refund(self, tenant: str, payment_id: str, refund_id: str) -> Payment:
        async with self._uow() as uow:
            repo = uow.payments(tenant)
            payment = await repo.get(payment_id, for_update=True)
            if payment is None:
                raise PaymentNotFound(f"payment {payment_id} not found")
            refund = payment.refund(refund_id)
            if not refund.begin_attempt(self._clock()):
                return payment
            await repo.save(payment)
            await uow.commit()
        gateway = self._gateways.get(payment.gateway)
        return await self._refund_call(tenant, payment, refund, gateway)

    async def _refund_call(
        self, tenant: str, payment: Payment, refund: Refund, gateway: PaymentGateway
    ) -> Payment:
        assert payment.gateway_reference is not None
        result: RefundResult | GatewayUnavailable
        try:
            result = await gateway.refund(
                charge_reference=payment.gateway_reference,
                amount=refund.amount,
                idempotency_key=gateway_idempotency_key("refund", refund.id),
                metadata={
                    "tenant": tenant,
                    "payment_id": payment.id,
                    "refund_id": refund.id,
                    "invoice_id": payment.invoice_id,
                },
            )
        except GatewayUnavailable as exc:
            result = exc
        except Exception as exc:  # noqa: BLE001 - an adapter bug still leaves the outcome unknown
            logger.opt(exception=exc).error("gateway {} raised unexpectedly", gateway.name)
            result = GatewayUnavailable("gateway_error", f"{type(exc).__name__}: {exc}")

        async with self._uow() as uow:
            repo = uow.payments(tenant)
            current = await repo.get(payment.id, for_update=True)
            if current is None:
                raise PaymentNotFound(f"payment {payment.id} not found")
            now = self._clock()
            if isinstance(result, GatewayUnavailable):
                logger.warning("refund {}: gateway error {}", refund.id, result.message)
                current.refund_gateway_error(refund.id, result.code, result.message, now)
            elif result.status is ChargeStatus.SUCCEEDED:
                self._complete_refund(uow, tenant, current, refund.id, result.reference, now)
            elif result.status is ChargeStatus.PENDING and result.reference:
                current.refund_awaits_confirmation(refund.id, result.reference, now)
            else:
                current.fail_refund(
                    refund.id, result.failure_code or "refund_failed", result.failure_message, now
                )
            await repo.save(current)
            await uow.commit()
        return current

    def _complete_refund(
        self,
        uow: PaymentUnitOfWork,
        tenant: str,
        payment: Payment,
        refund_id: str,
        reference: str | None,
        now: datetime,
    ) -> str:
        try:
            if not payment.complete_refund(refund_id, reference, now):
                return "none"
        except InvalidStatusTransition as exc:
            logger.error("refund {} needs reconciliation: {}", refund_id, exc)
            return "conflict"
        refund = payment.refund(refund_id)
        uow.emit(
            new_event(
                source=SOURCE,
                event_type=PAYMENT_REFUNDED,
                data=PaymentRefunded(
                    payment_id=payment.id,
                    refund_id=refund.id,
                    invoice_id=payment.invoice_id,
                    currency=refund.amount.currency,
                    amount=refund.amount.amount,
                    gateway=payment.gateway,
                ),
                subject=payment.id,
                tenant=tenant,
            ),
            aggregate=f"payment:{payment.id}",
        )
        return "applied"

    # -- webhooks --------------------------------------------------------------------------

    async def handle_webhook(
        self, gateway_name: str, notification: WebhookNotification
    ) -> WebhookOutcome:
        """Apply a verified webhook exactly once (its event id is recorded with the effect)."""
        async with self._uow() as uow:
            if await uow.webhooks.seen(gateway_name, notification.event_id):
                return WebhookOutcome(duplicate=True, effect="none")
            now = self._clock()
            location: PaymentLocation | None = None
            effect = "ignored"
            payment: Payment | None = None
            if notification.kind is not WebhookKind.IGNORED and notification.reference:
                location = await self._locate(uow, gateway_name, notification)
                if location is None:
                    # Not recorded, so the gateway's redelivery gets another chance once our
                    # own record of the reference is committed.
                    raise PaymentNotFound(
                        f"no payment or refund for {gateway_name} reference "
                        f"{notification.reference}"
                    )
                repo = uow.payments(location.tenant)
                payment = await repo.get(location.payment_id, for_update=True)
                if payment is None:
                    raise PaymentNotFound(f"payment {location.payment_id} not found")
                effect = self._apply_webhook(uow, location, payment, notification, now)
                await repo.save(payment)
            uow.webhooks.record(
                gateway=gateway_name,
                event_id=notification.event_id,
                event_type=notification.event_type,
                outcome=effect,
                received_at=now,
                location=location,
            )
            try:
                await uow.commit()
            except ConcurrentWrite:
                return WebhookOutcome(duplicate=True, effect="none")
        return WebhookOutcome(
            duplicate=False, effect=effect, payment_id=payment.id if payment else None
        )

    async def _locate(
        self, uow: PaymentUnitOfWork, gateway: str, notification: WebhookNotification
    ) -> PaymentLocation | None:
        assert notification.reference is not None
        tenant = notification.metadata.get("tenant")
        if notification.kind in (WebhookKind.REFUND_SUCCEEDED, WebhookKind.REFUND_FAILED):
            found = await uow.webhooks.refund_by_reference(gateway, notification.reference)
            refund_id = notification.metadata.get("refund_id")
            if found is None and tenant and refund_id:
                found = await uow.webhooks.refund_of_tenant(gateway, tenant, refund_id)
            return found
        found = await uow.webhooks.payment_by_reference(gateway, notification.reference)
        payment_id = notification.metadata.get("payment_id")
        if found is None and tenant and payment_id:
            # The webhook overtook our own record of the reference: our metadata finds it.
            found = await uow.webhooks.payment_of_tenant(gateway, tenant, payment_id)
        return found

    def _apply_webhook(
        self,
        uow: PaymentUnitOfWork,
        location: PaymentLocation,
        payment: Payment,
        notification: WebhookNotification,
        now: datetime,
    ) -> str:
        reason = f"{payment.gateway} webhook {notification.event_type} {notification.event_id}"
        kind = notification.kind
        if kind is WebhookKind.PAYMENT_SUCCEEDED:
            return self._settle(uow, location.tenant, payment, True, notification, reason, now)
        if kind is WebhookKind.PAYMENT_FAILED:
            return self._settle(uow, location.tenant, payment, False, notification, reason, now)
        assert location.refund_id is not None
        if kind is WebhookKind.REFUND_SUCCEEDED:
            return self._complete_refund(
                uow, location.tenant, payment, location.refund_id, notification.reference, now
            )
        failed = payment.fail_refund(
            location.refund_id,
            notification.failure_code or "refund_failed",
            notification.failure_message,
            now,
        )
        return "applied" if failed else "none"

    # -- events out ------------------------------------------------------------------------

    @staticmethod
    def _emit_received(uow: PaymentUnitOfWork, tenant: str, payment: Payment) -> None:
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

    @staticmethod
    def _emit_failed(uow: PaymentUnitOfWork, tenant: str, payment: Payment) -> None:
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

    # -- events in -------------------------------------------------------------------------

    async def on_invoice_created(self, event: CloudEvent) -> None:
        tenant, data = _parse(event, InvoiceCreated)
        async with self._uow() as uow:
            if not await uow.claim_event(CONSUMER, event):
                return
            repo = uow.payments(tenant)
            now = self._clock()
            invoice = await repo.get_invoice(data.invoice_id, for_update=True)
            try:
                if invoice is None:
                    invoice = PayableInvoice.created(
                        invoice_id=data.invoice_id,
                        customer_id=data.customer_id,
                        currency=data.currency,
                        total=data.total,
                        amount_due=data.amount_due,
                        now=now,
                    )
                else:
                    invoice.on_created(
                        customer_id=data.customer_id,
                        currency=data.currency,
                        total=data.total,
                        amount_due=data.amount_due,
                        now=now,
                    )
            except MoneyError as exc:
                raise PermanentEventError(f"{event.type} {event.id}: {exc}") from exc
            await repo.save_invoice(invoice)
            await uow.commit()

    async def on_invoice_finalized(self, event: CloudEvent) -> None:
        tenant, data = _parse(event, InvoiceFinalized)
        async with self._uow() as uow:
            if not await uow.claim_event(CONSUMER, event):
                return
            repo = uow.payments(tenant)
            now = self._clock()
            invoice = await repo.get_invoice(data.invoice_id, for_update=True)
            try:
                if invoice is None:  # the created event was missed or is still on its way
                    invoice = PayableInvoice.created(
                        invoice_id=data.invoice_id,
                        customer_id=data.customer_id,
                        currency=data.currency,
                        total=data.total,
                        amount_due=data.amount_due,
                        now=now,
                    )
                invoice.finalize(
                    number=data.number,
                    customer_id=data.customer_id,
                    currency=data.currency,
                    total=data.total,
                    amount_due=data.amount_due,
                    now=now,
                    version=data.version,
                )
            except MoneyError as exc:
                raise PermanentEventError(f"{event.type} {event.id}: {exc}") from exc
            await repo.save_invoice(invoice)
            await uow.commit()

    async def on_invoice_voided(self, event: CloudEvent) -> None:
        tenant, data = _parse(event, InvoiceVoided)
        async with self._uow() as uow:
            if not await uow.claim_event(CONSUMER, event):
                return
            repo = uow.payments(tenant)
            now = self._clock()
            invoice = await repo.get_invoice(data.invoice_id, for_update=True)
            if invoice is None:
                invoice = PayableInvoice.void_tombstone(
                    invoice_id=data.invoice_id, number=data.number, now=now
                )
            else:
                invoice.number = invoice.number or data.number
                invoice.void(now, data.version)
            await repo.save_invoice(invoice)
            await uow.commit()

    async def on_invoice_status_changed(self, event: CloudEvent) -> None:
        """Every status change of the invoice (paid, re-opened by a refund, uncollectible,
        void...): a charge is refused at once when the invoice stops being payable."""
        tenant, data = _parse(event, InvoiceStatusChanged)
        try:
            status = InvoiceState(data.status)
        except ValueError as exc:
            raise PermanentEventError(f"{event.type} {event.id}: unknown status") from exc
        async with self._uow() as uow:
            if not await uow.claim_event(CONSUMER, event):
                return
            repo = uow.payments(tenant)
            now = self._clock()
            invoice = await repo.get_invoice(data.invoice_id, for_update=True)
            try:
                if invoice is None:  # the earlier events are missed or still on their way
                    invoice = PayableInvoice.created(
                        invoice_id=data.invoice_id,
                        customer_id=data.customer_id,
                        currency=data.currency,
                        total=data.total,
                        amount_due=data.total,  # payable for the total less our payments
                        now=now,
                    )
            except MoneyError as exc:
                raise PermanentEventError(f"{event.type} {event.id}: {exc}") from exc
            invoice.number = invoice.number or data.number
            invoice.observe(status, data.version, now)
            await repo.save_invoice(invoice)
            await uow.commit()

    async def on_invoice_payment_rejected(self, event: CloudEvent) -> None:
        """The invoice refused a payment this service captured (it had become void or
        uncollectible before the payment reached it): give the money back, in full.

        Idempotent through the refund's own Idempotency-Key (one per payment), which is
        committed with the pending refund before the gateway is called; an unknown gateway
        outcome raises, so the event comes again and the refund is retried with that key."""
        tenant, data = _parse(event, InvoicePaymentRejected)
        async with self._uow() as uow:
            payment = await uow.payments(tenant).get(data.payment_id)
        if payment is None:
            raise PermanentEventError(f"{event.type} {event.id}: no payment {data.payment_id}")
        if payment.status not in CAPTURED:
            return  # nothing was taken
        try:
            outcome = await self.refund(tenant, payment.id, auto_refund_key(payment.id), None)
        except AmountExceedsRefundable:
            logger.info("payment {} was refunded already", payment.id)
            return
        refund = outcome.refund
        logger.warning(
            "payment {} refused by invoice {} ({}): refund {} {}",
            payment.id,
            data.invoice_id,
            data.reason,
            refund.id,
            refund.status,
        )
        if refund.status is RefundStatus.PENDING and refund.gateway_reference is None:
            raise AutoRefundIncomplete(f"refund {refund.id} of payment {payment.id} is pending")

    # -- reads -----------------------------------------------------------------------------

    async def get_payment(self, tenant: str, payment_id: str) -> Payment:
        async with self._uow() as uow:
            payment = await uow.payments(tenant).get(payment_id)
        if payment is None:
            raise PaymentNotFound(f"payment {payment_id} not found")
        return payment

    async def list_payments(
        self,
        tenant: str,
        *,
        invoice_id: str | None,
        status: PaymentStatus | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Payment], int]:
        async with self._uow() as uow:
            return await uow.payments(tenant).page(
                invoice_id=invoice_id, status=status, limit=limit, offset=offset
            )

    async def payable_invoice(self, tenant: str, invoice_id: str) -> InvoiceView:
        async with self._uow() as uow:
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

    async def payment_by_reference(self, tenant: str, gateway: str, reference: str) -> Payment:
        async with self._uow() as uow:
            payment = await uow.payments(tenant).by_reference(gateway, reference)
        if payment is None:
            raise PaymentNotFound(f"no {gateway} payment with reference {reference}")
        return payment


def _parse(event: CloudEvent, schema: type[SchemaT]) -> tuple[str, SchemaT]:
    """The event's tenant and validated data; an event that can never apply is permanent."""
    if not event.tenant:
        raise PermanentEventError(f"{event.type} {event.id} has no tenant")
    try:
        return event.tenant, event.data_as(schema)
    except ValidationError as exc:
        raise PermanentEventError(f"{event.type} {event.id} does not match its schema") from exc
