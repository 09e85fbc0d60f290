"""Use cases: create, finalize, void, mark uncollectible, and the payment and peer events.

Peers are called outside any transaction (no database connection is held while waiting on
the network); the invoice, its history and its outbox events are written in one transaction
at the end, so a failure anywhere before leaves nothing behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

from loguru import logger
from pydantic import BaseModel, ValidationError

from billing_common.event_schemas import (
    DISCOUNT_APPLIED,
    PAYMENT_RECEIVED,
    TAX_CALCULATED,
    DiscountApplied,
    PaymentFailed,
    PaymentReceived,
    PaymentRefunded,
    TaxCalculated,
)
from billing_common.events import CloudEvent
from billing_common.outbox import is_unique_violation
from billing_common.ports import PermanentEventError
from invoice_service.domain.errors import (
    CouponNotApplicable,
    CreationAbandoned,
    IdempotencyConflict,
    InvoiceError,
    InvoiceNotFound,
)
from invoice_service.domain.model import Customer, Invoice, InvoiceStatus, PriceMode
from invoice_service.domain.numbering import DEFAULT_SERIES, format_number
from invoice_service.domain.pricing import (
    DiscountResult,
    LineDraft,
    TaxResult,
    allocate_discount,
    build_lines,
    check_discount,
    line_id,
)
from invoice_service.service_layer import events
from invoice_service.service_layer.ports import (
    AbandonedCreations,
    DiscountPort,
    PendingCreation,
    ReceivedEvent,
    TaxLineRequest,
    TaxPort,
)
from invoice_service.service_layer.unit_of_work import InvoiceUnitOfWork, UnitOfWorkFactory

CONSUMER = "invoice"
# Invoice ids derive from (tenant, Idempotency-Key): a retried request sends the peers the
# very same reference, so the discount service recognises its redemption as a replay.
INVOICE_ID_NAMESPACE = uuid.UUID("6f1c3f56-8a7e-4c51-9a53-1c1e2b0e7a10")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Dependencies:
    uow: UnitOfWorkFactory
    tax: TaxPort
    discounts: DiscountPort
    clock: Callable[[], datetime] = field(default=utcnow)


# ---- create -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CreateInvoice:
    tenant: str
    actor: str
    idempotency_key: str
    # Fingerprint of the normalised request body: same key + other body -> conflict.
    request_hash: str
    customer: Customer
    currency: str
    lines: tuple[LineDraft, ...]
    coupon_codes: tuple[str, ...] = ()
    price_mode: PriceMode = PriceMode.EXCLUSIVE
    series: str = DEFAULT_SERIES
    due_days: int = 30
    memo: str | None = None


@dataclass(frozen=True, slots=True)
class CreateResult:
    invoice: Invoice
    created: bool  # False: an earlier request with this Idempotency-Key made it


def invoice_id_for(tenant: str, idempotency_key: str) -> str:
    return str(uuid.uuid5(INVOICE_ID_NAMESPACE, f"{tenant}\n{idempotency_key}"))


def redemption_key(tenant: str, idempotency_key: str) -> str:
    return f"invoice:{tenant}:{idempotency_key}"


async def create_invoice(cmd: CreateInvoice, deps: Dependencies) -> CreateResult:
    async with deps.uow(cmd.tenant) as uow:
        stored = await uow.invoices.find_by_idempotency_key(cmd.idempotency_key)
    if stored is not None:
        return _replay(stored.invoice, stored.request_hash, cmd)

    now = deps.clock()
    invoice_id = invoice_id_for(cmd.tenant, cmd.idempotency_key)
    drafts = list(cmd.lines)
    subtotals = [draft.subtotal(cmd.currency) for draft in drafts]
    amount = sum(subtotals, Decimal(0))

    # 1. Discount first (on the subtotal; a quote has no side effect).
    discount = await _quote(deps, cmd, invoice_id, amount)

    # From here on the peers keep records for this invoice (the tax calculation, the
    # redemption that spends coupon uses), so the creation is first recorded as pending: if
    # the invoice is not stored in the end, they are given back — at once when this request
    # fails, by the sweeper (release_abandoned) when the process died.
    pending = await _begin_pending(deps, cmd, invoice_id, now)
    try:
        # 2. Tax on the discounted lines.
        shares, tax = await _tax_after_discount(cmd, deps, invoice_id, now, subtotals, discount)
        # 3. Redeem once tax succeeded. If the redemption differs from the quote (a coupon
        # changed in between), it is what the customer really gets: tax is computed again.
        if discount.total_discount > 0:
            redeemed = await deps.discounts.redeem(
                tenant=cmd.tenant,
                idempotency_key=pending.redemption_key,
                customer=cmd.customer,
                currency=cmd.currency,
                amount=amount,
                coupon_codes=cmd.coupon_codes,
                reference=invoice_id,
            )
            check_discount(redeemed, amount, cmd.currency)
            if redeemed.total_discount != discount.total_discount:
                shares, tax = await _tax_after_discount(
                    cmd, deps, invoice_id, now, subtotals, redeemed
                )
            discount = redeemed

        lines = build_lines(drafts, shares, tax, currency=cmd.currency, price_mode=cmd.price_mode)
        invoice = Invoice.create(
            id=invoice_id,
            tenant_id=cmd.tenant,
            customer=cmd.customer,
            currency=cmd.currency,
            price_mode=cmd.price_mode,
            series=cmd.series,
            lines=lines,
            discounts=list(discount.applied),
            due_days=cmd.due_days,
            at=now,
            actor=cmd.actor,
            tax_calculation_id=tax.calculation_id,
            discount_redemption_id=discount.redemption_id,
            memo=cmd.memo,
        )
        return await _store(cmd, deps, invoice, pending)
    except Exception:
        await _give_back_safely(deps, pending)
        raise


async def _store(
    cmd: CreateInvoice, deps: Dependencies, invoice: Invoice, pending: PendingCreation
) -> CreateResult:
    """4. Invoice, history, the created event and the end of the pending record in one
    transaction: either the invoice exists and keeps its redemption, or neither does."""
    try:
        async with deps.uow(cmd.tenant) as uow:
            await uow.invoices.add(
                invoice, idempotency_key=cmd.idempotency_key, request_hash=cmd.request_hash
            )
            if not await uow.pending.remove(pending.invoice_id, unless_releasing=True):
                # The sweeper judged this attempt abandoned and is giving the discount back.
                raise CreationAbandoned(cmd.idempotency_key)
            uow.emit(events.created(invoice), aggregate=events.aggregate(invoice))
            await uow.commit()
    except Exception as exc:
        # A concurrent request with the same key won the insert: answer as its replay.
        if not is_unique_violation(exc):
            raise
        async with deps.uow(cmd.tenant) as uow:
            stored = await uow.invoices.find_by_idempotency_key(cmd.idempotency_key)
        if stored is None:
            raise
        return _replay(stored.invoice, stored.request_hash, cmd)
    return CreateResult(invoice, created=True)


async def _begin_pending(
    deps: Dependencies, cmd: CreateInvoice, invoice_id: str, now: datetime
) -> PendingCreation:
    pending = PendingCreation(
        tenant_id=cmd.tenant,
        invoice_id=invoice_id,
        redemption_key=redemption_key(cmd.tenant, cmd.idempotency_key),
        started_at=now,
    )
    async with deps.uow(cmd.tenant) as uow:
        earlier = await uow.pending.get(invoice_id)
    if earlier is not None and earlier.releasing:
        # An earlier attempt is being given back (its release failed, or the sweeper is at
        # it): finish that first, so this attempt starts from nothing (503 if a peer is down).
        await give_back(deps, earlier)
    async with deps.uow(cmd.tenant) as uow:
        earlier = await uow.pending.get(invoice_id, for_update=True)
        if earlier is not None and earlier.releasing:
            raise CreationAbandoned(cmd.idempotency_key)
        await uow.pending.put(pending)  # a retry after a crash takes the record over
        await uow.commit()
    return pending


async def give_back(deps: Dependencies, pending: PendingCreation) -> bool:
    """Release the redemption and discard the tax calculations of a creation that did not
    store its invoice; True if it did. Safe to repeat and to run from several places at
    once: the record is marked `releasing` first (a late final write then refuses to store
    the invoice), both peer calls are idempotent, and an invoice that does exist keeps its
    redemption and calculations."""
    async with deps.uow(pending.tenant_id) as uow:
        current = await uow.pending.get(pending.invoice_id, for_update=True)
        if current is None:
            return False  # the invoice was stored, or the release is done
        if await uow.invoices.stamp(pending.invoice_id) is not None:
            await uow.pending.remove(pending.invoice_id)
            await uow.commit()
            return False
        if not current.releasing:
            await uow.pending.put(replace(current, releasing=True))
            await uow.commit()
    await deps.discounts.release(tenant=pending.tenant_id, idempotency_key=current.redemption_key)
    await deps.tax.discard(tenant=pending.tenant_id, reference=pending.invoice_id)
    async with deps.uow(pending.tenant_id) as uow:
        await uow.pending.remove(pending.invoice_id)
        await uow.commit()
    return True


async def _give_back_safely(deps: Dependencies, pending: PendingCreation) -> None:
    try:
        await give_back(deps, pending)
    except Exception as exc:  # noqa: BLE001 - the sweeper retries; the request's error wins
        logger.warning("could not release the redemption of {} yet: {}", pending.invoice_id, exc)


async def release_abandoned(
    deps: Dependencies, abandoned: AbandonedCreations, *, older_than: timedelta, limit: int = 100
) -> int:
    """Give back the redemptions (and discard the tax calculations) of creations started
    more than `older_than` ago that never stored their invoice (the process died, or the
    release failed before); returns how many were given back. `older_than` must exceed the
    longest a creation request can take."""
    released = 0
    for pending in await abandoned.older_than(deps.clock() - older_than, limit):
        try:
            released += await give_back(deps, pending)
        except Exception as exc:  # noqa: BLE001 - the next sweep tries again
            logger.warning("releasing the redemption of {} failed: {}", pending.invoice_id, exc)
    return released


def _replay(invoice: Invoice, request_hash: str, cmd: CreateInvoice) -> CreateResult:
    if request_hash != cmd.request_hash:
        raise IdempotencyConflict(cmd.idempotency_key)
    return CreateResult(invoice, created=False)


async def _quote(
    deps: Dependencies, cmd: CreateInvoice, invoice_id: str, amount: Decimal
) -> DiscountResult:
    if amount == 0:
        # Nothing to discount; a coupon asked for here could never apply.
        if cmd.coupon_codes:
            raise CouponNotApplicable(cmd.coupon_codes[0], "the invoice amount is zero")
        return DiscountResult(total_discount=Decimal(0), applied=())
    quote = await deps.discounts.quote(
        tenant=cmd.tenant,
        customer=cmd.customer,
        currency=cmd.currency,
        amount=amount,
        coupon_codes=cmd.coupon_codes,
        reference=invoice_id,
    )
    # The client asked for these coupons: creating the invoice without them would bill
    # more than expected, and redeeming would fail anyway. Refuse with the peer's reason.
    if quote.rejected:
        code, reason = quote.rejected[0]
        raise CouponNotApplicable(code, reason)
    check_discount(quote, amount, cmd.currency)
    return quote


async def _tax_after_discount(
    cmd: CreateInvoice,
    deps: Dependencies,
    invoice_id: str,
    now: datetime,
    subtotals: list[Decimal],
    discount: DiscountResult,
) -> tuple[list[Decimal], TaxResult]:
    """Spread the discount over the lines and have tax computed on what remains of each.
    Each line goes to the tax service as quantity 1 at its discounted amount: the tax base
    is exact to the cent, while the invoice line keeps its own quantity and unit price."""
    shares = allocate_discount(subtotals, discount.total_discount, cmd.currency)
    requests = [
        TaxLineRequest(
            id=line_id(position),
            description=draft.description,
            unit_price=subtotal - share,
            quantity=Decimal(1),
            category=draft.category,
        )
        for position, (draft, subtotal, share) in enumerate(
            zip(cmd.lines, subtotals, shares, strict=True), 1
        )
    ]
    tax = await deps.tax.calculate(
        tenant=cmd.tenant,
        currency=cmd.currency,
        customer=cmd.customer,
        price_mode=cmd.price_mode,
        on=now.date(),
        reference=invoice_id,
        lines=requests,
    )
    return shares, tax


# ---- status changes ---------------------------------------------------------------------


async def _locked(uow: InvoiceUnitOfWork, invoice_id: str) -> Invoice:
    invoice = await uow.invoices.get(invoice_id, for_update=True)
    if invoice is None:
        raise InvoiceNotFound(invoice_id)
    return invoice


async def finalize_invoice(tenant: str, invoice_id: str, actor: str, deps: Dependencies) -> Invoice:
    async with deps.uow(tenant) as uow:
        invoice = await _locked(uow, invoice_id)
        # Refuse before drawing a number; the number and the status change commit together.
        invoice.check_can_finalize()
        sequence = await uow.numbers.next_sequence(invoice.series)
        invoice.finalize(
            number=format_number(invoice.series, sequence),
            sequence=sequence,
            at=deps.clock(),
            actor=actor,
        )
        await uow.invoices.save(invoice)
        uow.emit(events.finalized(invoice), aggregate=events.aggregate(invoice))
        if invoice.status is InvoiceStatus.PAID:
            uow.emit(events.paid(invoice), aggregate=events.aggregate(invoice))
        _status_changed(uow, invoice, InvoiceStatus.DRAFT, "finalized")
        await uow.commit()
    return invoice


async def void_invoice(
    tenant: str, invoice_id: str, reason: str | None, actor: str, deps: Dependencies
) -> Invoice:
    async with deps.uow(tenant) as uow:
        invoice = await _locked(uow, invoice_id)
        previous = invoice.status
        invoice.void(at=deps.clock(), reason=reason, actor=actor)
        await uow.invoices.save(invoice)
        uow.emit(events.voided(invoice, reason), aggregate=events.aggregate(invoice))
        _status_changed(uow, invoice, previous, reason)
        await uow.commit()
    return invoice


async def mark_uncollectible(
    tenant: str, invoice_id: str, reason: str | None, actor: str, deps: Dependencies
) -> Invoice:
    async with deps.uow(tenant) as uow:
        invoice = await _locked(uow, invoice_id)
        previous = invoice.status
        invoice.mark_uncollectible(at=deps.clock(), reason=reason, actor=actor)
        await uow.invoices.save(invoice)
        _status_changed(uow, invoice, previous, reason)
        await uow.commit()
    return invoice


# ---- consumed events --------------------------------------------------------------------

SchemaT = TypeVar("SchemaT", bound=BaseModel)


def _tenant_of(event: CloudEvent) -> str:
    if not event.tenant:
        raise PermanentEventError(f"event {event.id} has no tenant")
    return event.tenant


def _data(event: CloudEvent, schema: type[SchemaT]) -> SchemaT:
    try:
        return event.data_as(schema)
    except ValidationError as exc:
        raise PermanentEventError(f"event {event.id} does not match {schema.__name__}") from exc


def _event_time(event: CloudEvent) -> datetime:
    return event.time if event.time.tzinfo else event.time.replace(tzinfo=UTC)


async def _apply(
    event: CloudEvent,
    invoice_id: str,
    deps: Dependencies,
    change: Callable[[Invoice], bool],
) -> None:
    """Apply `change` to the invoice once per event id (inbox claim in the same transaction);
    publish invoice.paid if `change` returns True. Events that can never apply are
    dead-lettered (PermanentEventError), never retried forever."""
    async with deps.uow(_tenant_of(event)) as uow:
        if not await uow.claim_event(CONSUMER, event):
            return
        invoice = await uow.invoices.get(invoice_id, for_update=True)
        if invoice is None:
            raise PermanentEventError(f"{event.type} {event.id}: no invoice {invoice_id!r}")
        previous = invoice.status
        try:
            became_paid = change(invoice)
        except InvoiceError as exc:
            raise PermanentEventError(f"{event.type} {event.id}: {exc}") from exc
        await uow.invoices.save(invoice)
        if became_paid:
            uow.emit(events.paid(invoice), aggregate=events.aggregate(invoice))
        _status_changed(uow, invoice, previous, event.type)
        if event.type == PAYMENT_RECEIVED:
            rejected = invoice.rejected_payment(_payment_id(event), event.id)
            if rejected is not None:
                uow.emit(
                    events.payment_rejected(invoice, rejected),
                    aggregate=events.aggregate(invoice),
                )
        await uow.commit()


def _payment_id(event: CloudEvent) -> str:
    return _data(event, PaymentReceived).payment_id


def _status_changed(
    uow: InvoiceUnitOfWork, invoice: Invoice, previous: InvoiceStatus, reason: str | None
) -> None:
    """Tell consumers about a status change (none if the status stayed the same)."""
    if invoice.status is not previous:
        uow.emit(
            events.status_changed(invoice, previous, reason), aggregate=events.aggregate(invoice)
        )


async def on_payment_received(event: CloudEvent, deps: Dependencies) -> None:
    data = _data(event, PaymentReceived)

    def change(invoice: Invoice) -> bool:
        return invoice.apply_payment(
            payment_id=data.payment_id,
            amount=data.amount,
            currency=data.currency,
            at=_event_time(event),
            event_id=event.id,
        )

    await _apply(event, data.invoice_id, deps, change)


async def on_payment_failed(event: CloudEvent, deps: Dependencies) -> None:
    data = _data(event, PaymentFailed)

    def change(invoice: Invoice) -> bool:
        invoice.record_payment_failure(
            payment_id=data.payment_id,
            amount=data.amount,
            currency=data.currency,
            failure_code=data.failure_code,
            failure_message=data.failure_message,
            at=_event_time(event),
            event_id=event.id,
        )
        return False

    await _apply(event, data.invoice_id, deps, change)


async def on_payment_refunded(event: CloudEvent, deps: Dependencies) -> None:
    data = _data(event, PaymentRefunded)

    def change(invoice: Invoice) -> bool:
        invoice.apply_refund(
            payment_id=data.payment_id,
            refund_id=data.refund_id,
            amount=data.amount,
            currency=data.currency,
            at=_event_time(event),
            event_id=event.id,
        )
        return False

    await _apply(event, data.invoice_id, deps, change)


async def on_peer_event(event: CloudEvent, deps: Dependencies) -> None:
    """Keep tax.calculated / discount.applied events in the received-events history, by
    their reference (the invoice id when the calculation was made for an invoice)."""
    reference = _peer_data(event).reference
    async with deps.uow(_tenant_of(event)) as uow:
        if not await uow.claim_event(CONSUMER, event):
            return
        await uow.received.add(
            ReceivedEvent(
                event_id=event.id,
                event_type=event.type,
                source=event.source,
                reference=reference,
                subject=event.subject,
                occurred_at=_event_time(event),
                received_at=deps.clock(),
                data=event.data,
            )
        )
        await uow.commit()


def _peer_data(event: CloudEvent) -> TaxCalculated | DiscountApplied:
    if event.type == TAX_CALCULATED:
        return _data(event, TaxCalculated)
    if event.type == DISCOUNT_APPLIED:
        return _data(event, DiscountApplied)
    raise PermanentEventError(f"the invoice service does not keep {event.type} events")
